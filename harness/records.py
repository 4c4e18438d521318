"""Reproduction records (``docs/reproductions/<name>/``, written by ``harness record``): reading and validating
them, checking whether each still matches today's code and params, and the table of all of them.

A record keeps, per stage, the md5 its run's ``dvc.lock`` gave each code and config dependency and the params
values the stage read. A stage is stale when one of those files now hashes differently (harness/dvchash.py),
when today's params.yaml plus the record's profile give it other values, when dvc.yaml now runs it differently,
or when a stage it reads the outputs of is stale. Records go stale by design when the code moves on: the check
names them (``harness records``, the records table, ``make test``'s warnings) instead of failing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from harness.errors import HarnessError, ParamsError

RECORDS_DIR = Path("docs/reproductions")
RECORD_FILE = "record.json"
INDEX_FILE = "README.md"
SCHEMA = 1
# Every record folder holds these (plots/ too, when the report drew any).
RECORD_FILES = (RECORD_FILE, "README.md", "report.md", "report.html", "metrics.json", "params.diff.yaml", "dvc.lock")
RANKERS = (("sft", "SFT"), ("rl", "SFT + RL"))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StageRun(_Strict):
    status: str  # ran | cached (restored from DVC's run cache) | unchanged (outputs already current)
    seconds: float | None


class Stage(_Strict):
    cmd: str
    code: dict[str, str]  # code and config dependency -> md5 in dvc.lock (``<md5>.dir`` for a folder)
    artifacts: list[str]  # dependencies that are other stages' outputs
    params: dict[str, dict[str, Any]]  # params.yaml section -> the values the stage read
    after: list[str]  # stages whose outputs it reads


class Git(_Strict):
    harness_commit: str
    harness_dirty: bool
    upstream_pinned: str | None
    upstream_checked_out: str | None
    upstream_matches_pin: bool


class Data(_Strict):
    source: str
    category: str
    dir: str | None  # as the params gave it (a --data-dir override is recorded as such, its files by md5)
    dir_overridden: bool
    files: dict[str, str]  # path inside the data dir -> md5


class Outputs(_Strict):
    metrics_md5: str
    predictions: dict[str, str]  # model -> md5 of reports/eval/<model>/predictions.json


class Regeneration(_Strict):
    """A record written over an earlier one of the same name: did the run give the same bytes?"""

    previous_commit: str
    previous_date: str
    metrics_identical: bool
    predictions_identical: list[str]  # models whose predictions.json md5 is the earlier record's
    predictions_differ: list[str]  # models whose md5 differs, or that only one of the two records has


class Record(_Strict):
    schema_version: int
    name: str
    profile: str
    description: str
    overrides: dict[str, Any]  # dotted params set on top of the profile (--data-dir)
    command: str
    date: str
    wall_seconds: float
    cpu_seconds: float  # of every stage process: the wall time on idle cores is at least this / cores
    forced: bool
    git: Git
    data: Data
    base_model: dict[str, Any]
    machine: dict[str, Any]
    outputs: Outputs
    stage_runs: dict[str, StageRun]
    stages: dict[str, Stage]
    regenerated: Regeneration | None = None  # set when this run replaced an earlier record of the same name


def load_record(folder: Path) -> Record:
    """``folder/record.json``, validated, with the files it names; a problem is an error naming file and key."""
    from harness.io import read_json

    path = folder / RECORD_FILE
    if not path.is_file():
        raise HarnessError(f"{folder}: not a reproduction record (no {RECORD_FILE}); `harness record NAME` writes one")
    raw = read_json(path)
    if not isinstance(raw, dict):
        raise ParamsError(path, "(top level)", "must be a JSON object")
    try:
        rec = Record.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        raise ParamsError(path, ".".join(str(p) for p in err["loc"]) or "(top level)", err["msg"]) from None
    if rec.schema_version != SCHEMA:
        raise ParamsError(path, "schema_version", f"{rec.schema_version}: this harness reads version {SCHEMA}")
    if rec.name != folder.name:
        raise ParamsError(path, "name", f"{rec.name!r} but the folder is {folder.name!r}")
    for name in RECORD_FILES:
        if not (folder / name).is_file():
            raise HarnessError(f"{folder / name}: missing; every record holds {', '.join(RECORD_FILES)}")
    from harness.dvchash import file_md5

    if file_md5(folder / "metrics.json") != rec.outputs.metrics_md5:
        raise ParamsError(path, "outputs.metrics_md5", f"does not match {folder / 'metrics.json'} (edited by hand?)")
    for stage, st in rec.stages.items():
        unknown = [a for a in st.after if a not in rec.stages]
        if unknown:
            raise ParamsError(path, f"stages.{stage}.after", f"names no recorded stage: {unknown[0]}")
    return rec


def load_records(records_dir: Path) -> list[tuple[Path, Record]]:
    """Every record under ``records_dir`` (each sub-folder is one), by name."""
    if not records_dir.is_dir():
        return []
    return [(d, load_record(d)) for d in sorted(records_dir.iterdir()) if d.is_dir() and not d.name.startswith(".")]


def metrics_of(folder: Path) -> dict:
    from harness.io import read_json

    m = read_json(folder / "metrics.json")
    if not isinstance(m, dict) or not isinstance(m.get("sft"), dict) or not isinstance(m.get("protocol"), dict):
        raise ParamsError(folder / "metrics.json", "sft", "a metrics.json needs the sft and protocol blocks")
    return m


# --- staleness --------------------------------------------------------------------------------------------


def expected_params(rec: Record, root: Path) -> tuple[dict | None, str | None]:
    """Today's values for the record's run: ``root``'s params.yaml with the record's profile (as it reads today)
    and its overrides on top; (None, why) when that cannot be built."""
    from harness.params import load_yaml
    from harness.profiles import _merge, load_profile, merged_params

    try:
        merged = merged_params(load_profile(rec.profile, root / "profiles"), load_yaml(root / "params.yaml"))
    except HarnessError as e:
        return None, f"profile {rec.profile} cannot be applied today ({e})"
    for dotted, value in rec.overrides.items():
        nested: Any = value
        for part in reversed(dotted.split(".")):
            nested = {part: nested}
        merged = _merge(merged, nested)
    return merged, None


def dvc_yaml_stages(root: Path) -> dict[str, dict] | str:
    """Today's stages of ``root/dvc.yaml`` as ``{name: {"cmd", "deps"}}`` (``foreach`` expanded to name@item),
    or why they cannot be read."""
    from harness.params import load_yaml

    try:
        doc = load_yaml(root / "dvc.yaml")
    except HarnessError as e:
        return f"dvc.yaml unreadable ({e})"
    out: dict[str, dict] = {}
    for name, st in (doc.get("stages") or {}).items():
        if not isinstance(st, dict):
            continue
        if "foreach" in st:
            for item in st.get("foreach") or []:
                body = st.get("do") or {}
                fill = lambda s, item=item: str(s).replace("${item}", str(item))  # noqa: E731
                out[f"{name}@{item}"] = {"cmd": fill(body.get("cmd", "")),
                                         "deps": [fill(d) for d in body.get("deps") or []]}
        else:
            out[name] = {"cmd": str(st.get("cmd", "")), "deps": [str(d) for d in st.get("deps") or []]}
    return out


def _param_changes(section: str, recorded: dict, today: dict) -> list[str]:
    from harness.profiles import _flatten

    then, now = dict(_flatten(recorded, section + ".")), dict(_flatten(today, section + "."))
    changes = []
    for key in sorted(set(then) | set(now)):
        if key not in now:
            changes.append(f"{key} removed")
        elif key not in then:
            changes.append(f"{key} new ({now[key]!r})")
        elif then[key] != now[key]:
            changes.append(f"{key} {then[key]!r} -> {now[key]!r}")
    return changes


def stale_stages(rec: Record, root: Path) -> dict[str, list[str]]:
    """The record's stages that no longer match ``root`` (its code, params.yaml, profiles, dvc.yaml), each with
    its reasons; empty when the record still describes what the pipeline would run today."""
    from harness.dvchash import dep_md5, ignore_patterns

    patterns = ignore_patterns(root)
    params, why_not = expected_params(rec, root)
    today = dvc_yaml_stages(root)
    stale: dict[str, list[str]] = {}
    for name, st in rec.stages.items():
        reasons = []
        for path, md5 in st.code.items():
            now = dep_md5(root, path, patterns)
            if now != md5:
                reasons.append(f"{path} {'is gone' if now is None else 'changed'}")
        if params is None:
            reasons.append(str(why_not))
        else:
            for section, values in st.params.items():
                reasons += _param_changes(section, values, params.get(section) or {})
        if isinstance(today, str):
            reasons.append(today)
        elif name not in today:
            reasons.append("no longer a stage of dvc.yaml")
        else:
            if today[name]["cmd"].split() != st.cmd.split():
                reasons.append("its dvc.yaml cmd changed")
            deps_then, deps_now = set(st.code) | set(st.artifacts), set(today[name]["deps"])
            if deps_then != deps_now:
                diff = sorted(deps_now - deps_then) + sorted(deps_then - deps_now)
                reasons.append(f"its dvc.yaml deps changed ({', '.join(diff[:3])}{', ...' if len(diff) > 3 else ''})")
        if reasons:
            stale[name] = reasons
    changed = True
    while changed:  # a stage reading a stale stage's outputs would rerun too
        changed = False
        for name, st in rec.stages.items():
            ups = [a for a in st.after if a in stale]
            if ups and name not in stale:
                stale[name] = [f"after {', '.join(ups)}"]
                changed = True
    return {name: stale[name] for name in rec.stages if name in stale}


def staleness_line(stale: dict[str, list[str]]) -> str:
    """The records table's status cell."""
    if not stale:
        return "matches today's code"
    direct = [s for s, r in stale.items() if not r[0].startswith("after ")]
    downstream = len(stale) - len(direct)
    return f"stale: {', '.join(direct)}" + (f" (+{downstream} downstream)" if downstream else "")


