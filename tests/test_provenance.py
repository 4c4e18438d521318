"""Provenance: the upstream pin from the gitlink, what is checked out, dirty states, and the refusal to run
upstream code that is absent, unpinned or modified."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.upstream.provenance import git_record, provenance, require_pinned
from tests.conftest import REPO
from tests.test_submodule import git

PIN = "81b4ba9811cfb152cf161f1c486fe516510d081e"
KEYS = {"upstream_pinned", "upstream_checked_out", "upstream_dirty", "harness_commit", "harness_dirty"}


def test_this_checkout_reports_the_pin_and_the_harness_commit():
    rec = provenance(REPO)
    assert KEYS <= set(rec) and rec["upstream_pinned"] == PIN
    assert rec["harness_commit"] == git(REPO, "rev-parse", "HEAD").stdout.strip()
    assert rec["packages"]["torch"] and rec["python"] == ".".join(map(str, sys.version_info[:3]))
    assert rec["hardware"]["cpu_count"] >= 1 and rec["hardware"]["gpu_count"] == len(rec["hardware"]["gpu_names"])
    if not rec["upstream_initialised"]:  # a clone without `git submodule update --init`
        assert rec["upstream_checked_out"] is None and rec["upstream_dirty"] is None
        with pytest.raises(HarnessError, match="git submodule update --init upstream"):
            require_pinned(rec)


def test_provenance_command_prints_json():
    r = subprocess.run([sys.executable, "-m", "harness.cli", "provenance", "--json"], cwd=REPO, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout)
    assert KEYS <= set(rec) and rec["upstream_pinned"] == PIN and "gpu_names" in rec["hardware"]


def _commit(repo: Path, name: str, text: str) -> str:
    (repo / name).write_text(text)
    git(repo, "add", name)
    git(repo, "commit", "-qm", name)
    return git(repo, "rev-parse", "HEAD").stdout.strip()


def test_a_checkout_off_the_pin_or_modified_is_refused(tmp_path):
    remote = tmp_path / "remote"
    remote.mkdir()
    git(remote, "init", "-q")
    first = _commit(remote, "a.py", "1\n")
    second = _commit(remote, "a.py", "2\n")
    sup = tmp_path / "super"
    sup.mkdir()
    git(sup, "init", "-q")
    git(sup, "submodule", "add", "-q", str(remote), "upstream")
    git(sup / "upstream", "checkout", "-q", first)
    git(sup, "add", "upstream")
    git(sup, "commit", "-qm", "pin the first commit")

    rec = git_record(sup)
    assert rec["upstream_pinned"] == first and rec["upstream_checked_out"] == first
    assert rec["upstream_matches_pin"] and rec["upstream_dirty"] is False and rec["harness_dirty"] is False
    require_pinned(rec)

    git(sup / "upstream", "checkout", "-q", second)
    rec = git_record(sup)
    assert rec["upstream_checked_out"] == second and not rec["upstream_matches_pin"]
    with pytest.raises(HarnessError, match=f"at {second}, not the pinned {first}.*--allow-unpinned"):
        require_pinned(rec)
    require_pinned(rec, allow_unpinned=True)

    git(sup / "upstream", "checkout", "-q", first)
    (sup / "upstream" / "a.py").write_text("edited\n")
    rec = git_record(sup)
    assert rec["upstream_dirty"] is True and rec["harness_dirty"] is False  # the submodule's state is its own
    with pytest.raises(HarnessError, match="local modifications"):
        require_pinned(rec)
    (sup / "new.py").write_text("x = 1\n")
    assert git_record(sup)["harness_dirty"] is True
