"""Running the pinned upstream scripts: checks before anything starts, argument-list subprocesses, and the
record every upstream stage leaves beside its outputs.

Before an upstream stage does any work, ``preflight`` refuses what would give numbers nobody can trace:
a run inside a ``dvc exp run --temp``/``--queue`` executor (DVC does not carry submodules there, dvc issues
7186 and 10873), an ``upstream/`` that is absent, not the pinned commit or locally modified (unless
``--allow-unpinned`` / ``MINIONEREC_ALLOW_UNPINNED=1``), and a missing upstream environment
(``make upstream-env``).

An upstream run never changes the checkout. Every command is an argument list run from a folder inside it,
with every output path absolute and outside it; bytecode (``PYTHONPYCACHEPREFIX``) and wandb's run folders
(rl.py forces ``WANDB_MODE=offline``, which writes ``./wandb``) are pointed at the run's scratch folder; and
``git status`` of the checkout is compared before and after each command, so a script that writes into its
own tree fails the stage instead of leaving the next stage a "modified" checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from harness.console import console
from harness.errors import HarnessError
from harness.io import write_json
from harness.provenance import SUBMODULE, git_record

UPSTREAM_VENV = Path(".venv-upstream")
ALLOW_UNPINNED_ENV = "MINIONEREC_ALLOW_UNPINNED"
PYTHON_ENV = "MINIONEREC_UPSTREAM_PYTHON"  # another interpreter for upstream's scripts (tests, conda users)
RUN_RECORD = "upstream_run.json"
LOGS = "upstream_logs"
# A launched harness worker's rendezvous: upstream's processes start their own, never join ours.
DISTRIBUTED_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR",
                   "MASTER_PORT", "TORCHELASTIC_RUN_ID")
SHIMS = Path(__file__).with_name("shims")


@dataclass
class Command:
    """One upstream script invocation: ``argv`` runs in ``cwd`` (relative to the checkout root)."""

    argv: list[str]
    cwd: str = "."
    env: dict[str, str] = field(default_factory=dict)
    accept_exit: tuple[int, ...] = (0,)  # other codes that still count as success (checked by the caller)
    shims: tuple[str, ...] = ()  # names of harness/upstream/shims modules loaded into the process (recorded)

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
    """The interpreter of the upstream environment (its own pins): ``make upstream-env`` builds it."""
    override = os.environ.get(PYTHON_ENV)
    if override:
        return override
    py = (root / UPSTREAM_VENV / "bin" / "python").absolute()
    if not py.exists():
        raise HarnessError(f"{UPSTREAM_VENV}/bin/python not found: upstream's scripts run in their own environment "
                           "(torch 2.6.0, transformers 4.57.1, trl 0.24.0, ...). Build it with `make upstream-env`, "
                           f"or point {PYTHON_ENV} at an interpreter that has upstream's requirements")
    return str(py)


def require_pinned(record: dict, allow: bool = False) -> None:
    """Refuse to run upstream code that is absent, not the pinned commit, or locally modified."""
    if not record["upstream_initialised"]:
        raise HarnessError("upstream/ is not checked out: run `make upstream` (with UPSTREAM_URL=<mirror or local "
                           "path> where GitHub is out of reach) to get the pinned commit "
                           f"{record['upstream_pinned']}")
    if allow:
        return
    if not record["upstream_matches_pin"]:
        raise HarnessError(f"upstream/ is at {record['upstream_checked_out']}, not the pinned "
                           f"{record['upstream_pinned']}: run `make upstream`, or pass --allow-unpinned to run it "
                           "anyway (the report then names the commit that ran)")
    if record["upstream_dirty"]:
        raise HarnessError("upstream/ has local modifications: the numbers would not be the pinned code's; "
                           "revert them (git -C upstream status) or pass --allow-unpinned")


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


def _checkout_status(base: Path) -> str:
    r = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "--ignored=matching"], cwd=base,
                       capture_output=True, text=True)  # noqa: S603 - argument list
    return r.stdout


def process_env(scratch: Path) -> dict[str, str]:
    """The environment of every upstream process: offline, no inherited rendezvous, nothing written into the
    checkout (bytecode and wandb go to ``scratch``)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "PYTHONDONTWRITEBYTECODE": "1",
           "PYTHONPYCACHEPREFIX": str(scratch / "pycache")}
    for key in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        env[key] = str(scratch / "wandb")
    env.pop("HF_ENDPOINT", None)  # upstream's rl.sh points it at a mirror; nothing is downloaded here
    env.pop("PYTHONPATH", None)  # nothing of this package leaks into upstream's interpreter except named shims
    for key in DISTRIBUTED_ENV:  # set when the harness stage itself runs under accelerate launch
        env.pop(key, None)
    return {k: v for k, v in env.items() if not k.startswith("ACCELERATE_")}


def run_command(cmd: Command, log_path: Path, root: Path = Path(".")) -> int:
    """Run one command from the checkout, its output streamed to stderr and ``log_path``; returns the exit
    code, raising when it is not one of ``cmd.accept_exit``."""
    return run_parallel([cmd], [log_path], root)[0]


