"""Provenance: which upstream commit is pinned and which is checked out (and which of its files the checkout
lacks), the harness's own commit, and the packages and hardware a run used.

Read with GitPython. The pin is the gitlink recorded in the harness's HEAD commit, so a staged but
uncommitted pin change shows up as a dirty harness, never as the pin. An ``upstream/`` without a commit
checked out (not initialised, or only the empty placeholder ``make submodule-gitdir`` prepares) counts as
absent. Files the checkout's source did not have are left out of the work tree as a sparse checkout
(``make upstream``, harness/upstream/checkout.py); git marks them skip-worktree, and they are listed here.

This module is native: the report and the CLI read it, and the upstream layer builds on it.
"""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from pathlib import Path

from harness.errors import HarnessError

SUBMODULE = "upstream"
PACKAGES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "tokenizers", "sentence-transformers",
            "faiss-cpu", "dvc", "great_expectations", "numpy", "deepspeed")


def git_record(root: Path = Path("."), dirty_ignores: tuple[str, ...] = ()) -> dict:
    """Pin, checkout and dirty state of the upstream submodule, and the harness's own commit and dirty state
    (``dirty_ignores``: paths left out of the latter, e.g. the outputs a running stage is rewriting)."""
    from git import InvalidGitRepositoryError, NoSuchPathError, Repo

    try:
        repo = Repo(root, search_parent_directories=True)
    except (InvalidGitRepositoryError, NoSuchPathError):
        raise HarnessError(f"{Path(root).resolve()}: not a git checkout of the harness") from None
    top = Path(repo.working_tree_dir)
    head = repo.head.commit if repo.head.is_valid() else None
    pinned = _gitlink(repo, head)
    checked_out, dirty, absent = _submodule_state(top / SUBMODULE)
    return {
        "upstream_pinned": pinned,
        "upstream_checked_out": checked_out,
        "upstream_initialised": checked_out is not None,
        "upstream_dirty": dirty,
        "upstream_absent_files": absent,
        "upstream_matches_pin": checked_out is not None and checked_out == pinned,
        "harness_commit": head.hexsha if head else None,
        "harness_dirty": _dirty(repo, dirty_ignores),
    }


def _dirty(repo, ignores: tuple[str, ...]) -> bool:
    if not ignores:
        return repo.is_dirty(untracked_files=True, submodules=False)
    out = repo.git.status("--porcelain", "--untracked-files=all", "--ignore-submodules", "--", ".",
                          *(f":(exclude){p}" for p in ignores))
    return bool(out.strip())


def _gitlink(repo, head) -> str | None:
    if head is None:
        return None
    try:
        entry = head.tree / SUBMODULE
    except KeyError:
        return None
    return entry.hexsha if entry.type == "submodule" else None


def _submodule_state(path: Path) -> tuple[str | None, bool | None, list[str] | None]:
    """(checked-out commit, dirty, absent files) of the submodule, or Nones when nothing is checked out."""
    from git import InvalidGitRepositoryError, NoSuchPathError, Repo

    if not (path / ".git").exists():
        return None, None, None
    try:
        sub = Repo(path)
    except (InvalidGitRepositoryError, NoSuchPathError):
        return None, None, None
    if not sub.head.is_valid():  # the empty placeholder repository: no commit checked out
        return None, None, None
    absent = [line[2:] for line in sub.git.ls_files("-t").splitlines() if line.startswith("S ")]
    return sub.head.commit.hexsha, sub.is_dirty(untracked_files=True), absent


def absent_upstream_file(path: str | Path, prefix: str = "", root: Path = Path(".")) -> str | None:
    """Why ``path`` (a file, or a folder holding files whose names start with ``prefix``) is missing, when it is
    part of the pinned upstream tree that this checkout left out (its source lacked it: ``make upstream``
    checks such files out sparsely); None otherwise."""
    try:
        top = (root / SUBMODULE).resolve()
        rel = Path(path).expanduser().resolve().relative_to(top).as_posix()
    except (ValueError, OSError):
        return None
    try:
        absent = git_record(root)["upstream_absent_files"] or []
    except HarnessError:
        return None
    hits = [f for f in absent if f == rel or (f.startswith(rel.rstrip("/") + "/")
                                             and f.rsplit("/", 1)[-1].startswith(prefix))]
    if not hits:
        return None
    return (f"{SUBMODULE}/{hits[0]} is absent from this checkout of upstream: the source `make upstream` took it from "
            "lacks it, so it was left out (sparse checkout; `harness provenance` lists every absent file). Check out "
            "from a complete source (`make upstream UPSTREAM_URL=...`) or use another input")


def packages() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def hardware() -> dict:
    """CPU model and count, memory, and the GPUs torch sees (names and count)."""
    mem_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = round(int(line.split()[1]) / 2**20, 1)
                break
    except OSError:
        pass
    gpus: list[str] = []
    try:
        import torch

        gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - a broken CUDA install must not hide the rest of the record
        gpus = []
    return {"machine": platform.machine(), "cpu_model": cpu_model(), "cpu_count": os.cpu_count(),
            "memory_gib": mem_gib, "gpu_count": len(gpus), "gpu_names": gpus}


def provenance(root: Path = Path(".")) -> dict:
    """The whole record ``harness provenance --json`` prints and the report embeds."""
    return {**git_record(root), "python": platform.python_version(), "python_executable": sys.executable,
            "platform": platform.platform(), "packages": packages(), "hardware": hardware()}
