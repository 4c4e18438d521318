"""`harness build-sids`: build an index straight from an upstream-format item.json, outside the pipeline.

Same embeddings (and cache) and same builders as the ``embed`` and ``sid`` stages; defaults come from the
params models, so a direct build and a pipeline build with the same settings give the same index.json.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from harness.data.schema import Dataset
from harness.data.upstream_format import UPSTREAM_SUFFIX, read_item_json, write_info_txt
from harness.errors import HarnessError
from harness.io import merge_into, write_json
from harness.params import EmbedParams, SidParams
from harness.sid.index import write_index_json
from harness.sid.registry import SHIPPED, SID_METHODS
from harness.sid.tokens import codes_to_tokens


def build_sids(item_json: str | Path, out_dir: str | Path, sid: SidParams, embed: EmbedParams) -> dict:
    """Write OUT/index.json, OUT/<category>_5_2016-10-2018-11.txt, OUT/sid_stats.json (+ checkpoints)."""
    from harness.audit.sid import audit_sid
    from harness.embed.stage import embed_items
    from harness.sid.quality import sid_quality
    from harness.sid.stage import build_codes, codebook_sizes

    if sid.method == SHIPPED:
        raise HarnessError("build-sids builds an index; 'shipped' is only a pipeline choice")
    item_json = Path(item_json)
    items = read_item_json(item_json)
    category = item_json.name.removesuffix(".json").removesuffix(".item")
    t0 = time.perf_counter()
    emb, embed_meta = embed_items(items, embed)
    t1 = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out_dir.name}.", dir=out_dir.parent) as tmp_name:
        tmp = Path(tmp_name)
        codes = build_codes(emb, sid.method, sid, tmp / "checkpoints")
        t2 = time.perf_counter()
        index = {it.id: codes_to_tokens(codes[it.id]) for it in items}
        stats, _ = audit_sid(Dataset(category, items, []), index, codebook_sizes(codes, sid.levels, sid.codebook_size))
        quality = sid_quality(index, items)
        stats.update({"unique_share": quality["unique_share"], "nmi_level0_category": quality["nmi_level0_category"],
                      "method": sid.method, "levels": sid.levels, "codebook_size": sid.codebook_size,
                      "seed": sid.seed, "kmeans_iters": sid.kmeans_iters, "embedding": embed_meta,
                      "embed_seconds": round(t1 - t0, 2), "build_seconds": round(t2 - t1, 2)})
        own = SID_METHODS[sid.method].params  # the method's own training knobs, if it has any
        if own:
            stats["training"] = getattr(sid, own).model_dump()
        write_index_json(tmp / "index.json", index)
        write_info_txt(tmp / f"{category}{UPSTREAM_SUFFIX}.txt", items, index)
        write_json(tmp / "sid_stats.json", stats)
        merge_into(tmp, out_dir)  # OUT may hold other files: only ours are replaced, and only once all exist
    return stats
