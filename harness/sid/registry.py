"""The SID builders, in one table: name -> build function, its params sub-section, its upstream scripts.

Params validation (``sid.method``, ``sid.compare``), the sid stage, ``harness build-sids`` and its CLI help,
the upstream adapter, the benchmarks and the docs all read this table, so a new method is one module plus one
line here (docs/extending.md walks through it).

A build function takes ``(embeddings [n_items, dim], SidParams, checkpoint_dir | None, show_progress)`` and
returns one list of 0-based codes per item (item i = row i): ``sid.levels`` codes, plus a dedup code for items
whose first levels collide when the method adds one. It is imported only when used, so this table stays light
(torch and faiss load with the builder).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module

SHIPPED = "shipped"  # not a builder: the data source's own index.json (sid.method only)


@dataclass(frozen=True)
class SidMethod:
    name: str  # the value of sid.method / sid.compare
    build: str  # "module:function" of the build function
    doc: str  # one line for the CLI help and the docs
    params: str | None = None  # its own sub-section of the sid params (training knobs), or None
    upstream: tuple[str, ...] = ()  # the pinned rq/ scripts that build it (sid.backend: upstream); () = none

    def builder(self) -> Callable:
        module, func = self.build.split(":")
        return getattr(import_module(module), func)


SID_METHODS: dict[str, SidMethod] = {m.name: m for m in (
    SidMethod("rqkmeans", "harness.sid.rqkmeans:build",
              "residual k-means with faiss, one codebook per level (upstream's rqkmeans_faiss.py)",
              upstream=("rq/rqkmeans_faiss.py",)),
    SidMethod("rqkmeans-constrained", "harness.sid.constrained:build",
              "balanced residual k-means (equal-size clusters) plus a dedup level",
              upstream=("rq/rqkmeans_constrained.py",)),
    SidMethod("rqvae", "harness.sid.rqvae:build_rqvae",
              "a residual-quantised autoencoder (RQ-VAE) with Sinkhorn re-encoding of collisions", params="rqvae"),
    SidMethod("rqkmeans-plus", "harness.sid.rqvae:build_plus",
              "balanced residual k-means codebooks refined by an autoencoder, plus a dedup level",
              params="rqkmeans_plus",
              upstream=("rq/rqkmeans_constrained.py", "rq/rqkmeans_plus.py", "rq/generate_indices_plus.py")),
    SidMethod("rq-opq", "harness.sid.rq_opq:build", "residual k-means, then OPQ (faiss) codes of the residual"),
)}


def names() -> tuple[str, ...]:
    return tuple(SID_METHODS)


def check_name(name: str, shipped: bool = False) -> str:
    """A registered method (or ``shipped`` where allowed); otherwise a ValueError listing the choices."""
    if name in SID_METHODS or (shipped and name == SHIPPED):
        return name
    choices = " | ".join(names() + ((SHIPPED,) if shipped else ()))
    raise ValueError(f"unknown SID method {name!r} (registered in harness/sid/registry.py: {choices})")
