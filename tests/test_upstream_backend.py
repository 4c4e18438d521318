"""The upstream backend without the real checkout: argument lists built from params, the refusals (absent or
unpinned checkout, temp experiments, unsupported combinations), and every stage run end to end against
``tests/fixtures/fake_upstream``, a stand-in written for these tests that takes the real scripts' command
lines and writes their formats."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.errors import HarnessError, ParamsError
from harness.params import DataParams, EvaluateParams, RlParams, SftParams, SidParams
from harness.upstream import commands
from harness.upstream.env import filter_requirements
from tests.conftest import TINY_MODEL
from tests.test_submodule import git

FAKE = Path(__file__).parent / "fixtures" / "fake_upstream"
CAT = "Industrial_and_Scientific"


# ---------------------------------------------------------------- commands (no checkout needed)
def _files(tmp_path: Path) -> dict[str, Path]:
    return {k: tmp_path / f"{k}.x" for k in ("train", "valid", "test", "info", "index", "item")}


def test_sft_command_derives_upstream_batches_and_passes_only_absolute_paths(tmp_path):
    p = SftParams(batch_size=16, gradient_accumulation_steps=8, num_processes=8, epochs=10, learning_rate=3e-4,
                  max_length=512, seed=42)
    cmd = commands.sft(p, "py", tmp_path / "base", _files(tmp_path), tmp_path / "out", CAT)
    args = dict(zip(cmd.argv[::1], cmd.argv[1:]))
    assert args["--nproc_per_node"] == "8" and args["--batch_size"] == "1024" and args["--micro_batch_size"] == "16"
    assert args["--eval_file"].endswith("valid.x") and args["--freeze_LLM"] == "False"
    assert all(Path(v).is_absolute() for k, v in args.items() if k.endswith(("_file", "_path", "_model", "_dir")))
    assert all(isinstance(a, str) for a in cmd.argv) and cmd.cwd == "."


def test_evaluate_command_leaves_out_the_flags_upstream_rejects_and_tolerates_exit_2(tmp_path):
    cmd = commands.evaluate_shard(EvaluateParams(num_beams=50, batch_size=8), "py", tmp_path / "m", tmp_path / "i",
                                  CAT, tmp_path / "0.csv", tmp_path / "0.json", gpu=3)
    assert "--temperature" not in cmd.argv and "--guidance_scale" not in cmd.argv  # H6
    assert cmd.accept_exit == (0, 2) and cmd.env == {"CUDA_VISIBLE_DEVICES": "3"}
    assert cmd.argv[cmd.argv.index("--num_beams") + 1] == "50"


def test_rl_command_carries_rl_sh_choices_and_zero2(tmp_path):
    p = RlParams(prompts_per_step=4, num_generations=16, num_processes=8, sync_ref_model=True, reward="ranking")
    cmd = commands.rl(p, "py", tmp_path / "sft", _files(tmp_path), tmp_path / "out", CAT, tmp_path / "z.yaml")
    a = cmd.argv
    assert a[a.index("--train_batch_size") + 1] == "64" and a[a.index("--beam_search") + 1] == "True"
    assert a[a.index("--test_during_training") + 1] == "False" and a[a.index("--sync_ref_model") + 1] == "True"
    assert "--config_file" in a and a[a.index("--num_processes") + 1] == "8"


def test_unsupported_combinations_are_refused_with_the_reason(tmp_path):
    with pytest.raises(ParamsError, match="generate_indices.py has no command line"):
        commands.sid_builders(SidParams(method="rqvae"), "py", tmp_path, CAT, 32, "cpu")
    with pytest.raises(ParamsError, match="hard-coded dict"):
        commands.sft(SftParams(), "py", tmp_path, _files(tmp_path), tmp_path, "synthetic")
    with pytest.raises(ParamsError, match="data.preprocess.reviews_file"):
        commands.preprocess(DataParams(backend="upstream"), "py", tmp_path)
    plus = commands.sid_builders(SidParams(method="rqkmeans-plus", levels=3, codebook_size=8), "py", tmp_path, CAT,
                                 64, "cpu")
    assert [Path(c.argv[1]).name for c in plus] == ["rqkmeans_constrained.py", "rqkmeans_plus.py"]
    assert plus[1].argv[plus[1].argv.index("--e_dim") + 1] == "64"


REQUIREMENTS = """\
# upstream-like pins
torch==2.6.0
transformers==4.57.1
--extra-index-url https://download.pytorch.org/whl/cu118
torchrec==1.1.0+cu118  # CUDA 11.8 build
fbgemm_gpu==1.1.0+cu118
bitsandbytes==0.48.1
fire==0.7.1
"""


def test_upstream_requirements_lose_only_named_cuda_lines_on_a_cpu_machine():
    kept, changes = filter_requirements(REQUIREMENTS, cuda=False)
    assert kept[:3] == ["torch==2.6.0", "transformers==4.57.1", "bitsandbytes==0.48.1"]
    dropped = {c["text"].split("==")[0].split()[0] for c in changes if c["action"] == "dropped"}
    assert dropped == {"--extra-index-url", "torchrec", "fbgemm_gpu"}
    assert all(c["why"] for c in changes)
    added = [c["text"] for c in changes if c["action"] == "added"]
    assert "faiss-cpu" in added and "k-means-constrained" in added and "fire" not in added  # fire is listed
    kept_gpu, _ = filter_requirements(REQUIREMENTS, cuda=True)
    assert "torchrec==1.1.0+cu118" in kept_gpu and "faiss-gpu-cu12" in kept_gpu


def test_make_upstream_env_without_the_checkout_says_how_to_get_it(tmp_path):
    r = subprocess.run([sys.executable, "-m", "harness.upstream.env", str(tmp_path / "requirements.txt"),
                        str(tmp_path / "venv")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "git submodule update --init upstream" in r.stderr
    assert not (tmp_path / "venv").exists()


# ---------------------------------------------------------------- a checkout with the fake upstream pinned
@pytest.fixture()
def checkout(tmp_path, tiny_workdir, monkeypatch) -> Path:
    """tiny_workdir as a git repository whose upstream/ submodule is the fake, pinned; the dataset is named like
    an upstream category; upstream's interpreter is this one."""
    origin = tmp_path / "fake-origin"
    shutil.copytree(FAKE, origin)
    git(origin, "init", "-q")
    git(origin, "add", "-A")
    git(origin, "commit", "-qm", "fake upstream")
    work = tiny_workdir
    git(work, "init", "-q")
    git(work, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(origin), "upstream")
    git(work, "commit", "-qm", "pin the fake upstream")
    summary = json.loads((work / "data/dataset/summary.json").read_text())
    (work / "data/dataset/summary.json").write_text(json.dumps({**summary, "name": CAT}))
    monkeypatch.chdir(work)
    monkeypatch.setenv("MINIONEREC_UPSTREAM_PYTHON", sys.executable)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    from harness.data.schema import read_dataset
    from harness.data.upstream_format import read_index_json, write_upstream_dir

    ds = read_dataset(work / "data/dataset")
    write_upstream_dir(ds, work / "data/sid/upstream", CAT, read_index_json(work / "data/sid/index.json"))
    return work


