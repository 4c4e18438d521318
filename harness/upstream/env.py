"""The upstream environment: a second virtualenv (``.venv-upstream``) built from upstream's own
requirements.txt, because its pins (torch 2.6.0, transformers 4.57.1, trl 0.24.0, ..., spec §5) clash with
this package's stack.

Upstream's file also pins CUDA-11.8 builds (torchrec, fbgemm_gpu) that have no wheel for a machine without
CUDA. Nothing is dropped silently: every line that is removed or rewritten is listed with the reason, in
the terminal and in ``.venv-upstream/requirements.changes.json``. The scripts also need packages the file
does not list (faiss, k-means-constrained, polars, POT); they are added, named the same way.

Usage (``make upstream-env``): python -m harness.upstream.env upstream/requirements.txt .venv-upstream
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from harness.errors import HarnessError

# Packages whose wheels exist only for CUDA builds: on a machine without CUDA they are left out.
CUDA_ONLY = {"torchrec", "fbgemm-gpu", "fbgemm-gpu-genai", "flash-attn", "vllm", "xformers", "faiss-gpu",
             "faiss-gpu-cu11", "faiss-gpu-cu12", "cupy-cuda11x", "cupy-cuda12x"}
# Needed by upstream's scripts but not in its requirements.txt (spec §5).
EXTRAS_CPU = ("faiss-cpu", "k-means-constrained", "polars", "POT", "fire")
EXTRAS_CUDA = ("faiss-gpu-cu12", "k-means-constrained", "polars", "POT", "fire")
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def filter_requirements(text: str, cuda: bool) -> tuple[list[str], list[dict]]:
    """(lines to install, what was changed and why). On a CUDA machine only the additions differ."""
    kept: list[str] = []
    changes: list[dict] = []
    listed: set[str] = set()
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(("-e", "--editable", "-r", "--requirement", "-c", "--constraint")):
            changes.append({"line": n, "text": raw, "action": "dropped", "why": "nested or editable requirement: "
                            "not followed (list it in the harness's changes if upstream starts using it)"})
            continue
        if line.startswith(("--index-url", "--extra-index-url", "-i ", "--find-links", "-f ")):
            if not cuda and re.search(r"/cu\d+", line):
                changes.append({"line": n, "text": raw, "action": "dropped", "why": "CUDA wheel index on a machine "
                                "without CUDA"})
                continue
            kept.append(line)
            continue
        m = _NAME.match(line)
        if not m:
            raise HarnessError(f"upstream requirements.txt:{n}: cannot read {raw!r} as a requirement")
        name = canonical(m.group(1))
        if not cuda and name in CUDA_ONLY:
            changes.append({"line": n, "text": raw, "action": "dropped", "why": "CUDA-only build (no wheel without "
                            "CUDA); the stages that use it need a GPU machine"})
            continue
        if not cuda and re.search(r"\+cu\d+", line):
            public = re.sub(r"\+cu\d+", "", line)
            changes.append({"line": n, "text": raw, "action": f"rewritten to {public}", "why": "CUDA local version "
                            "on a machine without CUDA: the same release from the package index"})
            line = public
        listed.add(name)
        kept.append(line)
    for extra in EXTRAS_CUDA if cuda else EXTRAS_CPU:
        if canonical(extra) not in listed:
            kept.append(extra)
            changes.append({"line": None, "text": extra, "action": "added", "why": "imported by upstream's scripts "
                            "but not in its requirements.txt (spec §5)"})
    return kept, changes


def has_cuda() -> bool:
    return shutil.which("nvidia-smi") is not None


def build(requirements: Path, venv: Path, cuda: bool | None = None) -> list[dict]:
    """Create ``venv`` and install the filtered requirements into it; returns the recorded changes."""
    if not requirements.is_file():
        raise HarnessError(f"{requirements}: not found. The upstream environment is built from the pinned checkout's "
                           "requirements: run `git submodule update --init upstream` (`make upstream`) first")
    cuda = has_cuda() if cuda is None else cuda
    kept, changes = filter_requirements(requirements.read_text(encoding="utf-8"), cuda)
    for c in changes:
        print(f"upstream-env: {c['action']}: {c['text'].strip()} ({c['why']})", file=sys.stderr)
    if not (venv / "bin" / "python").exists():
        base = getattr(sys, "_base_executable", None) or shutil.which("python3") or sys.executable
        subprocess.run([base, "-m", "venv", str(venv)], check=True)  # noqa: S603 - argument list
    filtered = venv / "requirements.harness.txt"
    filtered.write_text("\n".join(kept) + "\n", encoding="utf-8")
    (venv / "requirements.changes.json").write_text(json.dumps(changes, indent=2) + "\n", encoding="utf-8")
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check"]
    result = subprocess.run([*pip, "-r", str(filtered)])  # noqa: S603 - argument list
    if result.returncode:
        raise HarnessError(f"pip could not install {filtered} into {venv} (exit {result.returncode}); the changes "
                           f"made to upstream's list are in {venv / 'requirements.changes.json'}")
    return changes


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m harness.upstream.env REQUIREMENTS VENV", file=sys.stderr)
        return 2
    try:
        build(Path(args[0]), Path(args[1]))
    except HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"upstream environment ready: {args[1]}/bin/python")
    return 0


if __name__ == "__main__":
    sys.exit(main())
