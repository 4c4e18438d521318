"""Opt-in: the real upstream scripts at the pinned commit (MINIONEREC_UPSTREAM_INTEGRATION=1, with upstream/
checked out by `make upstream` and its environment built by `make upstream-env`). Skipped, with the reason,
everywhere else; the same wrapper is tested against tests/fixtures/fake_upstream in test_upstream_backend.py."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from harness.provenance import git_record
from harness.upstream.runner import PYTHON_ENV, UPSTREAM_VENV
from tests.conftest import REPO, TINY_MODEL


def _ready() -> str | None:
    if os.environ.get("MINIONEREC_UPSTREAM_INTEGRATION") != "1":
        return "opt-in: set MINIONEREC_UPSTREAM_INTEGRATION=1 to run the real upstream scripts"
    rec = git_record(REPO)
    if not rec["upstream_initialised"]:
        return "upstream/ is not checked out (make upstream)"
    if not rec["upstream_matches_pin"] or rec["upstream_dirty"]:
        return f"upstream/ is not the clean pinned commit {rec['upstream_pinned']}"
    if not (os.environ.get(PYTHON_ENV) or (REPO / UPSTREAM_VENV / "bin" / "python").exists()):
        return "no upstream environment (make upstream-env)"
    return None


pytestmark = pytest.mark.skipif(_ready() is not None, reason=_ready() or "")


@pytest.fixture()
def real_checkout(tiny_workdir, monkeypatch):
    """tiny_workdir inside this repository's tree, so the real upstream/ submodule is the one that runs."""
    work = REPO / ".pytest-upstream-work"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(tiny_workdir, work)
    summary = json.loads((work / "data/dataset/summary.json").read_text())
    (work / "data/dataset/summary.json").write_text(json.dumps({**summary, "name": "Industrial_and_Scientific"}))
    monkeypatch.chdir(REPO)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    yield work
    shutil.rmtree(work, ignore_errors=True)


def test_real_evaluate_py_and_calc_py_agree_with_harness_score(real_checkout):
    from harness.evaluate import run_evaluate
    from harness.params import EvaluateParams, SftParams
    from harness.train.sft import run_sft

    w = real_checkout
    run_sft(SftParams(max_steps=2, batch_size=8, model=TINY_MODEL), dataset_dir=w / "data/dataset",
            sid_dir=w / "data/sid", out_dir=w / "models/sft")
    s = run_evaluate(EvaluateParams(backend="upstream", num_beams=5, max_rows=4), "sft", w / "data/dataset",
                     w / "data/sid", w / "models/sft", w / "reports/eval/sft")
    assert s["metrics"]["calc_py_agrees"] and s["metrics"]["rows"] == 4
    assert s["upstream_commit"] == git_record(REPO)["upstream_pinned"]
