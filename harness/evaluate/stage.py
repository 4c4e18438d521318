"""Evaluate stage (``evaluate@sft``, ``evaluate@rl``): constrained beam search on the test split for one model,
written as upstream-format ``predictions.json`` and ``scores.json``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from harness.evaluate.protocol import TestProtocol
from harness.evaluate.sharded import native_decode
from harness.io import atomic_dir, write_json
from harness.params import EvaluateParams
from harness.results import EXACT, PREDICTIONS, SCORES, UNCONSTRAINED

# Renders the native decoder's prompts another way (upstream's own evaluation dataset): the token ids of every
# scored row; the decoder then constrains to that format's answer, "SID" + newline + EOS.
PromptSource = Callable[[TestProtocol, Path], list[list[int]]]
# Runs inside the stage's output folder once the native scores exist (cross-scoring): gets that folder, the
# scored rows, the model folder and the native scores, and returns what to record under scores["upstream"].
AfterScoring = Callable[[Path, TestProtocol, Path, dict], dict]


def run_evaluate(p: EvaluateParams, model: str, dataset_dir: str | Path,
                 sid_dir: str | Path, model_dir: str | Path,
                 out_dir: str | Path, prompt_source: PromptSource | None = None,
                 after_scoring: AfterScoring | None = None) -> dict | None:
    """Entry point of ``evaluate@<model>``: ``reports/eval/<model>/`` gets ``scores.json`` and, when the model
    exists, upstream-format ``predictions.json``. ``models/rl`` without a model (``rl.enabled: false``) is
    recorded as not scored. Returns None on the non-zero ranks of a launched run.

    The two hooks are how the upstream layer (``evaluate.prompts: upstream``, ``evaluate.backend: both``) adds
    to this stage without this package knowing about it."""
    model_dir = Path(model_dir)
    out_dir = Path(out_dir)
    t = TestProtocol(p, Path(dataset_dir), Path(sid_dir))
    if not model_present(model, model_dir):
        return record_not_scored(t, model, model_dir, out_dir)
    native = native_decode(p, t, model, model_dir, out_dir.parent / f".{out_dir.name}.shards", prompt_source)
    if native is None:  # a non-zero rank of a launched run
        return None
    with atomic_dir(out_dir) as tmp:
        scores, free, exact = native.merge(tmp / PREDICTIONS)
        write_json(tmp / SCORES, scores)
        if free is not None:
            write_json(tmp / UNCONSTRAINED, free)
        if exact is not None:
            write_json(tmp / EXACT, exact)
        if after_scoring is not None:
            scores["upstream"] = after_scoring(tmp, t, model_dir, scores)
    return scores


def model_present(model: str, model_dir: Path) -> bool:
    """The SFT model must exist; models/rl may hold no model (rl.enabled: false)."""
    return model == "sft" or (model_dir / "config.json").is_file()


def record_not_scored(t: TestProtocol, model: str, model_dir: Path, out_dir: Path) -> dict:
    with atomic_dir(out_dir) as tmp:
        write_json(tmp / SCORES, {"model": model, "scored": False, "reason": f"{model_dir} holds no model",
                                  "metrics": None, "protocol": t.protocol})
    return {"model": model, "scored": False}
