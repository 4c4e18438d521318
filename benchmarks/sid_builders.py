"""Build every SID method from the same embeddings of one upstream item file; compare quality and time.

    python benchmarks/sid_builders.py --data ../shared/upstream-data/Amazon --category Industrial_and_Scientific

Times are reported as measured and as ratios to ``rqkmeans`` from the same run, so two machines can be
compared by their ratios. The source's shipped index.json (when present) is set beside the built ones.
Defaults: 3 levels × 256 codes as upstream, the CPU epoch budget from ``SidParams``.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

from tabulate import tabulate

from harness.data.upstream_format import read_item_json
from harness.embed.stage import embed_items
from harness.params import EmbedParams, SidParams
from harness.sid.index import read_index_json
from harness.sid.quality import sid_quality
from harness.sid.registry import SID_METHODS
from harness.sid.stage import build_codes
from harness.sid.tokens import codes_to_tokens

METHODS = list(SID_METHODS)  # every registered builder (harness/sid/registry.py)
COLUMNS = ["unique_share", "collision_groups", "colliding_items", "largest_group", "codes_used_per_level",
           "perplexity_per_level", "sid_length_distribution"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="upstream-format data dir (holds index/)")
    ap.add_argument("--category", required=True)
    ap.add_argument("--codebook", type=int, default=256)
    ap.add_argument("--levels", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=None, help="rqvae / rqkmeans-plus epochs (default: CPU budget)")
    ap.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    args = ap.parse_args()

    items = read_item_json(args.data / "index" / f"{args.category}.item.json")
    t0 = time.perf_counter()
    emb, meta = embed_items(items, EmbedParams())
    embed_s = time.perf_counter() - t0
    train = {"epochs": args.epochs} if args.epochs else {}
    p = SidParams(levels=args.levels, codebook_size=args.codebook, kmeans_iters=100, rqvae=train,
                  rqkmeans_plus=train)
    rows, base = [], None
    for method in args.methods:
        t = time.perf_counter()
        codes = build_codes(emb, method, p)
        seconds = time.perf_counter() - t
        base = base or seconds
        q = sid_quality({it.id: codes_to_tokens(codes[it.id]) for it in items}, items)
        rows.append([method, f"{seconds:.1f}", f"{seconds / base:.1f}×"] + [q[c] for c in COLUMNS])
    shipped = args.data / "index" / f"{args.category}.index.json"
    if shipped.is_file():
        q = sid_quality(read_index_json(shipped, len(items)), items)
        rows.append(["shipped index.json", "", ""] + [q[c] for c in COLUMNS])
    print(f"{len(items)} items, {meta['dim']}-dim {meta.get('model', meta['source'])} embeddings "
          f"({embed_s:.1f} s, cache key {meta.get('cache_key', '-')}); {args.levels} levels × {args.codebook} codes; "
          f"rqvae/plus epochs {p.rqvae.epochs}/{p.rqkmeans_plus.epochs}; {platform.machine()} "
          f"{platform.processor() or ''}".rstrip())
    print(tabulate(rows, headers=["method", "build s", "vs rqkmeans"] + COLUMNS, tablefmt="github",
                   disable_numparse=True))


if __name__ == "__main__":
    main()
