"""What beam search loses, measured on the first test rows (``evaluate.exact_rows``): every catalogue SID scored
exactly (harness/decode/exact.py), set against the constrained beams of the same rows.

Per model it gives the target's exact catalogue rank (HR@K for any K up to the catalogue, MRR), exact HR/NDCG@K
beside beam HR/NDCG@K, beam recall@K (the share of the exact Top-K the beams return) and search errors (rows
whose best beam scores below the exact best: the search, not the model, lost the top item).
"""

from __future__ import annotations

import math
import time

import torch

from harness.console import console, progress
from harness.evaluate.protocol import TestProtocol
from harness.evaluate.score import clean_beam, score_records
from harness.metrics import TOPK, key
from harness.params import EvaluateParams

# Ranks past the beams' cut-offs that the exact ranking can also report (each one up to the catalogue's size).
EXACT_KS = (100, 200, 500, 1000)
# How far below the exact best a best beam must score to count as a search error: float32 sums of the same
# log-probabilities differ in the last bits between a padded batch and a single prompt; bf16 far more.
TOLERANCE = {"float32": 1e-4, "bfloat16": 5e-2}


def exact_ks(t: TestProtocol) -> list[int]:
    return sorted({*t.ks, *(k for k in (*TOPK, *EXACT_KS) if k <= len(t.catalogue))})


def exact_ranking(p: EvaluateParams, t: TestProtocol, lm, tokenizer, prompts: list, records: list[dict],
                  suffix: list[int]) -> dict | None:
    """Rank the whole catalogue for the first rows (``records``: their constrained beams, in row order)."""
    from harness.decode.exact import PrefixLevels, exact_scores

    n = len(records)
    if n == 0:
        return None
    sids = list(t.catalogue)
    position = {s: j for j, s in enumerate(sids)}
    seqs = [[*tokenizer.convert_tokens_to_ids(t.index[items[0]]), *suffix] for items in t.catalogue.values()]
    if len({len(s) for s in seqs}) != 1:  # a dedup level on some SIDs only: not measured (exact.py needs one length)
        console.print("exact ranking: skipped, the catalogue's SIDs are not all of one length")
        return None
    levels = PrefixLevels.of(seqs)
    ks, beam_ks, tol = exact_ks(t), t.ks, TOLERANCE[p.dtype]
    ranks, errors, recall = [], [], {k: 0.0 for k in beam_ks}
    started = time.perf_counter()
    with progress(unit="rows") as bar:
        task = bar.add_task(f"exact ranking of {len(sids)} catalogue SIDs", total=n)
        for i in range(n):
            ids = prompts[i] if not isinstance(prompts[i], str) else \
                tokenizer(prompts[i], add_special_tokens=False).input_ids
            score = exact_scores(lm, ids, levels, tokenizer.eos_token_id, p.exact_batch)
            target = score[position[t.targets[i]]]
            ranks.append(1 + int((score > target).sum()))
            order = torch.argsort(score, descending=True, stable=True)
            beams = [clean_beam(b) for b in records[i]["predict"]]
            best = score[position[beams[0]]] if beams and beams[0] in position else -math.inf
            if best < float(score[order[0]]) - tol:
                errors.append(i)
            for k in beam_ks:
                top = {sids[j] for j in order[:k].tolist()}
                recall[k] += len(top & set(beams[:k])) / k
            bar.advance(task)
    seconds = time.perf_counter() - started
    console.print(f"exact ranking: {n} rows x {len(sids)} SIDs ({sum(levels.sizes())} prefix rows per prompt) "
                  f"in {seconds:.1f} s")
    exact = {}
    for k in ks:
        exact[key("hr", k)] = sum(r <= k for r in ranks) / n
    for k in ks:
        exact[key("ndcg", k)] = sum(1 / math.log2(r + 1) for r in ranks if r <= k) / n
    exact[key("mrr")] = sum(1 / r for r in ranks) / n
    return {
        "rows": n,
        "num_beams": t.num_beams,
        "catalogue_sids": len(sids),
        "prefix_rows_per_prompt": sum(levels.sizes()),
        "tolerance": tol,
        "exact": exact,
        "beam": score_records(records, t.info_sids, beam_ks),
        "beam_recall": {key("beam_recall", k): recall[k] / n for k in beam_ks},
        "search_errors": len(errors),
        "search_error_rows": errors[:20],
        "beyond_beams": sum(r > t.num_beams for r in ranks),
        "target_rank": ranks,
    }
