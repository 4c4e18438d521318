"""What upstream's trainers leave behind, turned into the canonical model folder and training log: the final
checkpoint copied without pickles, and the Trainer's logs (its ``trainer_state.json`` lives in the last saved
``checkpoint-*``, and the final ``train_loss`` only in what the Trainer printed, because sft.py keeps just the
best checkpoint and saves it before the end)."""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

from harness.errors import HarnessError
from harness.io import read_utf8

SAFE_SUFFIXES = (".json", ".safetensors", ".txt", ".model", ".jinja", ".tiktoken")  # no pickles from a run


def copy_checkpoint(src: Path, dest: Path) -> None:
    """The final model folder, without pickles (training_args.bin) or optimizer state."""
    if not (src / "config.json").is_file():
        raise HarnessError(f"{src}: the upstream run left no model there (config.json missing)")
    if not any(src.glob("*.safetensors")):
        raise HarnessError(f"{src}: no safetensors weights (only pickled ones would be loaded, which this project "
                           "refuses)")
    dest.mkdir(parents=True, exist_ok=True)
    for f in sorted(src.iterdir()):
        if f.is_file() and f.suffix in SAFE_SUFFIXES:
            shutil.copy2(f, dest / f.name)


def printed_logs(log_text: str) -> list[dict]:
    """The metric dicts the Trainer printed (``{'loss': ..., 'epoch': ...}`` lines), parsed as literals: never
    evaluated as code. Progress bars may precede a dict on the same line."""
    out = []
    for line in log_text.splitlines():
        start = line.find("{'")
        if start < 0 or not line.rstrip().endswith("}"):
            continue
        try:
            value = ast.literal_eval(line[start:].strip())
        except (ValueError, SyntaxError):
            continue
        if isinstance(value, dict) and all(isinstance(k, str) for k in value):
            out.append(value)
    return out


def trainer_log(run_dir: Path, log_path: Path | None = None) -> dict:
    """trainer_state.json of the last checkpoint, completed from the printed log: the steps after that checkpoint
    (upstream's trainers log every step, so printed training dicts are numbered in order) and the final figures.

    Measured on Industrial: sft.py's only checkpoint left was step 288 of 313, and the final ``train_loss`` is
    only printed."""
    states = sorted(run_dir.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name.split("-")[1]))
    if (run_dir / "trainer_state.json").is_file():
        states.append(run_dir / "trainer_state.json")
    state = json.loads(read_utf8(states[-1])) if states else {}
    history = list(state.get("log_history", []))
    printed = printed_logs(read_utf8(log_path)) if log_path is not None and log_path.is_file() else []
    saved = max((h["step"] for h in history if "step" in h), default=0)
    step = 0
    for d in printed:
        is_step = "loss" in d and "eval_loss" not in d and "train_loss" not in d
        step += is_step
        if "train_loss" in d:  # the Trainer's closing summary
            if not any("train_loss" in h for h in history):
                history.append(d)
        elif step > saved:  # after the last checkpoint's state
            history.append({**d, "step": step})
    train = [h["train_loss"] for h in history if "train_loss" in h]
    steps = [h["step"] for h in history if "step" in h]
    return {"global_steps": max([state.get("global_step") or 0, *steps]) or None,
            "train_loss": train[-1] if train else None,
            "best_eval_loss": state.get("best_metric"), "best_checkpoint": state.get("best_model_checkpoint"),
            "log_history": history, "printed_logs": len(printed)}
