"""Reproduction records (docs/reproductions/): every committed one is well formed and its staleness is reported
(a warning in `make test`'s summary, never a failure: records go stale by design when the code moves on); the
checker names a record and stage whose code changed; `harness record` on a small DVC pipeline (real `dvc exp
run`, stages that are short scripts) writes a complete record, puts the workspace back as committed, and
refuses a dirty checkout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml

from harness.errors import HarnessError, ParamsError
from harness.records import RECORD_FILES, RECORDS_DIR, load_record, load_records, metrics_of, stale_stages
from tests.conftest import REPO

COMMITTED = REPO / RECORDS_DIR
EXPECTED_RECORDS = ("industrial-cpu", "office-cpu")


class StaleRecordWarning(UserWarning):
    """A committed record whose stages no longer match today's code or params (regenerate: harness record)."""


def test_committed_records_are_well_formed_and_stale_ones_are_reported():
    records = load_records(COMMITTED)  # a malformed record fails here, naming its file and key
    names = [rec.name for _, rec in records]
    assert set(EXPECTED_RECORDS) <= set(names), names
    index = (COMMITTED / "README.md").read_text(encoding="utf-8")
    for folder, rec in records:
        assert f"[{rec.name}]({rec.name}/README.md)" in index, f"{rec.name} is missing from the records table"
        m = metrics_of(folder)
        assert m["protocol"]["num_beams"] == 50 and m["protocol"]["split"] == "test"
        assert set(rec.outputs.predictions) == {"sft", "rl"}
        report = (folder / "report.md").read_text(encoding="utf-8")
        for link in _plot_links(report):
            assert (folder / link).is_file(), f"{folder / 'report.md'} links {link}, which the record lacks"
        stale = stale_stages(rec, REPO)
        if stale:
            lines = "; ".join(f"{stage} ({', '.join(reasons[:2])})" for stage, reasons in stale.items())
            warnings.warn(StaleRecordWarning(f"reproduction record {rec.name} is stale: {lines}"), stacklevel=1)


def _plot_links(markdown: str) -> list[str]:
    import re

    return sorted(set(re.findall(r"\]\((plots/[^)\s]+)\)", markdown)))


