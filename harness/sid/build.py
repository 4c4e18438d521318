"""`harness build-sids`: build an index straight from an upstream-format item.json, outside the pipeline."""

from __future__ import annotations

import time
from pathlib import Path

from harness.data.schema import Dataset
from harness.data.upstream_format import UPSTREAM_SUFFIX, read_item_json, write_index_json, write_info_txt
from harness.io import write_json
from harness.sid.tokens import codes_to_tokens


def build_sids(item_json: str | Path, method: str, out_dir: str | Path, levels: int = 3, codebook: int = 256,
               seed: int = 0, iters: int = 100, model: str = "minilm") -> dict:
    """Write OUT/index.json, OUT/<category>_5_2016-10-2018-11.txt and OUT/sid_stats.json."""
    from harness.audit.sid import audit_sid
    from harness.sid import codebook_sizes, codes_from_embeddings
    from harness.sid.embed import embed_items

    item_json = Path(item_json)
    items = read_item_json(item_json)
    category = item_json.name.removesuffix(".json").removesuffix(".item")
    t0 = time.perf_counter()
    emb = embed_items(items, model, 64)
    t1 = time.perf_counter()
    codes = codes_from_embeddings(emb, method, levels, codebook, iters, seed)
    t2 = time.perf_counter()
    index = {it.id: codes_to_tokens(codes[it.id]) for it in items}
    stats, _ = audit_sid(Dataset(category, items, []), index, codebook_sizes(codes, levels, codebook))
    stats.update({"method": method, "levels": levels, "codebook_size": codebook, "seed": seed, "iters": iters,
                  "embedding_model": model, "embed_seconds": round(t1 - t0, 2), "build_seconds": round(t2 - t1, 2),
                  "unique_share": stats["unique_sids"] / len(items)})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_index_json(out / "index.json", index)
    write_info_txt(out / f"{category}{UPSTREAM_SUFFIX}.txt", items, index)
    write_json(out / "sid_stats.json", stats)
    return stats