# --- the table --------------------------------------------------------------------------------------------


def cell(row: dict) -> str:
    if row["reproduced"] is None:
        return "n/a"
    pct = f", {row['delta_pct']:+.1f}%" if row["delta_pct"] is not None else ""
    return f"{row['reproduced']:.4f} ({row['paper']:.4f}{pct})"


def figure_rows(rec: Record, folder: Path, targets_path: Path) -> list[tuple[str, dict, dict]]:
    """(ranker, HR@10 row, NDCG@10 row) for SFT, SFT + RL and each baseline the paper also ran, each beside
    the paper's figure for it (harness/report/paper.py's comparison)."""
    from harness.evaluate.baselines import BASELINES
    from harness.report.paper import load_targets, metric_row, paper_comparison

    targets = load_targets(targets_path)
    metrics = metrics_of(folder)
    cat = rec.data.category
    if cat not in targets.paper.categories:
        return []
    report = rec.stages["report"].params.get("report", {}) if "report" in rec.stages else {}
    tol = float(report.get("tolerance", 0.01))
    out = []
    for model, label in RANKERS:
        if metrics.get(model) is None:
            continue
        cmp = paper_comparison(targets, cat, {**metrics, "rl": metrics["rl"] if model == "rl" else None}, {}, {}, tol)
        rows = {r["metric"]: r for r in cmp["rows"]}
        out.append((label, rows["hr@10"], rows["ndcg@10"]))
    paper_rows = targets.paper.categories[cat]
    for b in BASELINES.values():
        got = (metrics.get("baselines") or {}).get(b.name)
        if b.paper and b.paper in paper_rows and isinstance(got, dict):
            ref = paper_rows[b.paper]
            out.append((f"{b.label} (baseline)", metric_row("hr@10", got.get("hr@10"), ref["hr@10"], tol),
                        metric_row("ndcg@10", got.get("ndcg@10"), ref["ndcg@10"], tol)))
    return out


