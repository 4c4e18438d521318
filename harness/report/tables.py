"""The report's newer tables as (header, rows) of strings, so both templates render the same cells:
paper comparison, decoding comparison, significance, experiments and seeds, and the provenance of the run."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml

from harness.metrics import headline_k
from harness.metrics import key as metric_key
from harness.params import parse_yaml
from harness.profiles import _flatten

Table = tuple[list[str], list[list[str]]]


def _f(v: float | None, fmt: str = ".4f") -> str:
    return "n/a" if v is None else format(v, fmt)


def paper_table(cmp: dict) -> Table:
    header = ["metric", "reproduced", "paper", "Δ", "Δ%", f"within ±{cmp['tolerance']}"]
    rows = [[r["metric"].upper(), _f(r["reproduced"]), _f(r["paper"]),
             _f(r["delta"], "+.4f"), _f(r["delta_pct"], "+.1f"),
             "n/a" if r["within"] is None else ("yes" if r["within"] else "no")] for r in cmp["rows"]]
    return header, rows


def paper_methods_table(cmp: dict) -> Table:
    header = ["method (paper)", "HR@3", "NDCG@3", "HR@5", "NDCG@5", "HR@10", "NDCG@10"]
    return header, [[row[0], *(_f(v) for v in row[1:])] for row in cmp["methods"]]


def reproductions_table(cmp: dict) -> Table:
    header = ["independent run (not the paper)", "setup", "stage", "HR@3", "NDCG@3", "HR@10", "NDCG@10"]
    rows = []
    for r in cmp["reproductions"]:
        for stage in ("sft", "rl"):
            m = r.get(stage)
            if m:
                rows.append([r["source"], r["setup"], stage.upper()] +
                            [_f(m.get(k)) for k in ("hr@3", "ndcg@3", "hr@10", "ndcg@10")])
    return header, rows


def decoding_table(decoding: dict) -> Table:
    """Constrained vs unconstrained beam search on the same first rows, per model."""
    header = ["model", "rows", "decoding", "legality", "illegal (CC)", "HR@10", "NDCG@10"]
    rows = []
    for model, d in decoding.items():
        for kind in ("constrained", "unconstrained"):
            m = d[kind]
            k = headline_k(m)
            rows.append([model.upper(), str(d["rows"]), kind, _f(m["legality_rate"]), str(m["illegal_count"]),
                         _f(m[metric_key("hr", k)]), _f(m[metric_key("ndcg", k)])])
    return header, rows


def exact_table(exact: dict) -> Table:
    """Exact full-catalogue ranking vs the constrained beams on the same first rows, per model."""
    first = next(iter(exact.values()))
    k = headline_k(first["beam"])
    header = ["model", "rows", f"HR@{k} exact / beams", f"NDCG@{k} exact / beams", f"beam recall@{k}",
              "search errors", f"targets past {first['num_beams']} beams", "MRR (exact)"]
    rows = []
    for model, e in exact.items():
        x, b = e["exact"], e["beam"]
        rows.append([model.upper(), str(e["rows"]),
                     f"{_f(x[metric_key('hr', k)])} / {_f(b[metric_key('hr', k)])}",
                     f"{_f(x[metric_key('ndcg', k)])} / {_f(b[metric_key('ndcg', k)])}",
                     _f(e["beam_recall"][metric_key("beam_recall", k)]), str(e["search_errors"]),
                     str(e["beyond_beams"]), _f(x[metric_key("mrr")])])
    return header, rows


def exact_depth_table(exact: dict) -> Table:
    """Exact HR@K at every cut-off the catalogue allows, past the beams too (beam search cannot give those)."""
    first = next(iter(exact.values()))
    ks = [k for k in sorted(int(mk.split("@")[1]) for mk in first["exact"] if mk.startswith("hr@"))]
    header = ["model"] + [f"HR@{k}" for k in ks]
    return header, [[m.upper()] + [_f(e["exact"][metric_key("hr", k)]) for k in ks] for m, e in exact.items()]


BEYOND_COLUMNS = (("coverage", "coverage@{k}", ".4f"), ("gini", "Gini@{k}", ".4f"),
                  ("entropy", "entropy@{k} (bits)", ".2f"), ("avg_popularity", "avg popularity@{k}", ".1f"),
                  ("long_tail_share", "long-tail share@{k}", ".4f"), ("novelty", "novelty@{k} (bits)", ".2f"))


def beyond_table(metrics: dict, labels: dict[str, str]) -> Table:
    """Coverage, concentration and popularity of what each model and baseline recommends at the headline K,
    and a last row for the test targets themselves (what an unbiased ranker's popularity would look like)."""
    beyond = metrics["beyond_accuracy"]
    k = metrics["popularity"]["k"]
    header = ["ranker"] + [h.format(k=k) for _, h, _ in BEYOND_COLUMNS]
    rows = [[labels.get(name, name)] + [_f(b[metric_key(m, k)], fmt) for m, _, fmt in BEYOND_COLUMNS]
            for name, b in beyond.items()]
    any_block = next(iter(beyond.values()))
    rows.append(["test targets", "", "", "", _f(any_block["target_popularity"], ".1f"),
                 _f(any_block["target_long_tail_share"]), ""])
    return header, rows


def baseline_paper_table(metrics: dict, cmp: dict, baselines) -> Table | None:
    """Each baseline the paper also ran, reproduced here beside the paper's own figures for it."""
    keys = ("hr@3", "ndcg@3", "hr@5", "ndcg@5", "hr@10", "ndcg@10")
    paper = {row[0]: row[1:] for row in cmp.get("methods", [])}
    rows = []
    for b in baselines:
        if b.paper and b.paper in paper and metrics["baselines"].get(b.name):
            m = metrics["baselines"][b.name]
            rows.append([f"{b.label} (reproduced)"] + [_f(m.get(k)) for k in keys])
            rows.append([f"{b.paper} (paper)"] + [_f(v) for v in paper[b.paper]])
    return (["baseline"] + [k.upper() for k in keys], rows) if rows else None


AGREEMENT_CAUSES = {
    "identical": "the same ranked Top-K",
    "fail_open": "H2: upstream's constraint let a beam out of the catalogue",
    "inherited_sampling": "H1: the model's generation_config asks for sampling, which evaluate.py inherits",
    "tie": "tie: the two items score within 1e-5 in fp32",
    "precision": "precision: fp32 ranks the native item higher; upstream decodes in bf16",
    "native_search": "beam search: upstream kept an item scoring higher in fp32 that the native beams pruned",
    "upstream_search": "beam search: the native item scores higher in fp32, at the same decoding precision",
}


def agreement_table(cross: dict) -> Table | None:
    """The native and upstream decoders' Top-K compared row by row (evaluate.backend both), one row per class."""
    header = ["model", "class", "rows", "share", "median |Δ log p|", "cause"]
    rows = []
    for model, c in cross.items():
        a = c.get("agreement")
        if not a or "classes" not in a:
            continue
        for cls, n in a["classes"].items():
            if n or cls == "identical":
                gap = a.get("gap", {}).get(cls)
                rows.append([model.upper(), cls, str(n), _f(n / a["rows"]), _f(gap) if gap is not None else "",
                             AGREEMENT_CAUSES[cls]])
    return (header, rows) if rows else None


def significance_table(sig: dict) -> Table:
    header = ["K", "rows", "SFT hits", "SFT+RL hits", "only SFT", "only SFT+RL", "sign test p",
              "ΔNDCG (RL − SFT)", "95% CI (bootstrap)", "bootstrap p"]
    lo, hi = sig["ndcg_diff_ci95"]
    return header, [[str(sig["k"]), str(sig["rows"]), str(sig["hits_a"]), str(sig["hits_b"]), str(sig["only_a"]),
                     str(sig["only_b"]), _f(sig["sign_test_p"], ".4g"), _f(sig["ndcg_diff"], "+.4f"),
                     f"[{lo:+.4f}, {hi:+.4f}]", _f(sig["bootstrap_p"], ".4g")]]


def rl_probe_table(rl_training: dict) -> Table | None:
    """The policy probe by step: HR/NDCG@K of the fixed train prompts RL trains on, and of held-out ones."""
    probe, k = rl_training.get("probe") or [], rl_training.get("probe_k")
    if not probe:
        return None
    names = [n for n in probe[0] if n != "step"]
    header = ["step", *[f"{n.replace('_', ' ')} {m}@{k}" for n in names for m in ("HR", "NDCG")]]
    return header, [[str(r["step"]), *[_f(r[n][f"{m}@{k}"]) for n in names for m in ("hr", "ndcg")]] for r in probe]


def seed_table(groups: list[dict]) -> Table:
    header = ["runs (differ only in seeds)", "n", "SFT HR@10", "SFT NDCG@10", "RL HR@10", "RL NDCG@10"]
    rows = []
    for g in groups:
        cells = []
        for key in ("sft hr@10", "sft ndcg@10", "rl hr@10", "rl ndcg@10"):
            s = g["stats"].get(key)
            cells.append("n/a" if s is None else f"{s['mean']:.4f} ± {s['std']:.4f}")
        rows.append([", ".join(g["runs"]), str(len(g["runs"])), *cells])
    return header, rows


LOCK_OUTS = ("data/dataset", "data/embed", "data/sid", "models/sft", "models/rl", "reports/metrics.json")


def lock_record(lock_path: Path = Path("dvc.lock")) -> tuple[Table, list[list[str]]]:
    """From dvc.lock, the provenance record of the pipeline: each artifact's hash and the hash of the params
    that made it; and every seed the stages ran with."""
    try:
        lock = parse_yaml(lock_path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return (["stage", "output", "md5", "params sha256"], []), []
    stages = lock.get("stages", {})
    rows, seeds = [], []
    for name, st in stages.items():
        params = (st.get("params") or {}).get("params.yaml") or {}
        phash = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12] if params else "—"
        for out in st.get("outs") or []:
            if out.get("path") in LOCK_OUTS:
                rows.append([name, out["path"], str(out.get("md5", ""))[:12], phash])
        for key, value in _flatten(params):
            if key.rsplit(".", 1)[-1] == "seed":
                seeds.append([name, key, str(value)])
    uniq = {tuple(s[1:]): s for s in seeds}  # a section shared by several stages (evaluate) is listed once
    return (["stage", "output", "md5", "params sha256"], rows), list(uniq.values())


def examples(predictions: list[dict], rows: list, items: list, index: dict[int, list[str]], n: int = 3,
             k: int = 5) -> list[dict]:
    """The first ``n`` scored test rows in words: the history and target titles, and the model's top ``k``
    with every title that carries each SID (text from data: the templates escape it)."""
    from harness.evaluate.score import clean_beam, clean_target
    from harness.sid.tokens import sid_string

    by_sid: dict[str, list[str]] = {}
    for iid, tokens in sorted(index.items()):
        by_sid.setdefault(sid_string(tokens), []).append(items[iid].title)
    out = []
    for rec, row in list(zip(predictions, rows))[:n]:
        target = clean_target(rec["output"])
        top = []
        for rank, beam in enumerate(rec["predict"][:k], start=1):
            sid = clean_beam(beam)
            top.append({"rank": rank, "sid": sid, "titles": by_sid.get(sid, ["(not a catalogue SID)"]),
                        "hit": sid == target})
        out.append({"user": row.user, "history": [items[i].title for i in row.history],
                    "target": items[row.target].title, "target_sid": target, "top": top})
    return out
