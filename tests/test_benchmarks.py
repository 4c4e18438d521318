"""The benchmark scripts run and check their own correctness claims (times are measured there, never here)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO


def test_constrained_decoding_benchmark_finds_identical_beams_and_writes_its_record(tmp_path):
    out = tmp_path / "b.json"
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "constrained_decoding.py"), "--out", str(out),
                        "--rows", "3", "--items", "300", "--vocab", "3000", "--batch", "2", "--beams", "20"],
                       cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads(out.read_text())
    for key in ("upstream_style_s", "vectorised_hf_s", "project_s", "unconstrained_s", "speedup_vs_upstream_style",
                "identical_outputs", "device", "model_parameters", "vocab_size", "batch", "beams",
                "catalogue_size"):
        assert key in doc, key
    assert doc["identical_outputs"] is True and doc["catalogue_size"] == 300 and doc["vocab_size"] == 3000


def test_training_memory_benchmark_runs_every_mode_with_the_stage_settings(tmp_path):
    out = tmp_path / "t.json"
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "training_memory.py"), "--out", str(out),
                        "--vocab", "3000", "--items", "100", "--seq-len", "32", "--rl-prompt-len", "16",
                        "--steps", "2", "--batch", "2", "--grad-acc", "1", "--dtype", "float32"],
                       cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads(out.read_text())
    runs = {run["mode"]: run for run in doc["runs"]}
    assert set(runs) == {"full", "lora", "embeddings", "grpo"}
    assert all(run["steps"] == 2 and run["peak_gib"] > 0 and run["tokens_per_s"] > 0 for run in runs.values())
    # the modes train what they say: embedding rows only < LoRA adapters + rows < every weight
    trainable = [runs[m]["trainable_parameters"] for m in ("embeddings", "lora", "full")]
    assert trainable == sorted(set(trainable))
    assert runs["grpo"]["num_generations"] == 16 and runs["lora"]["gradient_checkpointing"] is True
    assert doc["profile_within_budget"] is None  # the 15 GiB check is a GPU figure only


def test_scale_benchmark_evaluates_every_row_and_audits(tmp_path):
    out = tmp_path / "s.json"
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "scale.py"), "--out", str(out),
                        "--eval-rows", "40", "120", "--beams", "5", "--audit-interactions", "3000"],
                       cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert [e["rows"] for e in doc["evaluate"]] == [40, 120] and doc["rows_ratio"] == 3
    assert all(e["peak_rss_mib"] >= e["rss_before_mib"] > 0 and e["predictions_mib"] > 0 for e in doc["evaluate"])
    assert doc["audit"][0]["interactions"] == 3000 and doc["audit"][0]["seconds"] > 0
