"""Provenance: the upstream pin from the gitlink, what is checked out, dirty states, and the refusal to run
upstream code that is absent, unpinned or modified."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.provenance import absent_upstream_file, git_record, provenance
from harness.upstream.runner import require_pinned
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
    if not rec["upstream_initialised"]:  # a clone without `make upstream`
        assert rec["upstream_checked_out"] is None and rec["upstream_dirty"] is None
        with pytest.raises(HarnessError, match="run `make upstream` .*UPSTREAM_URL"):
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
    require_pinned(rec, allow=True)

    git(sup / "upstream", "checkout", "-q", first)
    (sup / "upstream" / "a.py").write_text("edited\n")
    rec = git_record(sup)
    assert rec["upstream_dirty"] is True and rec["harness_dirty"] is False  # the submodule's state is its own
    with pytest.raises(HarnessError, match="local modifications"):
        require_pinned(rec)
    (sup / "new.py").write_text("x = 1\n")
    assert git_record(sup)["harness_dirty"] is True


def test_a_source_without_some_files_checks_out_sparsely_and_the_stages_name_what_is_missing(tmp_path, monkeypatch):
    """`make upstream UPSTREAM_URL=<path>` from a source that lacks a blob: the pin is checked out without that
    file as a sparse checkout (not a deletion), git status stays clean, provenance lists it, a stage that needs
    it names it, and a source with everything checks out whole."""
    remote = tmp_path / "remote"
    remote.mkdir()
    git(remote, "init", "-q")
    (remote / "data" / "train").mkdir(parents=True)
    (remote / "data" / "train" / "Toy_5.csv").write_text("a big file the mirror left out\n")
    (remote / "code.py").write_text("print('upstream')\n")
    git(remote, "add", "-A")
    git(remote, "commit", "-qm", "upstream")
    pin = git(remote, "rev-parse", "HEAD").stdout.strip()
    blob = git(remote, "rev-parse", "HEAD:data/train/Toy_5.csv").stdout.strip()
    sup = tmp_path / "super"
    sup.mkdir()
    git(sup, "init", "-q")
    (sup / ".gitmodules").write_text('[submodule "upstream"]\n\tpath = upstream\n\turl = https://example.invalid/x\n')
    git(sup, "add", ".gitmodules")
    git(sup, "update-index", "--add", "--cacheinfo", f"160000,{pin},upstream")
    git(sup, "commit", "-qm", "pin")
    mirror = tmp_path / "mirror.git"
    git(tmp_path, "clone", "-q", "--bare", "--no-local", str(remote), str(mirror))
    packs = list((mirror / "objects" / "pack").glob("*.pack"))
    for pack in packs:  # loosen every object, then drop the big file's blob: a mirror without it
        data = pack.read_bytes()
        for f in pack.parent.glob(pack.stem + ".*"):
            f.unlink()
        subprocess.run(["git", "unpack-objects", "-q"], cwd=mirror, input=data, check=True)
    (mirror / "objects" / blob[:2] / blob[2:]).unlink()

    r = subprocess.run(["make", "-s", "-f", str(REPO / "Makefile"), "upstream", f"UPSTREAM_URL={mirror}"], cwd=sup,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "absent (the source lacks it" in r.stdout and "data/train/Toy_5.csv" in r.stdout
    assert (sup / "upstream" / "code.py").is_file() and not (sup / "upstream" / "data" / "train").exists()
    assert git(sup / "upstream", "status", "--porcelain").stdout == ""
    assert git(sup, "submodule", "status").stdout.startswith(" " + pin)
    rec = git_record(sup)
    assert rec["upstream_matches_pin"] and rec["upstream_dirty"] is False
    assert rec["upstream_absent_files"] == ["data/train/Toy_5.csv"]
    require_pinned(rec)  # absent-by-design files are not a modification
    monkeypatch.chdir(sup)
    why = absent_upstream_file(sup / "upstream" / "data" / "train", "Toy")
    assert why and "upstream/data/train/Toy_5.csv is absent" in why
    assert absent_upstream_file(sup / "upstream" / "code.py") is None

    from harness.data.stage import build_dataset
    from harness.params import DataParams

    _only_test_split(sup / "upstream" / "data")
    with pytest.raises(HarnessError, match="upstream/data/train/Toy_5.csv is absent from this checkout"):
        build_dataset(DataParams(source="upstream", upstream={"dir": str(sup / "upstream" / "data"),
                                                              "category": "Toy"}))
    # a complete source: everything checked out, no sparse patterns left
    shutil.rmtree(sup / "upstream" / "data")
    r = subprocess.run(["make", "-s", "-f", str(REPO / "Makefile"), "upstream", f"UPSTREAM_URL={remote}"], cwd=sup,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert (sup / "upstream" / "data" / "train" / "Toy_5.csv").is_file()
    assert git_record(sup)["upstream_absent_files"] == []


def _only_test_split(d: Path) -> None:
    """A tiny upstream-format dir with item/index and a test CSV only (git status is not consulted here)."""
    from harness.data.synthetic import generate
    from harness.data.upstream_format import write_upstream_dir
    from harness.params import SyntheticParams
    from harness.sid.tokens import codes_to_tokens

    ds = generate(SyntheticParams(n_items=20, n_users=30, seed=1), 10, (0.8, 0.1, 0.1))
    ds.interactions = [r for r in ds.interactions if r.split == "test"]
    write_upstream_dir(ds, d, "Toy", {it.id: codes_to_tokens([it.id % 4, it.id // 4, 0]) for it in ds.items})
