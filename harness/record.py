"""``harness record NAME``: run profile NAME as a DVC experiment and keep what it made, with everything needed to
check it later, in ``docs/reproductions/<name>/``: the rendered report and its plots, ``metrics.json``, the
params the profile changed, the run's ``dvc.lock``, and ``record.json`` (harness commit, upstream pin, base model,
md5s of the data files read and of the predictions, machine, date, wall and per-stage times, and per stage the
code/params hashes the staleness check in harness/records.py compares with today's).

A record names a commit, so the checkout must be clean. The record is written into a temporary folder and moved
into place only when complete. Afterwards the tracked files the run rewrote (params.yaml, dvc.lock, the committed
report) are put back as committed: the run lives on as its experiment (``dvc exp show``) and as the record.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import resource
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from harness.errors import HarnessError, ParamsError
from harness.records import RECORD_FILE, RECORDS_DIR, SCHEMA, Record, Regeneration, dvc_yaml_stages, write_index

REPORT_FILES = ("reports/report.md", "reports/report.html")
PLOTS = "reports/plots"
METRICS = "reports/metrics.json"
EVAL = "reports/eval"
_MARKERS = ((re.compile(r"Running stage '([^']+)'"), "ran"),
            (re.compile(r"Stage '([^']+)' is cached - skipping run"), "cached"),
            (re.compile(r"Stage '([^']+)' didn't change, skipping"), "unchanged"))
_LOCK_UPDATE = re.compile(r"Updating lock file|Generating lock file")
DATA_SUBDIRS = ("train", "valid", "test", "info", "index")


def _repo(root: Path):
    from git import InvalidGitRepositoryError, NoSuchPathError, Repo

    try:
        return Repo(root)
    except (InvalidGitRepositoryError, NoSuchPathError):
        raise HarnessError(f"{root}: not a git checkout (a record names the commit it was made on)") from None


def changed_paths(repo) -> list[str]:
    """Tracked files that differ from HEAD and untracked files git does not ignore (submodules left out)."""
    out = repo.git.status("--porcelain", "--untracked-files=all", "--ignore-submodules=all", "-z")
    paths = []
    for entry in out.split("\0"):
        if entry:
            paths.append(entry[3:])
    return [p for p in paths if p]


def _restore(repo, root: Path, keep: Path) -> tuple[list[str], list[str]]:
    """Put the tracked files the run rewrote back as committed (the tree was clean before it); returns them and
    the new untracked files it left, which are not deleted (``keep``, the records folder, is left out of both)."""
    keep_rel = keep.relative_to(root).as_posix().rstrip("/") + "/"
    changed = [p for p in changed_paths(repo) if not (p + "/").startswith(keep_rel)]
    tracked = set(repo.git.ls_files("-z", "--", *changed).split("\0")) - {""} if changed else set()
    if tracked:
        repo.git.checkout("HEAD", "--", *sorted(tracked))
    return sorted(tracked), sorted(set(changed) - tracked)


def data_files(data_dir: Path, category: str) -> dict[str, str]:
    """md5 of each file of ``category`` in an upstream-format data dir (train/valid/test CSVs, info, index): the
    record names the data by content, not by where it lay on the machine."""
    from harness.dvchash import file_md5

    files = {}
    for sub in DATA_SUBDIRS:
        d = data_dir / sub
        if d.is_dir():
            for f in sorted(d.iterdir()):
                if f.is_file() and (f.name.startswith(category + "_") or f.name.startswith(category + ".")):
                    files[f"{sub}/{f.name}"] = file_md5(f)
    return files


def lock_stages(lock: dict, path: Path, names: list[str]) -> dict[str, dict]:
    """Per stage of a ``dvc.lock`` that dvc.yaml defines (``names``; a lock keeps entries of stages since
    removed): its cmd, its code/config deps with their md5s, the deps that are other stages' outputs, its params
    values, and the stages it reads the outputs of."""
    stages = lock.get("stages")
    if not isinstance(stages, dict) or not stages:
        raise ParamsError(path, "stages", "no stages in the run's lock file")
    stages = {n: stages[n] for n in names if n in stages}  # in dvc.yaml's order
    outs = {name: [o["path"] for o in st.get("outs") or []] for name, st in stages.items()}

    def overlaps(a: str, b: str) -> bool:
        return a == b or a.startswith(b.rstrip("/") + "/") or b.startswith(a.rstrip("/") + "/")

    result = {}
    for name, st in stages.items():
        code, artifacts, after = {}, [], []
        for dep in st.get("deps") or []:
            producers = [s for s, paths in outs.items() if s != name and any(overlaps(dep["path"], o) for o in paths)]
            if producers:
                artifacts.append(dep["path"])
                after += [s for s in producers if s not in after]
            else:
                code[dep["path"]] = dep["md5"]
        params = (st.get("params") or {}).get("params.yaml") or {}
        result[name] = {"cmd": st["cmd"] if isinstance(st["cmd"], str) else " && ".join(st["cmd"]), "code": code,
                        "artifacts": artifacts, "params": params, "after": after}
    return result


def _run_experiment(cmd: list[str], root: Path, say: Callable[[str], None]) -> tuple[int, dict[str, dict]]:
    """Run ``dvc exp run``, echoing its output, and time each stage from DVC's own per-stage lines."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    stages: dict[str, dict] = {}
    current: tuple[str, float] | None = None

    def close(now: float) -> None:
        nonlocal current
        if current:
            stages[current[0]]["seconds"] = round(now - current[1], 1)
            current = None

    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE,  # noqa: S603 - an argument list
                            stderr=subprocess.STDOUT, text=True, bufsize=1)
    assert proc.stdout is not None
    for line in proc.stdout:
        say(line.rstrip("\n"))
        now = time.monotonic()
        if _LOCK_UPDATE.search(line):
            close(now)
        for pattern, status in _MARKERS:
            m = pattern.search(line)
            if m:
                close(now)
                stages[m.group(1)] = {"status": status, "seconds": None if status != "ran" else 0.0}
                if status == "ran":
                    current = (m.group(1), now)
    code = proc.wait()
    close(time.monotonic())
    return code, stages


