"""The experiments DVC knows about (``dvc exp show --json``): what each changed against the workspace and what
it scored; runs that differ only in seeds are aggregated to mean ± std (upstream reports single runs, H19).

Experiments live in git refs, not in the files the report stage depends on: after new experiments, refresh
the table with ``dvc repro -f -s report`` (each ``dvc exp run`` renders its own report already).
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

METRICS_FILE = "reports/metrics.json"
SUMMARY = (("sft", "hr@10"), ("sft", "ndcg@10"), ("rl", "hr@10"), ("rl", "ndcg@10"))


def _flatten(d: dict) -> dict:
    """Dotted keys; list values as JSON text, so runs can be grouped by their params."""
    from harness.profiles import _flatten as dotted

    return {k: json.dumps(v) if isinstance(v, list) else v for k, v in dotted(d)}


def _run_entry(rev: dict, name: str | None) -> dict | None:
    data = rev.get("data") or {}
    params = ((data.get("params") or {}).get("params.yaml") or {}).get("data") or {}
    metrics = ((data.get("metrics") or {}).get(METRICS_FILE) or {}).get("data") or {}
    if not params:
        return None
    return {"name": name or rev.get("name") or str(rev.get("rev", ""))[:7], "rev": str(rev.get("rev", "")),
            "params": _flatten(params), "metrics": metrics}


def parse_exp_show(doc: list) -> list[dict]:
    """Runs from ``dvc exp show --json``: the workspace first, then every experiment of every baseline."""
    runs = []
    for base in doc:
        if base.get("rev") == "workspace":
            entry = _run_entry(base, "workspace")
            if entry:
                runs.insert(0, entry)
            continue
        for exp in base.get("experiments") or []:
            for rev in exp.get("revs") or []:
                entry = _run_entry(rev, rev.get("name") or exp.get("name"))
                if entry:
                    runs.append(entry)
    return runs


def dvc_experiments(cwd: Path = Path(".")) -> tuple[list[dict], str | None]:
    """(runs, None), or ([], why) when DVC or git cannot list them (e.g. a copy without .git)."""
    dvc = shutil.which("dvc") or str(Path(sys.executable).with_name("dvc"))
    try:
        r = subprocess.run([dvc, "exp", "show", "--json"], cwd=cwd, capture_output=True, text=True,  # noqa: S603
                           timeout=300)
    except (OSError, subprocess.TimeoutExpired) as e:
        return [], f"dvc exp show failed: {e}"
    if r.returncode:
        return [], f"dvc exp show failed: {(r.stderr or r.stdout).strip().splitlines()[-1:]}"
    try:
        return parse_exp_show(json.loads(r.stdout)), None
    except (json.JSONDecodeError, AttributeError, TypeError) as e:
        return [], f"dvc exp show printed no readable JSON ({e})"


def _metric(run: dict, model: str, key: str) -> float | None:
    block = run["metrics"].get(model)
    return block.get(key) if isinstance(block, dict) else None


def experiment_rows(runs: list[dict]) -> tuple[list[str], list[list[str]]]:
    """One row per run: the params it changed against the workspace and its headline metrics."""
    if not runs:
        return [], []
    base = runs[0]["params"]
    header = ["experiment", "params changed vs workspace"] + [f"{m} {k}" for m, k in SUMMARY]
    rows = []
    for run in runs:
        # keys params.yaml gained after an experiment ran are absent from it: not a change it made
        diff = {k: v for k, v in run["params"].items() if base.get(k) != v}
        changed = ", ".join(f"{k}={v}" for k, v in sorted(diff.items())) or "—"
        cells = [_metric(run, m, k) for m, k in SUMMARY]
        rows.append([run["name"], changed] + ["n/a" if c is None else f"{c:.4f}" for c in cells])
    return header, rows


def is_seed_key(key: str) -> bool:
    return key.rsplit(".", 1)[-1] == "seed"


def seed_groups(runs: list[dict]) -> list[dict]:
    """Runs whose params are equal once every ``*.seed`` key is ignored, two or more per group: the mean ±
    sample std of the headline metrics, the seeds, and the run names."""
    groups: dict[tuple, list[dict]] = {}
    for run in runs:
        key = tuple(sorted((k, str(v)) for k, v in run["params"].items() if not is_seed_key(k)))
        groups.setdefault(key, []).append(run)
    out = []
    for members in groups.values():
        if len(members) < 2:
            continue
        stats = {}
        for m, k in SUMMARY:
            values = [v for v in (_metric(r, m, k) for r in members) if v is not None]
            if len(values) >= 2:
                stats[f"{m} {k}"] = {"mean": statistics.fmean(values), "std": statistics.stdev(values),
                                     "n": len(values)}
        seeds = [{k: v for k, v in r["params"].items() if is_seed_key(k)} for r in members]
        out.append({"runs": [r["name"] for r in members], "seeds": seeds, "stats": stats,
                    "includes_workspace": any(r["name"] == "workspace" for r in members)})
    out.sort(key=lambda g: not g["includes_workspace"])
    return out