def _tiny_model(work: Path) -> Path:
    """A native SFT model (2 steps) to stand in for a pretrained base the fake sft.py 'fine-tunes'."""
    from harness.train.sft import run_sft

    run_sft(SftParams(max_steps=2, batch_size=8, model=TINY_MODEL), out_dir=work / "base")
    return work / "base"


def test_upstream_sft_rl_and_cross_scored_evaluation_on_the_fake(checkout, monkeypatch):
    from harness.evaluate import run_evaluate, run_metrics
    from harness.report import model_blocks
    from harness.train.rl import run_rl
    from harness.train.sft import run_sft

    base = _tiny_model(checkout)
    monkeypatch.setenv("HF_ENDPOINT", "https://hf-mirror.com")  # upstream's rl.sh sets it; nothing may download
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")  # as inside a launched harness worker
    log = run_sft(SftParams(backend="upstream", batch_size=4, num_processes=1,
                            model={"source": str(base)}))
    sft = checkout / "models/sft"
    assert log["backend"] == "upstream" and log["global_steps"] == 2 and log["best_eval_loss"] == 1.5
    assert not (sft / "training_args.bin").exists() and (sft / "model.safetensors").is_file()
    seen = (sft / "upstream_logs/sft.log").read_text()
    assert "'HF_ENDPOINT': None, 'ACCELERATE_MIXED_PRECISION': None, 'WANDB_MODE': 'disabled', " \
           "'NCCL_IB_DISABLE': '1'" in seen
    run = json.loads((sft / "upstream_run.json").read_text())
    pin = git(checkout, "rev-parse", "HEAD:upstream").stdout.strip()
    assert run["upstream_commit"] == pin and run["upstream_matches_pin"] and run["exit_codes"] == [0]
    assert run["commands"][0]["argv"][run["commands"][0]["argv"].index("--category") + 1] == CAT
    assert run["not_passed"]["lr_scheduler"] == {"params": "cosine", "upstream": "linear"}

    rl_log = run_rl(RlParams(backend="upstream", num_processes=1))
    assert rl_log["upstream_commit"] == pin and rl_log["mean_reward_last_steps"] == pytest.approx(0.1)

    p = EvaluateParams(backend="both", prompts="upstream", num_beams=5, max_rows=12, num_processes=2)
    s = run_evaluate(p, "sft")
    assert s["evaluator"] == "native" and s["protocol"]["prompts"] == "upstream"
    assert s["metrics"]["legality_rate"] == 1.0  # native decoder, upstream's prompts and answer format
    up = json.loads((checkout / "reports/eval/sft/upstream/scores.json").read_text())
    # the fake ranks the target first on rows 0, 3, 6, 9, fifth on 1, 4, 7, 10, and never on the rest
    assert up["metrics"]["hr@1"] == pytest.approx(4 / 12) and up["metrics"]["hr@5"] == pytest.approx(8 / 12)
    assert up["metrics"]["calc_py_agrees"] and up["upstream_commit"] == pin
    assert len(list((checkout / "reports/eval/sft/upstream/upstream_logs").glob("evaluate-*.log"))) == 2
    run_evaluate(p.model_copy(update={"backend": "upstream"}), "rl")
    m = run_metrics(p)
    assert m["evaluated_by"]["rl"]["evaluator"] == "upstream" and "sft" in m["upstream_evaluate"]
    labels = [label for label, _ in model_blocks(m)]
    assert any("upstream evaluate.py @ " + pin[:12] in x for x in labels) and len(labels) == 5


