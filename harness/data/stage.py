"""Data stage: build the canonical dataset from the synthetic generator or an upstream-format dir."""

from __future__ import annotations

from pathlib import Path

from harness.data.schema import Dataset, Interaction, write_dataset
from harness.errors import HarnessError
from harness.io import atomic_dir
from harness.params import DataParams
from harness.provenance import absent_upstream_file


def build_dataset(p: DataParams) -> Dataset:
    if p.source == "synthetic":
        from harness.data.synthetic import generate

        return generate(p.synthetic, p.max_history, p.split)
    from harness.data.upstream_format import read_upstream_dir

    ds, findings = read_upstream_dir(p.upstream.dir, p.upstream.category, set(p.upstream.lenient))
    too_long = [r for r in ds.interactions if len(r.history) > p.max_history]
    if too_long:
        raise HarnessError(f"data.max_history={p.max_history} but the upstream data has histories of "
                           f"{max(len(r.history) for r in too_long)} items")
    ds.meta.update({"lenient_findings": findings, "valid_as_train": p.upstream.valid_as_train,
                    "upstream_dir": str(p.upstream.dir)})
    if p.upstream.valid_as_train:
        if ds.split("train"):
            raise HarnessError("data.upstream.valid_as_train is set but the data dir has a train CSV")
        ds.interactions = [Interaction(r.user, r.history, r.target, "train" if r.split == "valid" else r.split,
                                       r.timestamp) for r in ds.interactions]
    if not ds.split("train"):
        absent = absent_upstream_file(Path(p.upstream.dir) / "train", p.upstream.category)
        raise HarnessError(f"{p.upstream.dir}: no train CSV for {p.upstream.category!r}"
                           + (f" ({absent})" if absent else "")
                           + "; set data.upstream.valid_as_train: true to train on the valid split")
    if not ds.split("test"):
        raise HarnessError(f"{p.upstream.dir}: no test CSV for {p.upstream.category!r}")
    return ds


def run_data(p: DataParams, out_dir: str | Path) -> Dataset:
    """Entry point of the ``data`` stage."""
    ds = build_dataset(p)
    with atomic_dir(out_dir) as tmp:
        write_dataset(ds, tmp)
    return ds
