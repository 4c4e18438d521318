"""Multi-process stages: the `accelerate launch` command they build, what they refuse, and real 2-process
runs on CPU (gloo): sharded evaluation merges to exactly the single-process predictions; DDP SFT and RL
train with one writer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from harness.errors import ParamsError
from harness.launch import ZERO2_CONFIG, launch_command
from tests.conftest import TINY_MODEL, stage_args

HARNESS = [sys.executable, "-m", "harness.cli"]


def _stage(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*HARNESS, *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def _params(d: Path, name: str, doc: dict) -> Path:
    p = d / name
    p.write_text(yaml.safe_dump(doc))
    return p


def test_ddp_command_is_an_argument_list_running_the_same_stage(tmp_path):
    cmd = launch_command("evaluate", ["evaluate", "--model", "rl"], tmp_path / "params.yaml", 4, "ddp")
    assert all(isinstance(a, str) for a in cmd)
    assert cmd[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert cmd[cmd.index("--num_processes") + 1] == "4" and "--multi_gpu" in cmd
    assert cmd[-6:] == ["harness.cli", "evaluate", "--model", "rl", "--params", str(tmp_path / "params.yaml")]


def test_zero2_uses_the_shipped_deepspeed_config(monkeypatch, tmp_path):
    import importlib.util

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "deepspeed" else None)
    cmd = launch_command("rl", ["rl"], tmp_path / "p.yaml", 8, "zero2")
    assert "--use_deepspeed" in cmd and cmd[cmd.index("--zero_stage") + 1] == "2"
    config = Path(cmd[cmd.index("--deepspeed_config_file") + 1])
    assert config == ZERO2_CONFIG and json.loads(config.read_text())["zero_optimization"]["stage"] == 2
    with pytest.raises(ParamsError) as e:
        launch_command("rl", ["rl"], tmp_path / "p.yaml", 9, "zero2")
    assert e.value.key == "rl.num_processes" and "8 GPUs" in str(e.value)


def test_zero2_is_refused_clearly_without_deepspeed_or_gpus(monkeypatch, tmp_path):
    import importlib.util

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(ParamsError, match="needs CUDA GPUs; on a CPU use ddp") as e:
        launch_command("sft", ["sft"], tmp_path / "p.yaml", 2, "zero2")
    assert e.value.key == "sft.distributed"
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ParamsError, match="make multi-gpu"):
        launch_command("sft", ["sft"], tmp_path / "p.yaml", 2, "zero2")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU (gloo) path; GPUs take NCCL")
def test_two_cpu_processes_train_and_evaluate_like_one(tiny_workdir):
    d = tiny_workdir
    base = {"sft": {"epochs": 1, "batch_size": 8, "model": TINY_MODEL},
            "rl": {"max_prompts": 8, "num_generations": 4, "prompts_per_step": 2},
            "evaluate": {"num_beams": 10, "batch_size": 4}}
    one = _params(d, "one.yaml", base)
    two = _params(d, "two.yaml", {"sft": {**base["sft"], "num_processes": 2, "distributed": "ddp"},
                                  "rl": {**base["rl"], "num_processes": 2, "distributed": "ddp"},
                                  "evaluate": {**base["evaluate"], "num_processes": 2}})
    zero2 = _params(d, "zero2.yaml", {"sft": {**base["sft"], "num_processes": 2}})

    r = _stage([*stage_args("sft"), "--params", str(zero2)], d)  # the default distributed mode needs GPUs: refused, no output
    assert r.returncode == 2 and "sft.distributed" in r.stderr and not (d / "models").exists()

    r = _stage([*stage_args("sft"), "--params", str(two)], d)
    assert r.returncode == 0, r.stderr
    log = json.loads((d / "models/sft/training_log.json").read_text())
    assert log["processes"] == 2 and r.stdout.count("sft: ") == 1  # one writer, one summary
    r = _stage([*stage_args("sft"), "--params", str(one)], d)
    assert r.returncode == 0, r.stderr
    single = json.loads((d / "models/sft/training_log.json").read_text())
    assert single["processes"] == 1 and single["global_steps"] == 2 * log["global_steps"]

    r = _stage([*stage_args("rl"), "--params", str(two)], d)
    assert r.returncode == 0, r.stderr
    rl = json.loads((d / "models/rl/training_log.json").read_text())
    assert rl["processes"] == 2 and rl["global_steps"] == 2  # 8 prompts / (2 per step x 2 processes)

    r = _stage([*stage_args("evaluate", "sft"), "--params", str(two)], d)
    assert r.returncode == 0, r.stderr
    sharded = (d / "reports/eval/sft/predictions.json").read_bytes()
    scores = json.loads((d / "reports/eval/sft/scores.json").read_text())
    assert scores["protocol"]["processes"] == 2 and scores["protocol"]["rows"] == len(json.loads(sharded))
    r = _stage([*stage_args("evaluate", "sft"), "--params", str(one)], d)
    assert r.returncode == 0, r.stderr
    assert (d / "reports/eval/sft/predictions.json").read_bytes() == sharded  # same rows, same order, same beams
