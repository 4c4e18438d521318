"""The paper's figures (``paper_targets.yaml``) and a reproduction set beside them: value, Δ, Δ%, whether
the difference is within ``report.tolerance``, and every way the run's protocol differs from the paper's.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from harness.errors import ParamsError
from harness.params import load_yaml

TARGETS = Path("paper_targets.yaml")
METRIC_KEYS = ("hr@3", "ndcg@3", "hr@5", "ndcg@5", "hr@10", "ndcg@10")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PaperProtocol(_Strict):
    split: str
    num_beams: int
    base_model: str
    train_split: str


class Paper(_Strict):
    source: str
    protocol: PaperProtocol
    ours: str
    categories: dict[str, dict[str, dict[str, float]]]


class Stages(_Strict):
    source: str
    category: str
    metric: str
    variants: dict[str, dict[str, float]]


class Reproduction(_Strict):
    source: str
    setup: str
    category: str
    sft: dict[str, float] | None = None
    rl: dict[str, float] | None = None


class Targets(_Strict):
    paper: Paper
    stages: Stages
    reproductions: list[Reproduction]


def load_targets(path: str | Path = TARGETS) -> Targets:
    """The targets file, validated: an unknown or ill-typed key is an error naming the file and the key."""
    path = Path(path)
    try:
        targets = Targets.model_validate(load_yaml(path))
    except ValidationError as e:
        err = e.errors()[0]
        raise ParamsError(path, ".".join(str(p) for p in err["loc"]), err["msg"]) from None
    for cat, methods in targets.paper.categories.items():
        if targets.paper.ours not in methods:
            raise ParamsError(path, f"paper.categories.{cat}", f"no row for {targets.paper.ours!r} (paper.ours)")
        for method, row in methods.items():
            missing = [k for k in METRIC_KEYS if k not in row]
            if missing:
                raise ParamsError(path, f"paper.categories.{cat}.{method}", f"missing {', '.join(missing)}")
    return targets


def protocol_differences(targets: Targets, metrics: dict, data: dict, training: dict) -> list[str]:
    """Every way this run's protocol departs from the paper's, in words for the report."""
    proto = targets.paper.protocol
    notes = []
    if data.get("valid_as_train"):
        notes.append("trained on the valid split (the data dir used has no train CSV); the paper trains on the "
                     "full train split")
    base = training.get("base_model")
    if base and base != proto.base_model and not str(base).endswith(proto.base_model):
        notes.append(f"base model {base} instead of {proto.base_model}")
    if training.get("mode", "full") != "full":
        notes.append(f"SFT mode {training['mode']} (the paper fine-tunes every weight)")
    beams = metrics["protocol"]["num_beams"]
    if beams != proto.num_beams:
        notes.append(f"{beams} beams instead of {proto.num_beams}")
    if metrics.get("rl") is None:
        notes.append("SFT only: the paper's row is SFT followed by RL")
    return notes


def metric_row(key: str, value: float | None, ref: float, tolerance: float) -> dict:
    """One reproduced figure beside the paper's: Δ, Δ% and whether it is within ``tolerance``."""
    if value is None:
        return {"metric": key, "reproduced": None, "paper": ref, "delta": None, "delta_pct": None, "within": None}
    delta = value - ref
    return {"metric": key, "reproduced": value, "paper": ref, "delta": delta,
            "delta_pct": 100 * delta / ref if ref else None, "within": abs(delta) <= tolerance}


def paper_comparison(targets: Targets, category: str, metrics: dict, data: dict, training: dict,
                     tolerance: float) -> dict:
    """Reproduced vs paper for the run's category; ``available`` is False (with the reason) when the paper
    has no figures for it, e.g. the synthetic embedded default."""
    paper = targets.paper
    if category not in paper.categories:
        return {"available": False, "category": category,
                "reason": f"The paper reports no figures for {category!r} (it covers "
                          f"{', '.join(paper.categories)}); run on one of those to compare"}
    model = "rl" if metrics.get("rl") is not None else "sft"
    ours, target = metrics[model], paper.categories[category][paper.ours]
    rows = [metric_row(key, ours.get(key), target[key], tolerance) for key in METRIC_KEYS]
    return {
        "available": True, "category": category, "model": model, "tolerance": tolerance, "rows": rows,
        "within_all": all(r["within"] for r in rows if r["within"] is not None),
        "differences": protocol_differences(targets, metrics, data, training),
        "methods": [[name, *(row[k] for k in METRIC_KEYS)] for name, row in paper.categories[category].items()],
        "reproductions": [r.model_dump() for r in targets.reproductions if r.category == category],
        "stages": targets.stages.model_dump() if targets.stages.category == category else None,
        "source": paper.source,
    }