def run_parallel(cmds: Sequence[Command], logs: Sequence[Path], root: Path = Path(".")) -> list[int]:
    """Start every command at once (e.g. one evaluate.py per GPU), wait for all, and fail if any failed or if the
    checkout's ``git status`` changed."""
    base = upstream_root(root)
    before = _checkout_status(base)
    procs, handles = [], []
    started = time.time()
    try:
        for cmd, log_path in zip(cmds, logs, strict=True):
            Path(log_path).parent.mkdir(parents=True, exist_ok=True)
            env = {**process_env(Path(log_path).parent), **cmd.env}
            if cmd.shims:
                env["PYTHONPATH"] = str(SHIMS)
                env["MINIONEREC_SHIMS"] = ",".join(cmd.shims)
            log = open(log_path, "w", encoding="utf-8")  # noqa: SIM115 - closed below
            handles.append(log)
            log.write(f"# {cmd.display()}\n")
            procs.append(subprocess.Popen(  # noqa: S603 - an argument list, no shell
                cmd.argv, cwd=base / cmd.cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                errors="replace"))
        if len(procs) == 1:
            assert procs[0].stdout is not None
            for line in procs[0].stdout:
                handles[0].write(line)
                handles[0].flush()
                sys.stderr.write(line)
        else:  # several shards: each to its own log, none interleaved on the terminal
            import threading

            def drain(p, log):
                for line in p.stdout:
                    log.write(line)
                    log.flush()  # a long shard can be followed in its log

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
    after = _checkout_status(base)
    if after != before:
        new = sorted(set(after.splitlines()) - set(before.splitlines()))
        raise HarnessError(f"{SUBMODULE}/ changed while {cmds[0].display()} ran ({'; '.join(new[:5])}): an upstream run "
                           "must leave the checkout as it was, so the wrapper has to send that output elsewhere")
    return codes


# ---------------------------------------------------------------- the lifecycle every upstream stage shares
@contextmanager
def workdir(stage: str) -> Iterator[Path]:
    """A scratch folder for one upstream run, removed afterwards whatever happens."""
    path = Path(tempfile.mkdtemp(prefix=f"minionerec-upstream-{stage}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def begin(stage: str, allow: bool) -> tuple[dict, str, float]:
    """Preflight, the upstream interpreter, and the start time of an upstream stage."""
    record = preflight(stage, allow)
    python = upstream_python()
    console.print(f"{stage}: backend upstream at {record['upstream_checked_out'][:12]}"
                  + (" (NOT the pinned commit)" if record["allowed_unpinned"] else ""), highlight=False)
    return record, python, time.time()


def warn_not_passed(stage: str, not_passed: dict) -> None:
    for key, v in not_passed.items():
        console.print(f"{stage}: {stage}.{key}={v['params']!r} is not passed: upstream {v['upstream']}",
                      highlight=False)


def finish(out: Path, record: dict, cmds: Sequence[Command], codes: Sequence[int], started: float,
           logs: Sequence[Path], not_passed: dict | None = None) -> dict:
    """Keep the logs and write ``upstream_run.json`` beside the stage's outputs."""
    info = run_record(record, cmds, codes, time.time() - started, not_passed)
    (out / LOGS).mkdir(parents=True, exist_ok=True)
    for log in logs:
        shutil.copy2(log, out / LOGS / Path(log).name)
    write_json(out / RUN_RECORD, info)
    return info


def run_record(record: dict, cmds: Sequence[Command], codes: Sequence[int], seconds: float,
               not_passed: dict | None = None) -> dict:
    """What goes into ``upstream_run.json``: the commit that produced the outputs, the exact commands, their exit
    codes, the shims loaded, and the params the upstream script has no way to take (with what it does instead)."""
    return {
        "upstream_commit": record["upstream_checked_out"],
        "upstream_pinned": record["upstream_pinned"],
        "upstream_matches_pin": record["upstream_matches_pin"],
        "upstream_dirty": record["upstream_dirty"],
        "harness_commit": record["harness_commit"],
        "commands": [{"cwd": f"{SUBMODULE}/{c.cwd}".rstrip("/."), "argv": c.argv, "env": c.env,
                      **({"shims": list(c.shims)} if c.shims else {})} for c in cmds],
        "exit_codes": list(codes),
        "seconds": round(seconds, 1),
        "not_passed": not_passed or {},
    }


def not_passed(params, fixed: dict[str, tuple[object, str]]) -> dict:
    """Params whose value differs from what the upstream script does regardless: ``fixed`` maps a key to
    (upstream's effective value, what upstream does, with the line). Recorded, and warned about."""
    out = {}
    for key, (value, what) in fixed.items():
        ours = params
        for part in key.split("."):
            ours = getattr(ours, part)
        ours = ours.model_dump() if hasattr(ours, "model_dump") else ours
        if ours != value:
            out[key] = {"params": ours, "upstream": what}
    return out
