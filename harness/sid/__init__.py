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


def build_index(ds: Dataset, p: SidParams) -> tuple[dict[int, list[str]], np.ndarray | None]:
    if p.method == "shipped":
        if ds.sid_index is None:
            raise ParamsError("params.yaml", "sid.method", "'shipped' needs a data source that ships an index.json "
                              "(data.source: upstream)")
        return dict(ds.sid_index), None
    if p.codebook_size > len(ds.items):
        raise ParamsError("params.yaml", "sid.codebook_size",
                          f"{p.codebook_size} codes per level exceed the {len(ds.items)} items")
    from harness.sid.embed import embed_items
    from harness.sid.rqkmeans import residual_kmeans

    emb = embed_items(ds.items, p.embedding.model, p.embedding.batch_size)
    codes, _ = residual_kmeans(emb, p.levels, p.codebook_size, p.kmeans_iters, p.seed)
    return {it.id: codes_to_tokens(codes[it.id]) for it in ds.items}, emb


def run_sid(p: SidParams, dataset_dir: str | Path = "data/dataset", out_dir: str | Path = "data/sid") -> dict:
    """Entry point of the ``sid`` stage."""
    ds = read_dataset(Path(dataset_dir))
    index, emb = build_index(ds, p)
    summary = {"method": p.method, **sid_summary(index, len(ds.items))}
    if p.method != "shipped":
        summary.update({"levels": p.levels, "codebook_size": p.codebook_size, "embedding_model": p.embedding.model})
    with atomic_dir(out_dir) as tmp:
        write_index_json(tmp / "index.json", index)
        if emb is not None:
            np.save(tmp / "embeddings.npy", emb)
        write_upstream_dir(ds, tmp / "upstream", ds.name, index)
        write_json(tmp / "summary.json", summary)
    return summary
