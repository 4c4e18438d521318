"""Exact full-catalogue ranking against constrained beam search, on the same model, rows and catalogue, in one
run (the ratio, not the absolute times, is what carries across machines).

    python benchmarks/exact_ranking.py --rows 100 --out /tmp/exact.json     # the pipeline's own SFT model
    python benchmarks/exact_ranking.py --model models/rl --device cuda --dtype bfloat16 --rows 0 --out e.json

It reads the pipeline's artifacts (``--dataset``, ``--sid``, ``--model``: whatever profile made them), takes the
first ``--rows`` test rows of the evaluate stage's protocol (0: all), decodes them with the evaluate stage's
beam search (``evaluate.num_beams`` and ``batch_size`` from params.yaml) and ranks the whole catalogue exactly
(``evaluate.exact_batch`` prefixes per forward pass). It fails if a best beam scores above the exact best (the
exact ranking would then be wrong), and reports seconds per row of each, their ratio, and the search errors.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from harness.decode.constrained import catalogue_trie, constrained_beam_search
from harness.decode.exact import PrefixLevels, exact_scores
from harness.evaluate.exact import TOLERANCE
from harness.evaluate.protocol import TestProtocol
from harness.params import load_section
from harness.provenance import cpu_model, git_record
from harness.train.model import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="data/dataset")
    ap.add_argument("--sid", default="data/sid")
    ap.add_argument("--model", default="models/sft")
    ap.add_argument("--rows", type=int, default=100, help="first N test rows (0: all)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=sorted(TOLERANCE))
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    p = load_section("evaluate")
    t = TestProtocol(p, Path(a.dataset), Path(a.sid))
    n = len(t.rows) if a.rows == 0 else min(a.rows, len(t.rows))
    lm, tok = load_model(Path(a.model), torch.device(a.device), getattr(torch, a.dtype))
    trie = catalogue_trie(tok, t.index, a.model)
    sids = list(t.catalogue)
    levels = PrefixLevels.of([tok.convert_tokens_to_ids(t.index[items[0]]) for items in t.catalogue.values()])
    prompts = t.prompts[:n]

    start = time.perf_counter()
    beams = constrained_beam_search(lm, tok, prompts, trie, t.num_beams, p.batch_size)
    beam_s = time.perf_counter() - start

    start = time.perf_counter()
    scores = [exact_scores(lm, tok(q, add_special_tokens=False).input_ids, levels, tok.eos_token_id, p.exact_batch)
              for q in prompts]
    exact_s = time.perf_counter() - start

    position = {s: j for j, s in enumerate(sids)}
    errors, worst = 0, 0.0
    for r, s in zip(beams, scores):
        best_beam = "".join(tok.convert_ids_to_tokens(r.sequences[0]))
        gap = float(s.max()) - float(s[position[best_beam]])
        worst = min(worst, gap)
        errors += gap > TOLERANCE[a.dtype]
    if worst < -TOLERANCE[a.dtype]:
        raise SystemExit(f"a best beam scores {-worst:.2e} above the exact best: the exact ranking is wrong")
    git = git_record()
    rec = {"rows": n, "num_beams": t.num_beams, "batch_size": p.batch_size, "exact_batch": p.exact_batch,
           "catalogue_sids": len(sids), "prefix_rows_per_prompt": sum(levels.sizes()), "prefixes_per_level":
           levels.sizes(), "device": a.device, "dtype": a.dtype, "model": a.model,
           "beam_seconds_per_row": beam_s / n, "exact_seconds_per_row": exact_s / n,
           "exact_over_beam": exact_s / beam_s, "search_errors": errors,
           "machine": cpu_model() if a.device == "cpu" else torch.cuda.get_device_name(),
           "torch_threads": torch.get_num_threads(), "harness_commit": git.get("harness_commit")}
    a.out.write_text(json.dumps(rec, indent=2) + "\n", encoding="utf-8")
    print(f"{n} rows, {len(sids)} SIDs ({rec['prefix_rows_per_prompt']} prefix rows per prompt): beam search "
          f"{rec['beam_seconds_per_row'] * 1e3:.1f} ms/row, exact {rec['exact_seconds_per_row'] * 1e3:.1f} ms/row, "
          f"ratio {rec['exact_over_beam']:.1f}x; search errors {errors}/{n}")


if __name__ == "__main__":
    main()
