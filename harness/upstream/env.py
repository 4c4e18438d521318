"""The upstream environment: a second virtualenv (``.venv-upstream``) built from the pinned checkout's own
requirements.txt, because its pins (torch 2.6.0, transformers 4.57.1, trl 0.24.0, numpy 1.26.3, ...) clash with
this package's stack.

Upstream's file cannot be installed as it is, and its scripts import packages it does not list. Every change
is printed with its reason and kept in ``.venv-upstream/requirements.changes.json`` (with the time, the size
and ``pip freeze``); nothing is dropped or added silently:

- ``torchrec==0.6.0+cu118`` and ``fbgemm_gpu==0.8.0+cu118`` are dropped on every machine: those local versions
  exist only on PyTorch's own package index, and no upstream script imports either package (the scan below
  checks that on every build). The ``nvidia-*-cu11`` runtime libraries go with them: torch 2.6.0 itself
  depends on the CUDA 12 set, which stays.
- ``deepspeed`` (a source package whose build imports torch) is installed after the rest, without build
  isolation and with no CUDA ops compiled ahead of time.
- The packages the scripts import but the file omits are found by scanning every ``.py`` of the checkout for
  imports, and installed at versions that keep all of upstream's pins (``-c`` on the pinned lines).
- ``k-means-constrained`` cannot be installed with upstream's pins at all: 0.8 and later need numpy >= 2.1.1,
  and 0.7.x needs an ortools that needs protobuf >= 4.21 (upstream pins 3.19.6). Upstream's README installs it
  in a separate pip call, which moves protobuf; so does this build, with the versions named and recorded.

Usage (``make upstream-env``): python -m harness.upstream.env upstream/requirements.txt .venv-upstream
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from harness.errors import HarnessError

# Pinned only for CUDA 11.8 on PyTorch's index, and imported by no upstream script.
DROPPED = {"torchrec", "fbgemm-gpu"}
# Imported name -> distribution, where they differ.
DISTRIBUTION = {"sklearn": "scikit-learn", "ot": "POT", "k_means_constrained": "k-means-constrained",
                "faiss": "faiss-cpu", "yaml": "PyYAML", "PIL": "pillow", "git": "GitPython",
                "dateutil": "python-dateutil", "google": "protobuf"}
# Imported by upstream's scripts, absent from its requirements.txt: versions that install beside its pins.
EXTRAS = {"scikit-learn": "1.5.2", "faiss-cpu": "1.9.0.post1", "POT": "0.9.5", "polars": "1.9.0",
          "openai": "1.109.1", "peft": "0.17.1", "loguru": "0.7.2"}
# The separate call upstream's README makes, with versions that work beside numpy 1.26.3 / scipy 1.14.0.
SEPARATE = {"k-means-constrained": "0.7.3", "ortools": "9.14.6206", "protobuf": "6.31.1"}
SEPARATE_WHY = ("k-means-constrained >= 0.8 needs numpy >= 2.1.1 (upstream pins 1.26.3); 0.7.3 needs ortools, whose "
                "releases for numpy < 2 need protobuf >= 4.21 (upstream pins 3.19.6): installed in a separate call "
                "as upstream's README does, which moves protobuf to 6.31.1 (ortools 9.14's range)")
LATE = {"deepspeed"}  # built after torch is in place
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def scan_imports(checkout: Path) -> dict[str, list[str]]:
    """Third-party top-level modules imported by the checkout's scripts -> the files importing them. A module is
    local when a file or package of that name sits beside the importing script or in a folder above it inside the
    checkout (the scripts run from their own folder, e.g. rq/)."""
    std = set(sys.stdlib_module_names)
    found: dict[str, set[str]] = {}
    for path in sorted(checkout.rglob("*.py")):
        rel = path.relative_to(checkout).as_posix()
        if rel.startswith(".git/"):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"), filename=rel)
        except SyntaxError:
            continue
        folders = [path.parent, *[p for p in path.parent.parents if p == checkout or checkout in p.parents]]
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else []
            for name in names:
                top = name.split(".")[0]
                local = any((d / f"{top}.py").is_file() or (d / top / "__init__.py").is_file() or (d / top).is_dir()
                            for d in folders)
                if top not in std and not local:
                    found.setdefault(top, set()).add(rel)
    return {k: sorted(v) for k, v in sorted(found.items())}


def plan(text: str, imports: dict[str, list[str]]) -> tuple[list[str], list[str], list[str], list[dict]]:
    """(pinned lines for the main call, extras, late lines, changes with reasons)."""
    main, late, changes = [], [], []
    listed: set[str] = set()
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-"):
            changes.append({"line": n, "text": raw, "action": "dropped", "why": "pip options and nested requirement "
                            "files are not followed (this build installs from the package index only)"})
            continue
        m = _NAME.match(line)
        if not m:
            raise HarnessError(f"upstream requirements.txt:{n}: cannot read {raw!r} as a requirement")
        name = canonical(m.group(1))
        listed.add(name)
        if name in DROPPED:
            used = [mod for mod in imports if canonical(DISTRIBUTION.get(mod, mod)) == name]
            if used:
                raise HarnessError(f"upstream requirements.txt:{n}: {name} is imported by {imports[used[0]][0]}: the "
                                   "build would have to install it (update harness/upstream/env.py)")
            changes.append({"line": n, "text": raw, "action": "dropped", "why": "a +cu118 build that exists only on "
                            "PyTorch's package index, and no upstream script imports it"})
            continue
        if re.match(r"nvidia-[a-z-]+-cu11$", name):
            changes.append({"line": n, "text": raw, "action": "dropped", "why": "CUDA 11 runtime for the dropped "
                            "+cu118 builds; torch 2.6.0 depends on the CUDA 12 libraries, which are kept"})
            continue
        if name in LATE:
            late.append(line)
            changes.append({"line": n, "text": raw, "action": "installed last", "why": "a source package whose build "
                            "imports torch: built without isolation (no CUDA ops compiled ahead, DS_BUILD_OPS=0) once "
                            "torch is installed"})
            continue
        main.append(line)
    extras: list[str] = []
    separate = {canonical(k) for k in SEPARATE}
    for module, files in imports.items():
        dist = DISTRIBUTION.get(module, module)
        if canonical(dist) in listed or canonical(dist) in separate:
            continue
        pin = next((v for k, v in EXTRAS.items() if canonical(k) == canonical(dist)), None)
        if pin is None:
            raise HarnessError(f"upstream imports {module!r} ({files[0]}), which neither its requirements.txt nor "
                               "harness/upstream/env.py's EXTRAS provides: add a version that installs beside its pins")
        extras.append(f"{dist}=={pin}")
        changes.append({"line": None, "text": f"{dist}=={pin}", "action": "added",
                        "why": f"imported by {', '.join(files[:3])} but not in requirements.txt"})
    for dist, version in SEPARATE.items():
        changes.append({"line": None, "text": f"{dist}=={version}", "action": "added (separate call)",
                        "why": SEPARATE_WHY})
    return main, sorted(set(extras)), late, changes


def _pip(venv: Path, *args: str, env: dict | None = None) -> None:
    cmd = [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", *args]
    print("upstream-env: pip install " + " ".join(args), file=sys.stderr)
    result = subprocess.run(cmd, env={**os.environ, **(env or {})})  # noqa: S603 - argument list
    if result.returncode:
        raise HarnessError(f"pip could not install into {venv} (exit {result.returncode}): pip install "
                           f"{' '.join(args)}; the changes made to upstream's list are in "
                           f"{venv / 'requirements.changes.json'}")


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def build(requirements: Path, venv: Path) -> dict:
    """Create ``venv`` and install upstream's environment into it; returns (and records) what was changed."""
    if not requirements.is_file():
        raise HarnessError(f"{requirements}: not found. The upstream environment is built from the pinned checkout's "
                           "requirements: run `make upstream` first")
    started = time.time()
    imports = scan_imports(requirements.parent)
    main, extras, late, changes = plan(requirements.read_text(encoding="utf-8"), imports)
    for c in changes:
        print(f"upstream-env: {c['action']}: {c['text'].strip()} ({c['why']})", file=sys.stderr)
    if not (venv / "bin" / "python").exists():
        base = getattr(sys, "_base_executable", None) or shutil.which("python3") or sys.executable
        subprocess.run([base, "-m", "venv", str(venv)], check=True)  # noqa: S603 - argument list
    pins = venv / "requirements.harness.txt"
    pins.write_text("\n".join(main) + "\n", encoding="utf-8")
    record = {"requirements": str(requirements), "changes": changes, "imports": imports}
    (venv / "requirements.changes.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    _pip(venv, "-r", str(pins))
    if extras:
        _pip(venv, "-c", str(pins), *extras)
    without_protobuf = venv / "constraints.separate.txt"
    without_protobuf.write_text("\n".join(x for x in main if canonical(_NAME.match(x).group(1)) != "protobuf") + "\n",
                                encoding="utf-8")
    _pip(venv, "-c", str(without_protobuf), *(f"{k}=={v}" for k, v in SEPARATE.items()))
    if late:
        _pip(venv, "--no-build-isolation", "-c", str(without_protobuf), *late, env={"DS_BUILD_OPS": "0"})
    py = str(venv / "bin" / "python")
    check = subprocess.run([py, "-m", "pip", "check"], capture_output=True, text=True)  # noqa: S603
    freeze = subprocess.run([py, "-m", "pip", "freeze"], capture_output=True, text=True).stdout  # noqa: S603
    record.update({"seconds": round(time.time() - started), "size_bytes": _size(venv),
                   "pip_check": (check.stdout + check.stderr).strip(), "freeze": freeze.splitlines()})
    (venv / "requirements.changes.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    if check.returncode:
        raise HarnessError(f"{venv}: pip check reports broken requirements: {record['pip_check']}")
    return record


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m harness.upstream.env REQUIREMENTS VENV", file=sys.stderr)
        return 2
    try:
        rec = build(Path(args[0]), Path(args[1]))
    except HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"upstream environment ready: {args[1]}/bin/python ({rec['seconds']} s, "
          f"{rec['size_bytes'] / 2**30:.1f} GiB; changes in {args[1]}/requirements.changes.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
