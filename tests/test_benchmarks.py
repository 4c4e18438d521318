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
                        "--eval-rows", "16", "48", "--beams", "5", "--audit-interactions", "2000"],
                       cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert [e["rows"] for e in doc["evaluate"]] == [16, 48] and doc["rows_ratio"] == 3
    assert all(e["peak_rss_mib"] >= e["rss_before_mib"] > 0 and e["predictions_mib"] > 0 for e in doc["evaluate"])
    assert doc["audit"][0]["interactions"] == 2000 and doc["audit"][0]["seconds"] > 0


def test_gpu_check_smoke_runs_every_part_and_renders_the_docs_gpu_rows(shared_amazon, tmp_path):
    """The GPU check's own code paths at tiny sizes on Industrial: each part runs (part 1's upstream subset is
    skipped, with the reason, where upstream/ is not checked out), and its JSON renders into a copy of the doc."""
    out = tmp_path / "g.json"
    upstream = REPO / "upstream"
    r = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--smoke", "--data", str(shared_amazon),
                        "--upstream-dir", str(upstream), "--out", str(out), "--workdir", str(tmp_path / "work")],
                       cwd=REPO, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["mode"] == "smoke" and doc["total_s"] > 0 and "within_budget" in doc
    assert list(doc["parts"]) == ["decoding", "training", "smollm2"]
    assert all(p["status"] == "ok" and p["wall_s"] > 0 for p in doc["parts"].values())

    dec = doc["parts"]["decoding"]["result"]
    assert dec["workload"].startswith("Industrial_and_Scientific test split") and dec["catalogue_size"] == 3670
    assert (dec["rows"], dec["compare_rows"], dec["beams"]) == (6, 3, 5)
    if (upstream / "LogitProcessor.py").is_file():
        assert dec["upstream"]["rows"] == 3 and dec["upstream"]["rows_with_illegal_beams"] == 0
        assert dec["upstream"]["upstream_commit"]
    else:
        assert dec["upstream"].startswith("skipped: ")

    runs = {run["mode"]: run for run in doc["parts"]["training"]["result"]["runs"]}
    assert set(runs) == {"lora", "full", "grpo"} and runs["grpo"]["num_generations"] == 16
    assert all(run["peak_gib"] > 0 and run["tokens_per_s"] > 0 and run["within_budget"] is None for run in runs.values())

    smol = doc["parts"]["smollm2"]
    stages = {s["stage"]: s for s in smol["stages"]}
    assert list(stages) == ["data", "sid", "sft", "rl", "evaluate@sft", "evaluate@rl", "metrics", "report"]
    assert all(s["status"] == "ok" for name, s in stages.items() if name != "report")
    assert stages["report"]["status"] == "skipped" and stages["report"]["reason"]
    metrics = smol["result"]["metrics"]
    assert metrics["sft"]["legality_rate"] == 1.0 and metrics["rl"]["legality_rate"] == 1.0
    assert metrics["protocol"]["rows"] == 2 and metrics["protocol"]["catalogue_sids"] == 3670
    paper = smol["result"]["paper"]["sets"]
    assert paper["rl"]["available"] and {row["metric"] for row in paper["rl"]["rows"]} >= {"hr@10", "ndcg@10"}
    assert any("valid split" in d for d in paper["rl"]["differences"])

    page = tmp_path / "benchmarks.md"
    original = (REPO / "docs" / "benchmarks.md").read_text()
    page.write_text(original)
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--render", str(out), "--doc",
                        str(page)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    begin, end = "<!-- gpu-check:begin -->", "<!-- gpu-check:end -->"
    rendered = page.read_text()
    assert rendered.split(begin)[0] == original.split(begin)[0] and rendered.split(end)[1] == original.split(end)[1]
    section = rendered.split(begin)[1].split(end)[0]
    assert "(smoke sizes)" in section and "| 6 × 5 |" in section
    assert "| lora | 2 × 1 |" in section and "| grpo (16 beams) |" in section and "| HR@3 |" in section


def test_threads_benchmark_times_both_settings(tmp_path):
    out = tmp_path / "t.json"
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "threads.py"), "--out", str(out), "--iters", "50"],
                       cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert doc["copies"] == 2 and len(doc["seconds_1_thread"]) == len(doc["seconds_2_threads"]) == 2
    assert doc["slowdown_2_vs_1"] == max(doc["seconds_2_threads"]) / max(doc["seconds_1_thread"]) > 0
