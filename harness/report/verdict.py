"""The report's opening paragraph: what the numbers say, in sentences (model vs baseline, RL vs SFT,
significance, the paper)."""

from __future__ import annotations

from harness import metrics as registry


def verdict(metrics: dict, extra: dict | None = None) -> str:
    sft, pop = metrics["sft"], metrics["baselines"]["most_popular"]
    k = registry.headline_k(sft)
    a, b = sft[registry.key("hr", k)], pop[registry.key("hr", k)]
    rel = f"{a / b:.2f}× " if b > 0 else ""
    outcome = "beats" if a > b else "does not beat"
    legal = sft["legality_rate"]
    return (f"The SFT model {outcome} the most-popular baseline on HR@{k} ({a:.4f} vs {b:.4f}, {rel}the baseline) "
            f"on {metrics['protocol']['rows']} test rows with {metrics['protocol']['num_beams']} constrained beams; "
            f"{legal:.2%} of its generated SIDs are catalogue SIDs ({sft['illegal_count']} illegal). "
            + strongest_baseline_sentence(metrics, k) + rl_sentence(metrics, k) + _significance_sentence((extra or {}).get("significance"))
            + _paper_sentence((extra or {}).get("paper"))
            + "Hits are counted at SID level, so items sharing a SID count as hits for each other.")


def strongest_baseline_sentence(metrics: dict, k: int) -> str:
    """The baseline with the highest HR@k, against the best model: a generative recommender that loses to a
    transition table has learned less than the headline suggests."""
    from harness.evaluate.baselines import BASELINES

    hr = registry.key("hr", k)
    name, block = max(((n, b) for n, b in metrics["baselines"].items() if b), key=lambda nb: nb[1][hr])
    models = [(label, metrics[m]) for m, label in (("sft", "SFT"), ("rl", "SFT + RL")) if metrics.get(m)]
    label, best = max(models, key=lambda lm: lm[1][hr])
    where = "above" if best[hr] > block[hr] else "below"
    return (f"The strongest baseline is {BASELINES[name].label if name in BASELINES else name} "
            f"(HR@{k} {block[hr]:.4f}): the better model, {label}, is {where} it ({best[hr] - block[hr]:+.4f}). ")


def _significance_sentence(sig: dict | None) -> str:
    if not sig:
        return ""
    verdict_word = "not significant" if sig["sign_test_p"] >= 0.05 else "significant"
    return (f"On the same rows the SFT+RL vs SFT difference at {sig['k']} is {verdict_word} (sign test p = "
            f"{sig['sign_test_p']:.3g}; {sig['only_b']} rows hit only after RL, {sig['only_a']} only before). ")


def _paper_sentence(cmp: dict | None) -> str:
    if not cmp:
        return ""
    if not cmp["available"]:
        return f"No paper comparison: {cmp['reason'][0].lower()}{cmp['reason'][1:]}. "
    r10 = next((r for r in cmp["rows"] if r["metric"] == registry.key("hr", 10)), None)
    within = "within" if cmp["within_all"] else "not within"
    head = (f"Against the paper's {cmp['category']} figures the reproduced metrics are {within} ±{cmp['tolerance']}"
            + (f" (HR@10 {r10['reproduced']:.4f} vs {r10['paper']:.4f}, {r10['delta_pct']:+.1f}%)"
               if r10 and r10["reproduced"] is not None else ""))
    diff = f"; protocol differences: {'; '.join(cmp['differences'])}" if cmp["differences"] else ""
    return head + diff + ". "


def rl_sentence(metrics: dict, k: int) -> str:
    rl, sft = metrics.get("rl"), metrics["sft"]
    if rl is None:
        return "RL was not run (rl.enabled: false). "
    hr, ndcg = registry.key("hr", k), registry.key("ndcg", k)
    return (f"After GRPO: HR@{k} {rl[hr]:.4f} ({rl[hr] - sft[hr]:+.4f} vs SFT), "
            f"NDCG@{k} {rl[ndcg]:.4f} ({rl[ndcg] - sft[ndcg]:+.4f}). ")
