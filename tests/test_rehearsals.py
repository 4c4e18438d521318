"""The rehearsals run their profiles end to end on Industrial: every code path of the one-GPU and the 8-GPU
recipes (Qwen2 model and tokenizer behaviour, LoRA, bf16, gradient checkpointing, 16-beam GRPO, 50-beam bf16
evaluation, DDP over gloo with 2 processes) in minutes on a CPU, before a GPU is rented."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import yaml

from harness.params import load_yaml
from harness.profiles import load_profile, merged_params
from tests.conftest import REPO, stage_args
from tests.test_profiles import REHEARSALS

PROFILES = REPO / "profiles"
BASE = load_yaml(REPO / "params.yaml")


@pytest.fixture(scope="module")
def industrial_workspace(shared_amazon, tmp_path_factory):
    """data -> embed -> sid of the rehearsals on Industrial, run once: both rehearse on the same data and SIDs."""
    merged = {n: merged_params(load_profile(n, PROFILES), BASE) for n in REHEARSALS}
    for section in ("data", "embed", "sid"):
        assert len({json.dumps(m[section], sort_keys=True) for m in merged.values()}) == 1, section
    ws = tmp_path_factory.mktemp("industrial")
    _write_params(ws, next(iter(merged.values())), shared_amazon)
    for stage in ("data", "embed", "sid"):
        _stage(ws, stage)
    return ws


def _write_params(ws, params: dict, amazon) -> None:
    params = json.loads(json.dumps(params))
    params["data"]["upstream"]["dir"] = str(amazon)  # the profile's upstream/data/Amazon, wherever it is here
    (ws / "params.yaml").write_text(yaml.safe_dump(params))
    shutil.copyfile(REPO / "paper_targets.yaml", ws / "paper_targets.yaml")


def _stage(ws, stage: str, item: str | None = None) -> None:
    r = subprocess.run([sys.executable, "-m", "harness.cli", *stage_args(stage, item)], cwd=ws, capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, f"{stage}{'@' + item if item else ''}: {r.stderr[-3000:]}"


@pytest.mark.parametrize("name", sorted(REHEARSALS))
def test_rehearsal_runs_its_profile_end_to_end_on_industrial(name, industrial_workspace, shared_amazon, tmp_path):
    """The rehearsal itself (the profile plus its few overrides): sft -> rl -> evaluate x2 -> metrics -> audit ->
    report on Industrial, with a scratch Qwen2 and the profile's own training, decoding and process settings."""
    shutil.copytree(industrial_workspace / "data", tmp_path / "data")
    params = merged_params(load_profile(name, PROFILES), BASE)
    # the metrics stage's SASRec baseline is no part of what the GPUs rehearse (test_baselines tests it): one
    # epoch here instead of ten (~25 s a rehearsal)
    params["evaluate"]["baselines"]["sasrec"]["epochs"] = 1
    _write_params(tmp_path, params, shared_amazon)
    for stage, item in (("sft", None), ("rl", None), ("evaluate", "sft"), ("evaluate", "rl"), ("metrics", None),
                        ("audit", None), ("report", None)):
        _stage(tmp_path, stage, item)
    sft = json.loads((tmp_path / "models/sft/training_log.json").read_text())
    rl = json.loads((tmp_path / "models/rl/training_log.json").read_text())
    config = json.loads((tmp_path / "models/rl/config.json").read_text())
    assert config["model_type"] == "qwen2"
    assert (sft["mode"], rl["mode"]) == (params["sft"]["mode"], params["rl"]["mode"])
    assert (sft["processes"], rl["processes"]) == (params["sft"]["num_processes"], params["rl"]["num_processes"])
    assert sft["global_steps"] == 1 and rl["global_steps"] >= 1
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tmp_path / "models/rl")
    assert "<|im_start|>" in tok.chat_template and tok.eos_token == "<|im_end|>"  # Qwen2's behaviour, saved with it
    m = json.loads((tmp_path / "reports/metrics.json").read_text())
    assert m["protocol"]["rows"] == 8 and m["protocol"]["num_beams"] == 50
    assert m["sft"]["legality_rate"] == 1.0 and m["rl"]["legality_rate"] == 1.0
    scores = json.loads((tmp_path / "reports/eval/rl/scores.json").read_text())
    assert scores["protocol"]["dtype"] == "bfloat16"
    assert scores["protocol"]["processes"] == params["evaluate"]["num_processes"]
    report = (tmp_path / "reports/report.md").read_text()
    assert "Industrial" in report and "base model scratch instead of Qwen2.5-1.5B-Instruct" in report
    assert "Base model: scratch: a config-initialised qwen2 model" in report.replace("\\", "")  # unescaped