def model_label(rec: Record) -> str:
    """The base model in a few words (a scratch model by its architecture and size)."""
    sft = rec.stages.get("sft")
    m = (sft.params.get("sft", {}).get("model") if sft else None) or {}
    source = m.get("source", rec.base_model.get("source", "?"))
    if source == "scratch":
        layers = m.get("num_layers", "?")
        return (f"scratch {m.get('architecture', '?')} ({layers} layer{'' if layers == 1 else 's'} × "
                f"{m.get('hidden_size', '?')}, no pretrained weights)")
    return str(source)


def protocol_labels(rec: Record, folder: Path, paper_beams: int) -> list[str]:
    """How the run's protocol relates to the paper's, from the record's params and metrics."""
    p = {s: v for st in rec.stages.values() for s, v in st.params.items()}
    metrics = metrics_of(folder)
    labels = []
    data = p.get("data", {})
    if data.get("upstream", {}).get("valid_as_train"):
        labels.append("valid split as train (no train CSV)")
    sid = p.get("sid", {})
    labels.append(f"{'shipped' if sid.get('method') == 'shipped' else sid.get('method', '?')} SIDs")
    sft = p.get("sft", {})
    if sft.get("mode", "full") != "full":
        labels.append(f"SFT {sft['mode']}")
    if sft.get("max_steps"):
        labels.append(f"SFT {sft['max_steps']} steps")
    elif "epochs" in sft:
        labels.append(f"SFT {sft['epochs']} epoch{'s' if sft['epochs'] != 1 else ''}")
    rl = p.get("rl", {})
    if rl.get("enabled") is False:
        labels.append("no RL")
    elif rl.get("max_prompts") is not None:
        labels.append(f"RL on {rl['max_prompts']} prompts")
    proto = metrics["protocol"]
    beams = proto.get("num_beams")
    labels.append(f"{beams} beams" + ("" if beams == paper_beams else f" (paper: {paper_beams})"))
    ev = p.get("evaluate", {})
    rows = proto.get("rows")
    labels.append(f"full test split ({rows:,} rows)" if ev.get("max_rows") is None else f"first {rows:,} test rows")
    return labels