def _children_cpu() -> float:
    """User + system CPU seconds of every finished child process (the stages under dvc): unlike wall time, it
    does not grow when other work shares the CPU."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _md5_or_none(path: Path) -> str | None:
    from harness.dvchash import file_md5

    return file_md5(path) if path.is_file() else None


def _base_model(root: Path) -> dict:
    """What training started from (the SFT log's record); a pulled model's manifest, or a scratch model's config."""
    from harness.io import read_json
    from harness.pull_model import read_manifest

    log = read_json(root / "models/sft/training_log.json")
    base = dict(log.get("base") or {"source": log.get("base_model")})
    if base.get("source") == "scratch":
        config = read_json(root / "models/sft/config.json")
        base["config"] = {k: v for k, v in config.items() if k not in ("transformers_version", "torch_dtype", "dtype")}
    elif base.get("manifest") and base.get("path"):
        manifest_dir = Path(base["path"])
        manifest = read_manifest(manifest_dir if manifest_dir.is_absolute() else root / manifest_dir)
        if manifest is not None:
            base["manifest_json"] = manifest
    return base


def _params_diff(base: dict, merged: dict) -> dict:
    """The keys ``merged`` sets differently from ``base``, nested as in params.yaml."""
    out: dict = {}
    for k, v in merged.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            sub = _params_diff(base[k], v)
            if sub:
                out[k] = sub
        elif base.get(k, object()) != v:
            out[k] = v
    return out


def record(name: str, root: Path = Path("."), data_dir: str | None = None, force: bool = False,
           say: Callable[[str], None] = print) -> Path:
    """Run profile ``name`` and write ``docs/reproductions/<name>/``; returns that folder."""
    import yaml

    from harness.io import atomic_dir, read_json, write_json, write_text
    from harness.params import load_yaml, parse_yaml
    from harness.profiles import (
        PROFILES_DIR,
        _merge,
        check_no_interrupted_experiment,
        committed_params,
        exp_command,
        load_profile,
        merged_params,
    )
    from harness.provenance import git_record, hardware
    from harness.report.paper import TARGETS

    root = Path(root).resolve()
    repo = _repo(root)
    check_no_interrupted_experiment(root)
    profile = load_profile(name, root / PROFILES_DIR)
    overrides: dict = {}
    if data_dir is not None:
        overrides["data.upstream.dir"] = data_dir
        profile = dataclasses.replace(profile, params=_merge(profile.params, {"data": {"upstream": {"dir": data_dir}}}))
    base = committed_params(root)
    merged = merged_params(profile, base)
    if data_dir is not None and merged["data"].get("source") != "upstream":
        raise HarnessError(f"--data-dir: profile {name} reads data.source {merged['data'].get('source')!r}, not an "
                           "upstream-format data dir")
    dirty = changed_paths(repo)
    if dirty:
        raise HarnessError(f"{root}: the checkout has changes ({_some(dirty, 5)}); a record names a commit: commit "
                           "or remove them first")
    gitrec = git_record(root)  # before the run rewrites params.yaml and dvc.lock
    started = datetime.now(timezone.utc)
    cmd = exp_command(profile, base, load_yaml(root / "params.yaml"))
    cmd[cmd.index("-n") + 1] = f"{name}-record-{started:%Y%m%dT%H%M%S}"  # unique: reruns on one commit never clash
    if force:
        cmd.insert(3, "--force")
    machine = dict(hardware())
    machine["load_average_before"] = round(os.getloadavg()[0], 2)
    records_dir = root / RECORDS_DIR
    target = records_dir / name
    say(f"record {name}: {cmd.count('-S')} params set, running {' '.join(cmd[:5])} ...")
    t0, cpu0 = time.monotonic(), _children_cpu()
    try:
        code, stage_runs = _run_experiment(cmd, root, say)
        wall, cpu = round(time.monotonic() - t0, 1), round(_children_cpu() - cpu0, 1)
        if code:
            raise HarnessError(f"record {name}: `dvc exp run` failed (exit {code}); no record written")
        machine["load_average_after"] = round(os.getloadavg()[0], 2)
        lock_path = root / "dvc.lock"
        lock = parse_yaml(lock_path.read_text(encoding="utf-8")) or {}
        defined = dvc_yaml_stages(root)
        if isinstance(defined, str):
            raise HarnessError(defined)
        stages = lock_stages(lock, lock_path, list(defined))
        for st in stages:
            stage_runs.setdefault(st, {"status": "unchanged", "seconds": None})
        summary = read_json(root / "data/dataset/summary.json")
        data = merged["data"]
        upstream = data.get("upstream") or {}
        data_rec = {"source": data["source"], "category": summary.get("name", upstream.get("category", "")),
                    "dir": upstream.get("dir") if data["source"] == "upstream" else None,
                    "dir_overridden": data_dir is not None, "files": {}}
        if data["source"] == "upstream":
            d = Path(upstream["dir"])
            data_rec["files"] = data_files(d if d.is_absolute() else root / d, upstream["category"])
            if data_dir is not None:
                data_rec["dir"] = "--data-dir (its files by md5 below)"
        predictions = {}
        for model_dir in sorted((root / EVAL).iterdir()) if (root / EVAL).is_dir() else []:
            md5 = _md5_or_none(model_dir / "predictions.json")
            if md5:
                predictions[model_dir.name] = md5
        metrics_md5 = _md5_or_none(root / METRICS)
        regen = regeneration(target / RECORD_FILE, metrics_md5, predictions)
        rec = Record.model_validate({
            "schema_version": SCHEMA, "name": name, "profile": profile.name, "description": profile.description,
            "overrides": overrides,
            "command": f"harness record {name}" + (f" --data-dir {data_dir}" if data_dir else "")
                       + (" --force" if force else ""),
            "date": started.isoformat(timespec="seconds"), "wall_seconds": wall, "cpu_seconds": cpu,
            "forced": force,
            "git": {k: gitrec[k] for k in ("harness_commit", "harness_dirty", "upstream_pinned",
                                           "upstream_checked_out", "upstream_matches_pin")},
            "data": data_rec, "base_model": _base_model(root), "machine": machine,
            "outputs": {"metrics_md5": metrics_md5, "predictions": predictions},
            "stage_runs": stage_runs, "stages": stages, "regenerated": regen,
        })
        with atomic_dir(target) as tmp:
            for rel in REPORT_FILES:
                shutil.copyfile(root / rel, tmp / Path(rel).name)
            if (root / PLOTS).is_dir():
                shutil.copytree(root / PLOTS, tmp / "plots")
            shutil.copyfile(root / METRICS, tmp / "metrics.json")
            shutil.copyfile(lock_path, tmp / "dvc.lock")
            write_text(tmp / "params.diff.yaml",
                       f"# params profile {name} changed against params.yaml at {gitrec['harness_commit'][:7]}"
                       + (" (with --data-dir)" if data_dir else "") + "\n"
                       + yaml.safe_dump(_params_diff(base, merged), sort_keys=False))
            write_json(tmp / RECORD_FILE, rec.model_dump())
            write_text(tmp / "README.md", record_page(rec, tmp, root / TARGETS))
    finally:
        restored, left = _restore(repo, root, records_dir)
    if restored:
        say(f"record {name}: put back as committed: {_some(restored)} (data/ and models/ keep this run's outputs "
            "until `dvc checkout` or `make repro`)")
    if left:
        say(f"record {name}: new files the run wrote, not in the commit (left in place): {_some(left)}")
    if rec.regenerated:
        say(f"record {name}: {regeneration_line(rec.regenerated)}")
    index, _ = write_index(root)
    say(f"record {name}: {target.relative_to(root)}/ ({wall:.0f} s), table {index.relative_to(root)}")
    return target


def regeneration(previous: Path, metrics_md5: str | None, predictions: dict[str, str]) -> dict | None:
    """How this run's outputs compare with the record it replaces (``previous``: its record.json), or None when
    there is none. Read leniently: an earlier record of another schema still has its commit and md5s."""
    import json

    try:
        old = json.loads(previous.read_text(encoding="utf-8"))
        commit, date, outputs = old["git"]["harness_commit"], old["date"], old["outputs"]
        old_preds = dict(outputs.get("predictions") or {})
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    same = sorted(m for m, md5 in predictions.items() if old_preds.get(m) == md5)
    return {"previous_commit": commit, "previous_date": date,
            "metrics_identical": metrics_md5 is not None and outputs.get("metrics_md5") == metrics_md5,
            "predictions_identical": same,
            "predictions_differ": sorted((set(predictions) | set(old_preds)) - set(same))}


def regeneration_line(r: Regeneration) -> str:
    """One sentence on a regeneration, for the console and the record's page."""
    what = ("identical `metrics.json`" if r.metrics_identical else "a different `metrics.json`")
    preds = (f"identical predictions ({', '.join(r.predictions_identical)})" if r.predictions_identical else "")
    differ = (f"different predictions ({', '.join(r.predictions_differ)})" if r.predictions_differ else "")
    return (f"regenerated over the record of commit `{r.previous_commit[:12]}` ({r.previous_date}): "
            + ", ".join(x for x in (what, preds, differ) if x) + " (md5s)")


def _data_step(rec: Record) -> list[str]:
    if rec.data.source != "upstream":
        return []
    if rec.data.dir_overridden:
        return ["# --data-dir: an upstream-format data dir whose files have the md5s below"]
    return ["make upstream          # upstream's data/Amazon at the pinned commit"]


def _some(paths: list[str], n: int = 6) -> str:
    return ", ".join(paths[:n]) + (f" and {len(paths) - n} more" if len(paths) > n else "")


def record_page(rec: Record, folder: Path, targets_path: Path) -> str:
    """The record's own README: its figures beside the paper's, how to regenerate it, and its hashes."""
    from harness.records import cell, figure_rows, model_label, protocol_labels
    from harness.report.paper import load_targets

    paper_beams = load_targets(targets_path).paper.protocol.num_beams

    lines = [f"# {rec.name}: {rec.data.category.replace('_', ' ')}", "", rec.description + ".", "",
             f"Made by `{rec.command}` on commit `{rec.git.harness_commit}` (upstream pinned at "
             f"`{rec.git.upstream_pinned or 'none'}`), {rec.date}. Full report: [report.md](report.md) "
             "([HTML](report.html)); the records table: [../README.md](../README.md).", "",
             "| ranker | HR@10 (paper, Δ%) | NDCG@10 (paper, Δ%) |", "|---|---|---|"]
    for ranker, hr, ndcg in figure_rows(rec, folder, targets_path):
        lines.append(f"| {ranker} | {cell(hr)} | {cell(ndcg)} |")
    m = rec.machine
    gpu = ", ".join(m.get("gpu_names") or []) or "no GPU"
    lines += ["", f"Model: {model_label(rec)}. Protocol: {', '.join(protocol_labels(rec, folder, paper_beams))}.", "",
              "## Regenerate", "",
              "```", f"git checkout {rec.git.harness_commit[:12]}", *_data_step(rec), rec.command, "```", "",
              "A regeneration matches when its `metrics.json` and predictions have the md5s below."
              + (f" This run {regeneration_line(rec.regenerated)}." if rec.regenerated else ""), "",
              "## Run", "",
              f"- machine: {m.get('cpu_model')}, {m.get('cpu_count')} cores, {m.get('memory_gib')} GiB, {gpu}; load "
              f"average {m.get('load_average_before')} before the run, {m.get('load_average_after')} after "
              "(the CPU may have been shared)",
              f"- wall time {rec.wall_seconds / 60:.1f} min, CPU time {rec.cpu_seconds / 60:.1f} min (all stage "
              "processes)" + ("; every stage forced to run" if rec.forced else ""),
              "", "| stage | how | seconds |", "|---|---|---|"]
    for stage, run in rec.stage_runs.items():
        lines.append(f"| {stage} | {run.status} | {'' if run.seconds is None else f'{run.seconds:.0f}'} |")
    lines += ["", "## Hashes", "", f"- metrics.json md5 `{rec.outputs.metrics_md5}`"]
    lines += [f"- reports/eval/{k}/predictions.json md5 `{v}`" for k, v in rec.outputs.predictions.items()]
    lines += [f"- data `{k}` md5 `{v}`" for k, v in rec.data.files.items()]
    base = rec.base_model
    lines += [f"- base model: {base.get('source')}"
              + (f" {base.get('repo_id')}@{base.get('commit')} (manifest sha256 `{base.get('manifest_sha256')}`)"
                 if base.get("manifest") else f" ({base.get('note', 'no manifest')})")]
    return "\n".join(lines) + "\n"
