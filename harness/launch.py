"""Multi-process stages: when params ask for more than one process, the stage re-runs itself under
``accelerate launch`` (DDP, or DeepSpeed ZeRO-2 with ``configs/deepspeed/zero2.json``).

The command is an argument list built here, never a shell string. Inside a launched worker (``LOCAL_RANK``
is set) nothing is relaunched; the trainers and the evaluation shard their work across the processes.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from harness.errors import ParamsError

ZERO2_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "deepspeed" / "zero2.json"


def in_launched_worker() -> bool:
    return "LOCAL_RANK" in os.environ


def launch_command(stage: str, cli_args: list[str], params_path: Path, num_processes: int, distributed: str,
                   params_file: str = "params.yaml") -> list[str]:
    """The ``accelerate launch`` argument list that runs ``harness <cli_args>`` in ``num_processes`` workers;
    ``stage`` is the params section (named in errors)."""
    import torch

    key = f"{stage}.distributed"
    gpus = torch.cuda.device_count()
    if gpus and num_processes > gpus:
        raise ParamsError(params_file, f"{stage}.num_processes", f"{num_processes} processes but {gpus} GPUs")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(num_processes),
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    if distributed == "zero2":
        if not gpus:
            raise ParamsError(params_file, key, "zero2 (DeepSpeed) needs CUDA GPUs; on a CPU use ddp")
        if importlib.util.find_spec("deepspeed") is None:
            raise ParamsError(params_file, key, "zero2 needs DeepSpeed, which is not installed: run `make "
                              "multi-gpu` (or set ddp)")
        cmd += ["--use_deepspeed", "--deepspeed_config_file", str(ZERO2_CONFIG), "--zero_stage", "2"]
    else:  # ddp: torch.distributed with NCCL on GPUs, gloo on CPU
        cmd += ["--multi_gpu"]
    return [*cmd, "-m", "harness.cli", *cli_args, "--params", str(params_path)]


def relaunch_if_needed(stage: str, cli_args: list[str], params_path: Path, num_processes: int,
                       distributed: str = "ddp") -> int | None:
    """Run ``harness <cli_args>`` under ``accelerate launch`` when the stage asks for several processes; returns
    the exit code, or None when this process should do the work itself (one process, or a launched worker)."""
    if num_processes <= 1 or in_launched_worker():
        return None
    cmd = launch_command(stage, cli_args, Path(params_path).resolve(), num_processes, distributed, str(params_path))
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    return subprocess.run(cmd, env=env).returncode  # noqa: S603 - an argument list, no shell


def is_main_process() -> bool:
    """Rank 0 of a launched run (or the only process): the one that writes the stage's outputs."""
    return int(os.environ.get("RANK", "0")) == 0
