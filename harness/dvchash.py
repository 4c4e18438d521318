"""The md5 DVC writes into ``dvc.lock`` for a dependency, computed without DVC: a file's md5, or a directory's
``<md5>.dir`` (the md5 of the JSON list of its files' relative paths and md5s, as dvc-data builds it).

A reproduction record keeps the md5s its run's ``dvc.lock`` gave each code and config dependency; the staleness
check (harness/records.py) hashes the same paths today with this module and compares. Paths ``.dvcignore``
leaves out (bytecode) are left out here too, so the two agree on a clean checkout.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
from pathlib import Path

_ALWAYS_IGNORED = (".git", ".hg", ".dvc")  # DVC never walks into these


def file_md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def ignore_patterns(root: Path) -> list[str]:
    """The patterns of ``root/.dvcignore`` (plain names and globs; negations are not supported and refused)."""
    path = root / ".dvcignore"
    if not path.is_file():
        return []
    patterns = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("!") or "/" in line.rstrip("/"):
            raise ValueError(f"{path}: pattern {line!r}: only plain names and globs are understood here")
        patterns.append(line)
    return patterns


def _ignored(name: str, is_dir: bool, patterns: list[str]) -> bool:
    for p in patterns:
        if p.endswith("/"):
            if is_dir and fnmatch.fnmatchcase(name, p[:-1]):
                return True
        elif fnmatch.fnmatchcase(name, p):
            return True
    return False


def dir_md5(path: Path, patterns: list[str]) -> str:
    entries = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if d not in _ALWAYS_IGNORED and not _ignored(d, True, patterns))
        for name in filenames:
            if _ignored(name, False, patterns):
                continue
            full = Path(dirpath) / name
            entries.append({"md5": file_md5(full), "relpath": full.relative_to(path).as_posix()})
    entries.sort(key=lambda e: e["relpath"])
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode("utf-8"), usedforsecurity=False).hexdigest() + ".dir"


def dep_md5(root: Path, rel: str, patterns: list[str] | None = None) -> str | None:
    """What dvc.lock would record as the md5 of dependency ``rel`` under ``root`` today; None if it is gone."""
    path = root / rel
    if path.is_dir():
        return dir_md5(path, ignore_patterns(root) if patterns is None else patterns)
    if path.is_file():
        return file_md5(path)
    return None