def test_calc_disagreement_or_a_missing_result_json_fails_and_writes_nothing(checkout, monkeypatch):
    from harness.evaluate import run_evaluate

    base = _tiny_model(checkout)
    shutil.copytree(base, checkout / "models/sft")
    p = EvaluateParams(backend="upstream", num_beams=5, max_rows=6)
    monkeypatch.setenv("FAKE_CALC_SKEW", "0.001")
    with pytest.raises(HarnessError, match="disagree with harness score"):
        run_evaluate(p, "sft")
    assert not (checkout / "reports/eval/sft").exists()
    monkeypatch.delenv("FAKE_CALC_SKEW")
    monkeypatch.setenv("FAKE_EVAL_EXIT", "2")  # H6: exit 2 is accepted once the result JSON exists
    assert run_evaluate(p, "sft")["metrics"]["rows"] == 6
    monkeypatch.setenv("FAKE_EVAL_NO_JSON", "1")
    shutil.rmtree(checkout / "reports/eval/sft")
    with pytest.raises(HarnessError, match="exited 2 without writing 0.json"):
        run_evaluate(p, "sft")
    assert not (checkout / "reports/eval/sft").exists()


def test_a_modified_upstream_checkout_is_refused_unless_allowed(checkout):
    from harness.evaluate import run_evaluate

    shutil.copytree(_tiny_model(checkout), checkout / "models/sft")
    (checkout / "upstream/calc.py").write_text((checkout / "upstream/calc.py").read_text() + "\n# edited\n")
    p = EvaluateParams(backend="upstream", num_beams=5, max_rows=3)
    with pytest.raises(HarnessError, match="local modifications"):
        run_evaluate(p, "sft")
    s = run_evaluate(p, "sft", allow_unpinned=True)
    run = json.loads((checkout / "reports/eval/sft/upstream_run.json").read_text())
    assert s["scored"] and run["upstream_dirty"] is True