def _short(sha: str | None) -> str:
    return sha[:7] if sha else "none"


def render_index(records: list[tuple[Path, Record]], root: Path, targets_path: Path) -> str:
    """docs/reproductions/README.md: one block of rows per record, then the stale records' reasons."""
    from harness.report.paper import load_targets

    paper_beams = load_targets(targets_path).paper.protocol.num_beams
    head = ["record", "category", "model", "ranker", "HR@10 (paper, Δ%)", "NDCG@10 (paper, Δ%)",
            "protocol differences", "date", "commit", "status"]
    lines = ["# Reproduction records", "",
             "Each folder is one `harness record PROFILE` run on real data: the rendered report, `metrics.json`, the "
             "params the profile changed, the run's `dvc.lock`, and `record.json` (harness commit, upstream pin, base "
             "model, data md5s, machine, wall time, predictions md5s). Figures are at SID level on the test split; "
             "the paper's figure for the same ranker and category is in brackets (`paper_targets.yaml`).", "",
             "Generated by `harness records` (and by `harness record`); do not edit by hand. *status* compares each "
             "record's stage code and params hashes with this checkout's: a stale record no longer describes what "
             "the code runs today (regenerate it with `harness record NAME`).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    stale_notes = []
    for folder, rec in records:
        stale = stale_stages(rec, root)
        first = True
        for ranker, hr, ndcg in figure_rows(rec, folder, targets_path) or [("n/a", None, None)]:
            cells = [f"[{rec.name}]({rec.name}/README.md)", rec.data.category.replace("_", " "), model_label(rec),
                     ranker, cell(hr) if hr else "no paper figures", cell(ndcg) if ndcg else ""]
            cells += ([", ".join(protocol_labels(rec, folder, paper_beams)), rec.date[:10],
                       _short(rec.git.harness_commit), staleness_line(stale)] if first else ["", "", "", ""])
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
            first = False
        if stale:
            stale_notes.append(f"- **{rec.name}**: " + "; ".join(
                f"{s}: {', '.join(r[:3])}{' ...' if len(r) > 3 else ''}" for s, r in stale.items()))
    lines += ["", "## Staleness", ""]
    lines += stale_notes or ["Every record matches this checkout's code and params."]
    return "\n".join(lines) + "\n"


def write_index(root: Path, records_dir: Path | None = None) -> tuple[Path, list[tuple[Path, Record]]]:
    """(Re)write the records table from the records on disk; returns its path and the records."""
    from harness.io import write_text
    from harness.report.paper import TARGETS

    records_dir = records_dir or root / RECORDS_DIR
    records = load_records(records_dir)
    path = records_dir / INDEX_FILE
    write_text(path, render_index(records, root, root / TARGETS))
    return path, records


def dumps(rec: Record) -> str:
    return json.dumps(rec.model_dump(), indent=2, ensure_ascii=False) + "\n"
