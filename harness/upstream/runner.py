"""Running the pinned upstream scripts: checks before anything starts, then argument-list subprocesses.

Before an upstream stage does any work, ``preflight`` refuses what would give numbers nobody can trace:
a run inside a ``dvc exp run --temp``/``--queue`` executor (DVC does not carry submodules there, dvc issues
7186 and 10873), an ``upstream/`` that is absent, not the pinned commit or locally modified (unless
``--allow-unpinned`` / ``MINIONEREC_ALLOW_UNPINNED=1``), and a missing upstream environment
(``make upstream-env``). Every command is an argument list run from a folder inside the checkout; no shell
string is ever built from params. Output is streamed to the terminal and to a log file kept beside the
stage's outputs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import HarnessError
from harness.upstream.provenance import SUBMODULE, git_record, require_pinned

UPSTREAM_VENV = Path(".venv-upstream")
ALLOW_UNPINNED_ENV = "MINIONEREC_ALLOW_UNPINNED"
PYTHON_ENV = "MINIONEREC_UPSTREAM_PYTHON"  # another interpreter for upstream's scripts (tests, conda users)
RUN_RECORD = "upstream_run.json"
# A launched harness worker's rendezvous: upstream's processes start their own, never join ours.
DISTRIBUTED_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR",
                   "MASTER_PORT", "TORCHELASTIC_RUN_ID")


@dataclass
class Command:
    """One upstream script invocation: ``argv`` runs in ``cwd`` (relative to the checkout root)."""

    argv: list[str]
    cwd: str = "."
    env: dict[str, str] = field(default_factory=dict)
    accept_exit: tuple[int, ...] = (0,)  # other codes that still count as success (checked by the caller)

    def display(self) -> str:
        import shlex

        prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(self.env.items()))
        return (f"(cd {self.cwd} && " if self.cwd != "." else "(") + (prefix + " " if prefix else "") + \
            shlex.join(self.argv) + ")"


def in_temp_executor(cwd: Path | None = None) -> bool:
    """True inside ``dvc exp run --temp`` or a queued experiment: DVC then runs the stage in a copy of the repo
    under .dvc/tmp/exps and points DVC_ROOT at the real workspace, which the stage's folder is not."""
    root = os.environ.get("DVC_ROOT")
    if not root:
        return False
    return Path(root).resolve() != (cwd or Path.cwd()).resolve()


def allow_unpinned(flag: bool = False) -> bool:
    return flag or os.environ.get(ALLOW_UNPINNED_ENV, "") not in ("", "0", "false", "no")


def upstream_root(root: Path = Path(".")) -> Path:
    return (root / SUBMODULE).resolve()


def upstream_python(root: Path = Path(".")) -> str:
    """The interpreter of the upstream environment (its own pins, spec §5): ``make upstream-env`` builds it."""
    override = os.environ.get(PYTHON_ENV)
    if override:
        return override
    py = (root / UPSTREAM_VENV / "bin" / "python").absolute()
    if not py.exists():
        raise HarnessError(f"{UPSTREAM_VENV}/bin/python not found: upstream's scripts run in their own environment "
                           "(torch 2.6.0, transformers 4.57.1, trl 0.24.0, ...). Build it with `make upstream-env`, "
                           f"or point {PYTHON_ENV} at an interpreter that has upstream's requirements")
    return str(py)


def preflight(stage: str, allow: bool = False, root: Path = Path(".")) -> dict:
    """Everything checked before an upstream stage starts; returns the provenance record of the checkout."""
    if in_temp_executor():
        raise HarnessError(
            f"{stage}: backend upstream cannot run inside `dvc exp run --temp` or `--queue`: DVC copies the "
            "repository without its submodule there (dvc issues 7186, 10873), so upstream/ would be empty. Run the "
            "experiment in the workspace instead: `dvc exp run -S ...` (see docs/upstream-backend.md)")
    record = git_record(root)
    try:
        require_pinned(record, allow_unpinned(allow))
    except HarnessError as e:
        raise HarnessError(f"{stage}: backend upstream: {e}") from None
    record["allowed_unpinned"] = not record["upstream_matches_pin"] or bool(record["upstream_dirty"])
    return record


def _stream(proc: subprocess.Popen, log) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        log.write(line)
        log.flush()
        sys.stderr.write(line)


def run(cmd: Command, log_path: Path, root: Path = Path(".")) -> int:
    """Run one command from the checkout, its output streamed to stderr and ``log_path``; returns the exit
    code, raising when it is not one of ``cmd.accept_exit``."""
    return run_parallel([cmd], [log_path], root)[0]


def run_parallel(cmds: Sequence[Command], logs: Sequence[Path], root: Path = Path(".")) -> list[int]:
    """Start every command at once (e.g. one evaluate.py per GPU), wait for all, and fail if any failed."""
    base = upstream_root(root)
    env0 = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1"}
    env0.pop("HF_ENDPOINT", None)  # upstream's rl.sh points it at a mirror; nothing is downloaded here
    for key in DISTRIBUTED_ENV:  # set when the harness stage itself runs under accelerate launch
        env0.pop(key, None)
    env0 = {k: v for k, v in env0.items() if not k.startswith("ACCELERATE_")}
    procs = []
    handles = []
    started = time.time()
    try:
        for cmd, log_path in zip(cmds, logs, strict=True):
            Path(log_path).parent.mkdir(parents=True, exist_ok=True)
            log = open(log_path, "w", encoding="utf-8")  # noqa: SIM115 - closed below
            handles.append(log)
            log.write(f"# {cmd.display()}\n")
            procs.append(subprocess.Popen(  # noqa: S603 - an argument list, no shell
                cmd.argv, cwd=base / cmd.cwd, env={**env0, **cmd.env}, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True, errors="replace"))
        if len(procs) == 1:
            _stream(procs[0], handles[0])
        else:  # several shards: each to its own log, none interleaved on the terminal
            import threading

            def drain(p, log):
                for line in p.stdout:
                    log.write(line)

            threads = [threading.Thread(target=drain, args=(p, h)) for p, h in zip(procs, handles)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        codes = [p.wait() for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        for h in handles:
            h.close()
    failed = [(c, code, log) for c, code, log in zip(cmds, codes, logs) if code not in c.accept_exit]
    if failed:
        cmd, code, log = failed[0]
        tail = "".join(Path(log).read_text(encoding="utf-8", errors="replace").splitlines(True)[-15:])
        raise HarnessError(f"upstream command failed (exit {code}) after {time.time() - started:.0f} s: "
                           f"{cmd.display()}\nlog: {log}\n{tail}")
    return codes


def run_record(record: dict, cmds: Sequence[Command], codes: Sequence[int], seconds: float,
               not_passed: dict | None = None) -> dict:
    """What goes into ``upstream_run.json`` beside a stage's outputs: the commit that produced them, the exact
    commands, their exit codes, and the params the upstream script has no way to take."""
    return {
        "upstream_commit": record["upstream_checked_out"],
        "upstream_pinned": record["upstream_pinned"],
        "upstream_matches_pin": record["upstream_matches_pin"],
        "upstream_dirty": record["upstream_dirty"],
        "harness_commit": record["harness_commit"],
        "commands": [{"cwd": f"{SUBMODULE}/{c.cwd}".rstrip("/."), "argv": c.argv, "env": c.env} for c in cmds],
        "exit_codes": list(codes),
        "seconds": round(seconds, 1),
        "not_passed": not_passed or {},
    }
