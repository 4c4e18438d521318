"""Generation-config audit (H1): what a model's generation_config.json would inject into upstream's beam search.

Upstream builds its GenerationConfig without do_sample, temperature, top_k, top_p or repetition_penalty, so
transformers fills them from the checkpoint's own generation_config.json. This reads that file (as JSON,
never by loading the model) and states each injected field as a finding.
"""

from __future__ import annotations

from pathlib import Path

from harness.errors import DataFormatError, HarnessError
from harness.io import load_json_object, read_json

NEUTRAL = {"do_sample": False, "temperature": 1.0, "top_k": None, "top_p": 1.0, "repetition_penalty": 1.0}


def audit_generation_config(model_dir: str | Path) -> dict:
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise HarnessError(f"{model_dir}: model directory not found")
    path = model_dir / "generation_config.json"
    if not path.exists():
        return {"file": str(path), "present": False, "injected": {}, "findings": []}
    cfg = read_json(path)
    if not isinstance(cfg, dict):
        raise DataFormatError(path, 1, "top level must be a JSON object")
    try:
        _, key_lines = load_json_object(path)  # each top-level key's line (a one-line file: all line 1)
    except DataFormatError:  # e.g. a duplicate key, which read_json accepts: no lines, still audited
        key_lines = {}
    injected = {k: cfg[k] for k in NEUTRAL if k in cfg and cfg[k] != NEUTRAL[k] and not (k == "top_k" and cfg[k] == 0)}
    sampling = bool(injected.get("do_sample"))
    findings = []
    for k, v in injected.items():
        if k == "do_sample":
            sev, effect = "error", "beam search becomes stochastic beam sampling: results change run to run and CC > 0"
        elif k == "repetition_penalty":
            sev, effect = "error", ("penalises SID tokens already in the prompt history even in pure beam search, "
                                    "which lowers repeat-purchase hits")
        elif sampling:
            sev, effect = "error", f"with sampling on, {k}={v} prunes or reshapes the constrained candidates"
        else:
            sev, effect = "info", f"{k}={v} is inert while do_sample is false, but becomes active if sampling is enabled"
        findings.append({"id": f"generation_config.{k}", "severity": sev, "figure": v,
                         "locations": [f"{path}:{key_lines.get(k, 1)}"], "effect": effect})
    return {"file": str(path), "present": True, "injected": injected, "findings": findings}
