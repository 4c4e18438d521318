"""SID stage: items -> semantic IDs (index.json in upstream's format) plus an upstream-layout export."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from harness.data.schema import Dataset, read_dataset
from harness.data.upstream_format import write_index_json, write_upstream_dir
from harness.errors import ParamsError
from harness.io import atomic_dir, write_json
from harness.params import SidParams
from harness.sid.tokens import codes_to_tokens, sid_string


def sid_summary(index: dict[int, list[str]], n_items: int) -> dict:
    """Collision and coverage figures that decide what the recommender can express."""
    by_sid = Counter(sid_string(t) for t in index.values())
    depth = max(len(t) for t in index.values())
    used = [len({t[level] for t in index.values() if len(t) > level}) for level in range(depth)]
    return {
        "items": n_items,
        "items_with_sid": len(index),
        "distinct_sids": len(by_sid),
        "colliding_items": sum(c for c in by_sid.values() if c > 1),
        "largest_collision_group": max(by_sid.values()),
        "depth": depth,
        "codes_used_per_level": used,
    }


def codes_from_embeddings(emb: np.ndarray, method: str, levels: int, k: int, iters: int, seed: int) -> list[list[int]]:
    """Per-item code lists (0-based) from one builder; the dedup level makes some lists one longer."""
    if k > len(emb):
        raise ParamsError("params.yaml", "sid.codebook_size", f"{k} codes per level exceed the {len(emb)} items")
    if method == "rqkmeans":
        from harness.sid.rqkmeans import residual_kmeans

        return residual_kmeans(emb, levels, k, iters, seed)[0].tolist()
    if method == "rqkmeans-constrained":
        from harness.sid.constrained import constrained_residual_kmeans, dedup_level

        return dedup_level(constrained_residual_kmeans(emb, levels, k, iters, seed))
    raise ParamsError("params.yaml", "sid.method", f"unknown method {method!r}")


def codebook_sizes(codes: list[list[int]], levels: int, k: int) -> list[int]:
    """Codes per level: K for the built levels, the largest collision group for a dedup level."""
    sizes = [k] * levels
    if any(len(c) > levels for c in codes):
        sizes.append(1 + max(c[levels] for c in codes if len(c) > levels))
    return sizes


def build_index(ds: Dataset, p: SidParams) -> tuple[dict[int, list[str]], np.ndarray | None, list[int] | None]:
    if p.method == "shipped":
        if ds.sid_index is None:
            raise ParamsError("params.yaml", "sid.method", "'shipped' needs a data source that ships an index.json "
                              "(data.source: upstream)")
        return dict(ds.sid_index), None, None
    from harness.sid.embed import embed_items

    emb = embed_items(ds.items, p.embedding.model, p.embedding.batch_size)
    codes = codes_from_embeddings(emb, p.method, p.levels, p.codebook_size, p.kmeans_iters, p.seed)
    index = {it.id: codes_to_tokens(codes[it.id]) for it in ds.items}
    return index, emb, codebook_sizes(codes, p.levels, p.codebook_size)


def run_sid(p: SidParams, dataset_dir: str | Path = "data/dataset", out_dir: str | Path = "data/sid") -> dict:
    """Entry point of the ``sid`` stage."""
    ds = read_dataset(Path(dataset_dir))
    index, emb, sizes = build_index(ds, p)
    summary = {"method": p.method, **sid_summary(index, len(ds.items))}
    if p.method != "shipped":
        summary.update({"levels": p.levels, "codebook_size": p.codebook_size, "codebook_size_per_level": sizes,
                        "embedding_model": p.embedding.model})
    with atomic_dir(out_dir) as tmp:
        write_index_json(tmp / "index.json", index)
        if emb is not None:
            np.save(tmp / "embeddings.npy", emb)
        write_upstream_dir(ds, tmp / "upstream", ds.name, index)
        write_json(tmp / "summary.json", summary)
    return summary
