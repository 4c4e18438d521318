"""The same beams without the catalogue constraint on the first test rows (``evaluate.unconstrained_rows``)."""

from __future__ import annotations

from harness.console import progress
from harness.evaluate.protocol import TestProtocol
from harness.evaluate.score import score_records
from harness.params import EvaluateParams


def unconstrained(p: EvaluateParams, t: TestProtocol, lm, tokenizer, prompts: list, records: list[dict],
                   max_new_tokens: int, as_text) -> dict | None:
    """The same beams without the constraint on the first rows: what the constraint buys (legality, H2) and
    costs, set against the constrained scores of exactly those rows."""
    from harness.decode.constrained import constrained_beam_search

    n = len(records)  # the first evaluate.unconstrained_rows rows
    if n == 0:
        return None
    with progress() as bar:
        task = bar.add_task(f"unconstrained beam search ({t.num_beams} beams, {n} rows)", total=n)
        beams = constrained_beam_search(lm, tokenizer, prompts[:n], None, t.num_beams, p.batch_size,
                                        progress=lambda k: bar.advance(task, k), max_new_tokens=max_new_tokens)
    free = t.records([[as_text(b) for b in res.sequences] for res in beams])
    catalogue = set(t.info_sids)
    illegal = sorted({b for r in free for b in r["predict"] if b not in catalogue})
    return {"rows": n, "num_beams": t.num_beams, "max_new_tokens": max_new_tokens,
            "constrained": score_records(records[:n], t.info_sids, t.ks),
            "unconstrained": score_records(free, t.info_sids, t.ks),
            "illegal_examples": illegal[:10]}
