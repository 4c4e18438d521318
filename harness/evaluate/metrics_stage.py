"""Metrics stage: every model's scores beside the registered baselines, all on the same test rows, in
``reports/metrics.json``."""

from __future__ import annotations

import json
from pathlib import Path

from harness.errors import HarnessError
from harness.evaluate.baselines import BASELINES
from harness.evaluate.beyond import Popularity, beyond_accuracy, popularity_curve
from harness.evaluate.protocol import TestProtocol
from harness.evaluate.score import clean_beam, read_predictions, score_records
from harness.io import read_utf8, write_json
from harness.metrics import headline_k
from harness.params import EvaluateParams
from harness.results import EXACT, MODELS, PREDICTIONS, SCORES, UNCONSTRAINED, UPSTREAM
from harness.sid.tokens import sid_string


def run_metrics(p: EvaluateParams, dataset_dir: str | Path, sid_dir: str | Path,
                eval_dir: str | Path, metrics_path: str | Path) -> dict:
    """Entry point of the ``metrics`` stage: every model's scores side by side with the baselines, all on the
    same test rows (a model scored under another protocol, e.g. a stale evaluation, is an error)."""
    t = TestProtocol(p, Path(dataset_dir), Path(sid_dir))
    scored: dict[str, dict | None] = {}
    cross: dict[str, dict] = {}
    decoding: dict[str, dict] = {}
    exact: dict[str, dict] = {}
    rankings: dict[str, list[list[str]]] = {}  # each scored model's and baseline's ranked SIDs per row
    evaluators: dict[str, dict] = {}
    generation = None

    def read_scores(path: Path) -> dict:
        try:
            s = json.loads(read_utf8(path))
            s["metrics"], protocol = s["metrics"], s["protocol"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise HarnessError(f"{path}: not an evaluate scores file ({e.__class__.__name__}: {e})") from None
        mismatch = {k: (protocol.get(k), v) for k, v in t.protocol.items() if protocol.get(k) != v}
        if mismatch:
            raise HarnessError(f"{path}: scored under another protocol than evaluate's params and data "
                               f"({', '.join(f'{k}: {a} vs {b}' for k, (a, b) in mismatch.items())}); run `dvc repro`")
        return s

    for model in MODELS:
        s = read_scores(Path(eval_dir) / model / SCORES)
        scored[model] = s["metrics"]
        generation = generation or s["protocol"].get("generation")
        if s["metrics"] is not None:
            evaluators[model] = {"evaluator": s.get("evaluator", "native"), "upstream_commit": s.get("upstream_commit"),
                                 "prompts": s["protocol"].get("prompts", "harness")}
        free_path = Path(eval_dir) / model / UNCONSTRAINED
        if s["metrics"] is not None and free_path.is_file():
            decoding[model] = json.loads(read_utf8(free_path))
        exact_path = Path(eval_dir) / model / EXACT
        if s["metrics"] is not None and exact_path.is_file():
            exact[model] = {k: v for k, v in json.loads(read_utf8(exact_path)).items() if k != "target_rank"}
        if s["metrics"] is not None:
            rankings[model] = [[clean_beam(b) for b in r["predict"]]
                               for r in read_predictions(Path(eval_dir) / model / PREDICTIONS)]
        upstream_path = Path(eval_dir) / model / UPSTREAM / SCORES
        if upstream_path.is_file():  # evaluate.backend both: the pinned evaluate.py on the same model
            u = read_scores(upstream_path)
            cross[model] = {"metrics": u["metrics"], "upstream_commit": u.get("upstream_commit"),
                            "generation": u["protocol"].get("generation")}
            agreement_path = upstream_path.with_name("agreement.json")
            if agreement_path.is_file():
                cross[model]["agreement"] = json.loads(read_utf8(agreement_path))
    if scored["sft"] is None:
        raise HarnessError(f"{Path(eval_dir) / 'sft' / SCORES}: the SFT model was not scored")
    train = t.dataset.split("train")
    baselines = {}
    for b in BASELINES.values():
        rankings[b.name] = b.rank(train, t.index, t.rows, t.num_beams, p.baselines)
        baselines[b.name] = score_records(t.records(rankings[b.name]), t.info_sids, t.ks)
    pop = Popularity([sid_string(t.index[r.target]) for r in train if r.target in t.index], list(t.catalogue))
    k = headline_k(scored["sft"])
    metrics = {
        **scored,
        "baselines": baselines,
        "beyond_accuracy": {name: beyond_accuracy(pop, r, t.targets, t.ks) for name, r in rankings.items()},
        "popularity": {**pop.summary(), "k": k, "curves": {
            "targets": popularity_curve(pop, [[s] for s in t.targets], 1),
            **{name: popularity_curve(pop, r, k) for name, r in rankings.items()}}},
        "protocol": {**t.protocol, "generation": generation},
        "evaluated_by": evaluators,
    }
    if exact:
        metrics["exact"] = exact
    if cross:
        metrics["upstream_evaluate"] = cross
    if decoding:
        metrics["decoding"] = decoding
    write_json(metrics_path, metrics)
    return metrics