def test_a_temp_experiment_is_refused_before_anything_runs(checkout, monkeypatch, tmp_path):
    from harness.evaluate import run_evaluate

    monkeypatch.setenv("DVC_ROOT", str(tmp_path / "the-real-workspace"))
    with pytest.raises(HarnessError, match="dvc exp run --temp.*dvc issues 7186, 10873"):
        run_evaluate(EvaluateParams(backend="upstream"), "sft")


def test_data_embed_and_sid_stages_from_the_fake_scripts(checkout, tmp_path):
    from harness.data import run_data
    from harness.embed import run_embed
    from harness.params import EmbedParams
    from harness.sid import run_sid

    encoder = _tiny_model(checkout)  # any local HF model dir serves as text2emb's --plm_checkpoint
    raw = tmp_path / "raw"
    raw.mkdir()
    meta = [{"asin": f"B{i:03d}", "title": f"Widget {i} {'xyz'[i % 3] * (i % 5)}"} for i in range(30)]
    reviews = [{"reviewerID": f"U{u}", "asin": f"B{(u * 7 + j) % 30:03d}", "unixReviewTime": 1000 * u + j}
               for u in range(25) for j in range(4)]
    (raw / "meta.jsonl").write_text("".join(json.dumps(m) + "\n" for m in meta))
    (raw / "reviews.jsonl").write_text("".join(json.dumps(r) + "\n" for r in reviews))
    ds = run_data(DataParams(backend="upstream", preprocess={"reviews_file": str(raw / "reviews.jsonl"),
                                                             "metadata_file": str(raw / "meta.jsonl")}))
    assert ds.name == CAT and len(ds.items) == 30 and {r.split for r in ds.interactions} == {"train", "valid", "test"}
    summary = json.loads((checkout / "data/dataset/summary.json").read_text())
    assert summary["upstream"]["upstream_commit"] and "TZ UTC" in (
        checkout / "data/dataset/upstream_logs/preprocess.log").read_text()

    meta_out = run_embed(EmbedParams(backend="upstream", model=str(encoder)))
    assert meta_out["source"] == "upstream" and meta_out["dim"] == 8

    s = run_sid(SidParams(backend="upstream", method="rqkmeans", levels=3, codebook_size=4, compare=[]))
    assert s["backend"] == "upstream" and s["items"] == 30 and s["upstream_commit"]
    assert (checkout / "data/sid/upstream/info").is_dir()  # the upstream-layout export, as with native


def test_without_the_submodule_an_upstream_stage_says_to_initialise_it(tiny_workdir):
    work = tiny_workdir
    git(work, "init", "-q")
    git(work, "update-index", "--add", "--cacheinfo", "160000,81b4ba9811cfb152cf161f1c486fe516510d081e,upstream")
    git(work, "commit", "-qm", "gitlink only")
    (work / "params.yaml").write_text(yaml.safe_dump({"evaluate": {"backend": "upstream"}}))
    shutil.copytree(_tiny_model_dir(work), work / "models/sft")
    r = subprocess.run([sys.executable, "-m", "harness.cli", "evaluate", "--model", "sft"], cwd=work,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "git submodule update --init upstream" in r.stderr, r.stderr
    assert not [f for f in (work / "reports").rglob("*") if f.is_file()]


def _tiny_model_dir(work: Path) -> Path:
    import os

    old = Path.cwd()
    os.chdir(work)
    try:
        return _tiny_model(work)
    finally:
        os.chdir(old)
