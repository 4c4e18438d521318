"""Is SFT + RL better than SFT, or is the difference noise? Both models are scored on the same test rows,
so the comparison is paired: an exact sign test on the rows where exactly one model hits at K, and a paired
bootstrap of the NDCG@K difference (seeded, so the report is reproducible)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from harness.evaluate.score import clean_beam, clean_target


def ranks(records: Sequence[dict]) -> list[int | None]:
    """The 0-based rank of the target among each row's beams (calc.py's cleaning), None for a miss."""
    out: list[int | None] = []
    for rec in records:
        target = clean_target(rec["output"])
        beams = [clean_beam(b) for b in rec["predict"]]
        out.append(beams.index(target) if target in beams else None)
    return out


def paired_test(a: Sequence[int | None], b: Sequence[int | None], k: int, n_boot: int = 2000,
                seed: int = 0) -> dict:
    """Model b against model a at cut-off k on the same rows."""
    from scipy.stats import binomtest

    if len(a) != len(b):
        raise ValueError(f"paired test needs the same rows: {len(a)} vs {len(b)}")
    hit_a = np.array([r is not None and r < k for r in a])
    hit_b = np.array([r is not None and r < k for r in b])
    only_b, only_a = int((hit_b & ~hit_a).sum()), int((hit_a & ~hit_b).sum())
    sign_p = binomtest(only_b, only_b + only_a, 0.5).pvalue if only_a + only_b else 1.0

    def gain(rs):
        return np.array([1 / math.log2(r + 2) if r is not None and r < k else 0.0 for r in rs])

    diff = gain(b) - gain(a)
    rng = np.random.default_rng(seed)
    boots = diff[rng.integers(0, len(diff), size=(n_boot, len(diff)))].mean(axis=1)
    boot_p = min(1.0, 2 * min((boots <= 0).mean(), (boots >= 0).mean()))
    lo, hi = np.quantile(boots, [0.025, 0.975])
    return {"k": k, "rows": len(a), "hits_a": int(hit_a.sum()), "hits_b": int(hit_b.sum()),
            "only_a": only_a, "only_b": only_b, "sign_test_p": float(sign_p),
            "ndcg_diff": float(diff.mean()), "ndcg_diff_ci95": [float(lo), float(hi)],
            "bootstrap_p": float(boot_p), "bootstrap_samples": n_boot, "seed": seed}