def _copy_tree(dest: Path) -> Path:
    """The files the records' stages hash, copied (bytecode left out, as .dvcignore leaves it out)."""
    for name in ("harness", "checks", "configs", "report_templates", "profiles"):
        shutil.copytree(REPO / name, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("dvc.yaml", "params.yaml", "paper_targets.yaml", ".dvcignore"):
        shutil.copy(REPO / name, dest / name)
    return dest


def test_changing_a_stage_code_file_makes_the_checker_name_that_record_and_stage(tmp_path):
    folder = COMMITTED / EXPECTED_RECORDS[0]
    records = tmp_path / "records"
    shutil.copytree(folder, records / folder.name)
    rec = load_record(records / folder.name)
    root = _copy_tree(tmp_path / "tree")
    before = stale_stages(rec, root)
    # a code dependency that still matches (the record may be stale elsewhere), preferring a stage's own file
    fresh = [(stage, path) for stage, st in rec.stages.items() for path in st.code
             if not any(r.startswith(path + " ") for r in before.get(stage, []))]
    if not fresh:
        pytest.skip(f"every code dependency of {rec.name} has changed since it was made")
    stage, path = next(((s, p) for s, p in fresh if s == "sft" and p.startswith("harness/train")), fresh[0])
    target = root / path
    if target.is_dir():
        target = next(p for p in sorted(target.rglob("*")) if p.is_file())
    target.write_text(target.read_text(encoding="utf-8") + "\n# changed\n", encoding="utf-8")
    after = stale_stages(rec, root)
    assert f"{path} changed" in after[stage], after.get(stage)
    for downstream, st in rec.stages.items():
        if stage in st.after:
            assert downstream in after, downstream


# ---------------------------------------------------------------- harness record on a small real DVC pipeline

STAGE_SCRIPT = '''
import json, sys
from pathlib import Path
stage = sys.argv[1]
params = json.loads(json.dumps(__import__("yaml").safe_load(open("params.yaml"))))
def write(path, obj):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj, indent=1))
if stage == "data":
    write("data/dataset/summary.json", {"name": "Industrial_and_Scientific"})
elif stage == "evaluate":
    beams = params["evaluate"]["num_beams"]
    write("reports/eval/sft/predictions.json", [{"predict": [f"<a_{i}>" for i in range(beams)]}])
    write("reports/eval/rl/predictions.json", [{"predict": [f"<a_{i}>" for i in range(beams)][::-1]}])
elif stage == "report":
    preds = json.loads(Path("reports/eval/sft/predictions.json").read_text())
    beams = len(preds[0]["predict"])
    block = {"hr@10": 0.1 + beams / 1000, "ndcg@10": 0.05}
    write("reports/metrics.json", {"sft": block, "rl": dict(block, **{"hr@10": 0.12}), "baselines": {},
                                   "protocol": {"split": "test", "num_beams": beams, "rows": 1}})
    write("reports/plots/hr_at_k.png", "not a real png")
    write("reports/report.md", "# report\\n\\n![HR@K](plots/hr_at_k.png)\\n")
    write("reports/report.html", '<img src="plots/hr_at_k.png">')
'''
SFT_SCRIPT = '''
import json, yaml
from pathlib import Path
epochs = yaml.safe_load(open("params.yaml"))["sft"]["epochs"]
Path("models/sft").mkdir(parents=True, exist_ok=True)
Path("models/sft/config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 16, "epochs": epochs}))
Path("models/sft/training_log.json").write_text(json.dumps(
    {"base": {"source": "scratch", "architecture": "llama", "manifest": False, "note": "config-initialised"}}))
'''
DVC_YAML = {"stages": {
    "data": {"cmd": "python code/stage.py data", "deps": ["code/stage.py"], "params": ["data"],
             "outs": ["data/dataset"]},
    "sft": {"cmd": "python code/sft.py", "deps": ["code/sft.py", "code/lib", "data/dataset"], "params": ["sft"],
            "outs": ["models/sft"]},
    "evaluate": {"cmd": "python code/stage.py evaluate", "deps": ["code/stage.py", "models/sft"],
                 "params": ["evaluate"], "outs": ["reports/eval/sft", "reports/eval/rl"]},
    "report": {"cmd": "python code/stage.py report", "deps": ["code/stage.py", "reports/eval", "paper_targets.yaml"],
               "params": ["report"],
               "outs": [{p: {"cache": False}} for p in ("reports/metrics.json", "reports/report.md",
                                                        "reports/report.html", "reports/plots")]},
}}
MINI = {"description": "a small pipeline", "hardware": "any CPU",
        "params": {"sft": {"epochs": 2}, "evaluate": {"num_beams": 12}}}


def _sh(cwd: Path, *cmd: str, ok: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(REPO), "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if ok:
        assert r.returncode == 0, f"{' '.join(cmd)}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Path:
    """A committed project whose default run is in dvc.lock, then `harness record mini` on it."""
    root = tmp_path_factory.mktemp("mini")
    (root / "code/lib/__pycache__").mkdir(parents=True)
    (root / "code/stage.py").write_text(STAGE_SCRIPT)
    (root / "code/sft.py").write_text(SFT_SCRIPT)
    (root / "code/lib/util.py").write_text("X = 1\n")
    (root / "code/lib/__pycache__/util.cpython-312.pyc").write_bytes(b"bytecode is not code")
    (root / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML, sort_keys=False))
    (root / "profiles").mkdir()
    (root / "profiles/mini.yaml").write_text(yaml.safe_dump(MINI, sort_keys=False))
    for name in ("params.yaml", "paper_targets.yaml", ".dvcignore"):
        shutil.copy(REPO / name, root / name)
    (root / ".gitignore").write_text("__pycache__/\n")
    _sh(root, "git", "init", "-q", "-b", "main")
    _sh(root, "dvc", "init", "-q")
    _sh(root, "dvc", "config", "core.analytics", "false")
    _sh(root, "dvc", "repro", "-q")
    _sh(root, "git", "add", "-A")
    _sh(root, "git", "commit", "-qm", "mini pipeline, default run")
    r = _sh(root, sys.executable, "-m", "harness.cli", "record", "mini")
    assert "record mini: docs/reproductions/mini/" in r.stdout
    return root


def test_record_writes_a_complete_record_and_puts_the_workspace_back(recorded):
    folder = recorded / RECORDS_DIR / "mini"
    for name in (*RECORD_FILES, "plots/hr_at_k.png"):
        assert (folder / name).is_file(), name
    rec = load_record(folder)
    head = _sh(recorded, "git", "rev-parse", "HEAD").stdout.strip()
    assert rec.git.harness_commit == head and not rec.git.harness_dirty
    assert rec.profile == "mini" and rec.data.category == "Industrial_and_Scientific"
    assert yaml.safe_load((folder / "params.diff.yaml").read_text()) == MINI["params"]
    assert {s: r.status for s, r in rec.stage_runs.items()} == {"data": "unchanged", "sft": "ran",
                                                               "evaluate": "ran", "report": "ran"}
    assert rec.stages["sft"].code.keys() == {"code/sft.py", "code/lib"}
    assert rec.stages["sft"].after == ["data"] and rec.stages["report"].after == ["evaluate"]
    assert rec.stages["evaluate"].params == {"evaluate": yaml.safe_load((recorded / "params.yaml").read_text())
                                             ["evaluate"] | {"num_beams": 12}}
    assert rec.base_model["config"]["epochs"] == 2  # the scratch model's config, from the run itself
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["protocol"]["num_beams"] == 12
    from harness.dvchash import file_md5

    lock = yaml.safe_load((folder / "dvc.lock").read_text())
    sft_out = lock["stages"]["sft"]["outs"][0]["md5"]
    assert sft_out.endswith(".dir")
    assert rec.outputs.predictions == {m: file_md5(recorded / f"reports/eval/{m}/predictions.json")
                                       for m in ("rl", "sft")}
    # params.yaml, dvc.lock and the committed report are back as committed; only the records folder is new
    status = _sh(recorded, "git", "status", "--porcelain", "--untracked-files=all").stdout.split("\n")
    assert all(line[3:].startswith("docs/reproductions/") for line in status if line), status
    index = (recorded / RECORDS_DIR / "README.md").read_text()
    row = next(line for line in index.splitlines() if line.startswith("| [mini](mini/README.md)"))
    assert "SFT" in row and "0.1120 (0.1586, -29.4%)" in row and "matches today's code" in row
    assert "| SFT + RL | 0.1200 (0.1586, -24.3%)" in index


def _records_cli(root: Path, monkeypatch):
    """`harness records` run in ``root`` (in-process: the same typer app the console script runs)."""
    from typer.testing import CliRunner

    from harness.cli import app

    monkeypatch.chdir(root)
    return CliRunner().invoke(app, ["records"], catch_exceptions=False)


def test_record_is_fresh_then_names_the_stage_whose_code_or_params_changed(recorded, tmp_path, monkeypatch):
    root = tmp_path / "tree"
    shutil.copytree(recorded, root, ignore=shutil.ignore_patterns(".git", ".dvc"))
    rec = load_record(root / RECORDS_DIR / "mini")
    assert stale_stages(rec, root) == {}  # our hashes are DVC's: a file, a folder, bytecode left out
    (root / "code/lib/__pycache__/other.pyc").write_bytes(b"more bytecode")
    assert stale_stages(rec, root) == {}
    (root / "code/sft.py").write_text(SFT_SCRIPT + "# changed\n")
    assert stale_stages(rec, root) == {"sft": ["code/sft.py changed"], "evaluate": ["after sft"],
                                       "report": ["after evaluate"]}
    (root / "code/sft.py").write_text(SFT_SCRIPT)
    (root / "profiles/mini.yaml").write_text(yaml.safe_dump({**MINI, "params": {"sft": {"epochs": 3},
                                                                               "evaluate": {"num_beams": 12}}}))
    assert stale_stages(rec, root)["sft"] == ["sft.epochs 2 -> 3"]
    r = _records_cli(root, monkeypatch)
    assert r.exit_code == 0 and "mini: STALE" in r.stdout and "sft: sft.epochs 2 -> 3" in r.stdout
    assert "stale: sft (+2 downstream)" in (root / RECORDS_DIR / "README.md").read_text()


def test_a_malformed_record_is_an_error_naming_file_and_key_and_no_table_is_written(recorded, tmp_path,
                                                                                    monkeypatch):
    records = tmp_path / "records"
    shutil.copytree(recorded / RECORDS_DIR, records)
    doc = json.loads((records / "mini/record.json").read_text())
    del doc["outputs"]
    (records / "mini/record.json").write_text(json.dumps(doc))
    with pytest.raises(ParamsError) as e:
        load_record(records / "mini")
    assert e.value.key == "outputs" and "record.json" in str(e.value)
    (records / "mini/metrics.json").write_text("{}")
    doc["outputs"] = json.loads((recorded / RECORDS_DIR / "mini/record.json").read_text())["outputs"]
    (records / "mini/record.json").write_text(json.dumps(doc))
    with pytest.raises(ParamsError, match="outputs.metrics_md5"):
        load_record(records / "mini")
    root = tmp_path / "tree"
    shutil.copytree(recorded, root, ignore=shutil.ignore_patterns(".git", ".dvc"))
    (root / RECORDS_DIR / "mini/metrics.json").write_text("{}")  # hand-edited figures
    before = (root / RECORDS_DIR / "README.md").read_bytes()
    r = _records_cli(root, monkeypatch)
    assert r.exit_code == 2 and "metrics_md5" in r.stderr
    assert (root / RECORDS_DIR / "README.md").read_bytes() == before


def test_record_refuses_a_dirty_checkout_an_unknown_profile_and_a_data_dir_for_synthetic_data(recorded):
    from harness.record import record

    (recorded / "code/sft.py").write_text(SFT_SCRIPT + "# uncommitted\n")
    try:
        with pytest.raises(HarnessError, match="code/sft.py"):
            record("mini", recorded, say=lambda line: None)
    finally:
        (recorded / "code/sft.py").write_text(SFT_SCRIPT)
    with pytest.raises(HarnessError, match="profile 'nope' not found"):
        record("nope", recorded, say=lambda line: None)
    with pytest.raises(HarnessError, match="--data-dir: profile mini reads data.source 'synthetic'"):
        record("mini", recorded, data_dir="elsewhere", say=lambda line: None)


def test_a_record_written_over_an_earlier_one_says_whether_its_outputs_are_identical(recorded, tmp_path):
    """`harness record NAME` again, every stage forced to run: the same bytes, said in the console, the record and
    its page; then a profile change that moves the metrics is reported as different, model by model."""
    root = tmp_path / "again"
    shutil.copytree(recorded, root)
    _sh(root, "git", "add", "-A")
    _sh(root, "git", "commit", "-qm", "the first record")
    first = load_record(root / RECORDS_DIR / "mini")
    assert first.regenerated is None  # nothing to compare the first one with
    r = _sh(root, sys.executable, "-m", "harness.cli", "record", "mini", "--force")
    rec = load_record(root / RECORDS_DIR / "mini")
    assert rec.forced and {s.status for s in rec.stage_runs.values()} == {"ran"}
    regen = rec.regenerated
    assert regen.previous_commit == first.git.harness_commit and regen.previous_date == first.date
    assert regen.metrics_identical and regen.predictions_identical == ["rl", "sft"] and regen.predictions_differ == []
    line = f"regenerated over the record of commit `{first.git.harness_commit[:12]}`"
    assert line in r.stdout and "identical `metrics.json`" in r.stdout
    assert line in (root / RECORDS_DIR / "mini/README.md").read_text()

    (root / "profiles/mini.yaml").write_text(yaml.safe_dump({**MINI, "params": {"sft": {"epochs": 2},
                                                                               "evaluate": {"num_beams": 11}}}))
    _sh(root, "git", "add", "-A")
    _sh(root, "git", "commit", "-qm", "11 beams")
    r = _sh(root, sys.executable, "-m", "harness.cli", "record", "mini")
    regen = load_record(root / RECORDS_DIR / "mini").regenerated
    assert not regen.metrics_identical and "a different `metrics.json`" in r.stdout
    assert regen.predictions_differ == ["rl", "sft"] and regen.predictions_identical == []  # 11 beams, not 12
    assert "different predictions (rl, sft)" in r.stdout
