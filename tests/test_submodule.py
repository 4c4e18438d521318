"""The uninitialised `upstream/` submodule survives DVC's experiment stash (dulwich) with git intact."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
       "GIT_COMMITTER_EMAIL": "t@t", "GIT_ALLOW_PROTOCOL": "file", "GIT_CONFIG_COUNT": "1",
       "GIT_CONFIG_KEY_0": "protocol.file.allow", "GIT_CONFIG_VALUE_0": "always"}


def git(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(["git", *args], cwd=cwd, env=ENV, capture_output=True, text=True)
    if check:
        assert r.returncode == 0, f"git {' '.join(args)}: {r.stderr}"
    return r


def test_gitlink_pins_the_upstream_commit():
    r = git(REPO, "ls-files", "-s", "upstream")
    assert r.stdout.split()[:2] == ["160000", "81b4ba9811cfb152cf161f1c486fe516510d081e"]
    url = git(REPO, "config", "-f", ".gitmodules", "submodule.upstream.url").stdout.strip()
    assert url == "https://github.com/AkaliKong/MiniOneRec.git"


def run(cwd: Path, *cmd: str) -> str:
    r = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"{' '.join(cmd)}: {r.stdout}{r.stderr}"
    return r.stdout


def test_dvc_experiment_leaves_git_usable_and_submodule_initialisable(tmp_path):
    # a local stand-in for the upstream repository, with one commit
    remote = tmp_path / "remote"
    remote.mkdir()
    git(remote, "init", "-q")
    (remote / "README").write_text("upstream\n")
    git(remote, "add", "README")
    git(remote, "commit", "-qm", "upstream")
    pinned = git(remote, "rev-parse", "HEAD").stdout.strip()

    # a superproject like ours: .gitmodules + a hand-made gitlink, never checked out
    proj = tmp_path / "proj"
    proj.mkdir()
    git(proj, "init", "-q")
    (proj / ".gitmodules").write_text(f'[submodule "upstream"]\n\tpath = upstream\n\turl = {remote}\n')
    (proj / "params.yaml").write_text("a: 1\n")
    probe = tmp_path / "probe.log"  # what harness.upstream.runner sees from inside each experiment
    (proj / "dvc.yaml").write_text(
        "stages:\n  echo:\n    cmd: cp params.yaml out.txt\n    params: [a]\n    outs: [out.txt]\n"
        f"  probe:\n    cmd: {sys.executable} -c \"from harness.upstream.runner import in_temp_executor as t; "
        f"open('{probe}', 'a').write(str(t()) + chr(10))\"\n    params: [a]\n")
    run(proj, "dvc", "init", "-q")
    git(proj, "add", ".gitmodules", "params.yaml", "dvc.yaml", ".dvc")
    git(proj, "update-index", "--add", "--cacheinfo", f"160000,{pinned},upstream")
    git(proj, "commit", "-qm", "superproject")
    (proj / "upstream").mkdir()

    run(proj, "make", "-s", "-f", str(REPO / "Makefile"), "submodule-gitdir")

    # `dvc exp run` stashes the workspace with dulwich, which writes upstream/.git
    assert "Ran experiment" in run(proj, "dvc", "exp", "run", "-S", "a=2") + run(proj, "dvc", "exp", "show")
    assert (proj / "upstream" / ".git").is_file()
    status = git(proj, "status", "--porcelain").stdout
    assert "upstream" not in status and "params.yaml" in status
    git(proj, "add", "-A")
    assert git(proj, "submodule", "status").stdout.startswith("-" + pinned)
    # and the user can still check out the pinned upstream code later
    run(proj, "make", "-s", "-f", str(REPO / "Makefile"), "upstream")
    assert (proj / "upstream" / "README").read_text() == "upstream\n"
    assert git(proj, "submodule", "status").stdout.startswith(" " + pinned)

    # with the submodule checked out, workspace experiments keep it as it is and git usable
    git(proj, "checkout", "-q", "--", "params.yaml")
    run(proj, "dvc", "exp", "run", "-S", "a=3")
    assert git(proj, "submodule", "status").stdout.startswith(" " + pinned)
    assert (proj / "upstream" / "README").read_text() == "upstream\n"
    assert "upstream" not in git(proj, "status", "--porcelain").stdout
    # a --temp experiment runs in a copy without it: the upstream backend's check sees that copy
    run(proj, "dvc", "exp", "run", "--temp", "-S", "a=4")
    assert probe.read_text().split() == ["False", "False", "True"]
