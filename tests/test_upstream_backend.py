"""The upstream backend without the real checkout: argument lists built from params, the refusals (absent or
unpinned checkout, temp experiments, what upstream cannot do), the layer's shape (one table, native packages
that never import it, per-stage DVC deps), and every stage run end to end against
``tests/fixtures/fake_upstream``, a stand-in written for these tests that takes the real scripts' command
lines (an unknown flag exits 2, as fire and argparse do), knows their category dicts, and writes their formats
(the Trainer's logs, calc.py's prints). tests/test_upstream_real.py runs the real scripts."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.errors import HarnessError, ParamsError
from harness.params import DataParams, EvaluateParams, RlParams, SftParams, SidParams
from harness.upstream import backends
from harness.upstream import evaluate as up_evaluate
from harness.upstream import rl as up_rl
from harness.upstream import sft as up_sft
from harness.upstream import sid as up_sid
from harness.upstream.env import plan, scan_imports
from tests.conftest import REPO, TINY_MODEL, stage_args, stage_paths
from tests.test_submodule import git

FAKE = Path(__file__).parent / "fixtures" / "fake_upstream"
CAT = "Industrial_and_Scientific"


# ---------------------------------------------------------------- the layer's shape
def test_no_native_package_imports_the_upstream_layer():
    offenders = []
    for path in sorted((REPO / "harness").rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        if rel.startswith("harness/upstream/") or rel == "harness/cli.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{rel}: {m}" for m in mods if m.startswith("harness.upstream")]
    assert offenders == []


def test_one_table_chooses_and_each_adapter_mirrors_its_native_entry():
    import inspect

    for stage in backends.NATIVE:
        native = backends.entry(stage, _params(stage, "native"))
        adapter = backends.entry(stage, _params(stage, "upstream"))
        assert adapter.__module__ == f"harness.upstream.{stage}" and not native.__module__.startswith("harness.upstream")
        n, a = inspect.signature(native).parameters, inspect.signature(adapter).parameters
        hooks = {"build_selected", "prompt_source", "after_scoring"}  # how an adapter adds to a native stage
        assert [k for k in n if k not in hooks] == [k for k in a if k != "allow_unpinned"], stage
        assert "allow_unpinned" in a and "allow_unpinned" not in n
    assert backends.backend("evaluate", EvaluateParams(prompts="upstream")) == "upstream"
    assert backends.backend("rl", RlParams(enabled=False, backend="upstream")) == "native"


def _params(stage: str, backend: str):
    from harness.params import SECTIONS

    return SECTIONS[stage](backend=backend)


def test_each_stage_depends_only_on_its_own_adapter():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    deps = {name: set(s.get("deps", []) if "do" not in s else s["do"]["deps"]) for name, s in stages.items()}
    adapters = {s: f"harness/upstream/{s}.py" for s in backends.NATIVE}
    for stage, adapter in adapters.items():
        assert adapter in deps[stage], stage
        others = {a for s, a in adapters.items() if s != stage}
        assert not deps[stage] & others, (stage, deps[stage] & others)
    assert not any(d in deps[s] for s in ("data", "embed", "sid") for d in ("harness/upstream/rl.py",
                                                                             "harness/upstream/export.py"))


# ---------------------------------------------------------------- commands (no checkout needed)
def _files(tmp_path: Path) -> dict[str, Path]:
    return {k: tmp_path / f"{k}.x" for k in ("train", "valid", "test", "info", "index", "item")}


def test_sft_command_derives_upstream_batches_and_passes_only_absolute_paths(tmp_path):
    p = SftParams(batch_size=16, gradient_accumulation_steps=8, num_processes=8, epochs=10, learning_rate=3e-4,
                  max_length=512, seed=42, upstream={"sample": 64})
    cmd = up_sft.command(p, "py", tmp_path / "base", _files(tmp_path), tmp_path / "out", CAT)
    args = dict(zip(cmd.argv[::1], cmd.argv[1:]))
    assert args["--nproc_per_node"] == "8" and args["--batch_size"] == "1024" and args["--micro_batch_size"] == "16"
    assert args["--eval_file"].endswith("valid.x") and args["--freeze_LLM"] == "False" and args["--sample"] == "64"
    assert all(Path(v).is_absolute() for k, v in args.items() if k.endswith(("_file", "_path", "_model", "_dir")))
    assert all(isinstance(a, str) for a in cmd.argv) and cmd.cwd == "."
    assert cmd.shims == ("cpu_bf16",)  # no GPU here: sft.py's hard-coded bf16 needs use_cpu


def test_evaluate_command_leaves_out_the_flags_upstream_rejects_and_tolerates_exit_2(tmp_path):
    cmd = up_evaluate.shard_command(EvaluateParams(batch_size=8), 50, "py", tmp_path / "m", tmp_path / "i", CAT,
                                    tmp_path / "0.csv", tmp_path / "0.json", gpu=3)
    assert "--temperature" not in cmd.argv and "--guidance_scale" not in cmd.argv  # H6
    assert cmd.accept_exit == (0, 2) and cmd.env == {"CUDA_VISIBLE_DEVICES": "3"}
    assert cmd.argv[cmd.argv.index("--num_beams") + 1] == "50"


def test_rl_command_carries_rl_sh_choices_and_zero2(tmp_path):
    p = RlParams(prompts_per_step=4, num_generations=16, num_processes=8, sync_ref_model=True, reward="ranking")
    cmd = up_rl.command(p, "py", tmp_path / "sft", _files(tmp_path), tmp_path / "out", CAT, tmp_path / "z.yaml")
    a = cmd.argv
    assert a[a.index("--train_batch_size") + 1] == "64" and a[a.index("--beam_search") + 1] == "True"
    assert a[a.index("--test_during_training") + 1] == "False" and a[a.index("--sync_ref_model") + 1] == "True"
    assert a[a.index("--eval_batch_size") + 1] == "128"
    assert "--config_file" in a and a[a.index("--num_processes") + 1] == "8"


def test_rqkmeans_plus_runs_after_the_constrained_builder_with_the_embedding_dim(tmp_path):
    plus = up_sid.commands(SidParams(method="rqkmeans-plus", levels=3, codebook_size=8), "py", tmp_path, CAT, 64,
                           "cpu")
    assert [c.argv[1] for c in plus] == ["rqkmeans_constrained.py", "rqkmeans_plus.py"]
    assert plus[1].argv[plus[1].argv.index("--e_dim") + 1] == "64"
    gen = up_sid.generate_indices_plus(SidParams(method="rqkmeans-plus"), "py", tmp_path, CAT, 64, tmp_path / "c",
                                       "cpu")
    assert gen.env == {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}  # its own checkpoint, just written


REQUIREMENTS = """\
# upstream-like pins
torch==2.6.0
transformers==4.57.1
torchrec==0.6.0+cu118
fbgemm_gpu==0.8.0+cu118
nvidia-cublas-cu11==11.11.3.6
nvidia-cublas-cu12==12.4.5.8
deepspeed==0.18.0
protobuf==3.19.6
numpy==1.26.3
fire==0.7.1
"""


def test_the_environment_plan_names_every_change_and_adds_what_the_scripts_import(tmp_path):
    (tmp_path / "rq").mkdir()
    (tmp_path / "rq" / "models").mkdir()
    (tmp_path / "rq" / "models" / "__init__.py").write_text("")
    (tmp_path / "rq" / "a.py").write_text("import faiss\nfrom sklearn.cluster import KMeans\nimport models\nimport os\n")
    (tmp_path / "calc.py").write_text("import fire, numpy\nfrom k_means_constrained import KMeansConstrained\n")
    imports = scan_imports(tmp_path)
    assert set(imports) == {"faiss", "sklearn", "fire", "numpy", "k_means_constrained"}  # models is local
    main, extras, late, changes = plan(REQUIREMENTS, imports)
    assert "torch==2.6.0" in main and "nvidia-cublas-cu12==12.4.5.8" in main and "protobuf==3.19.6" in main
    assert not [m for m in main if "cu118" in m or "cu11=" in m] and late == ["deepspeed==0.18.0"]
    assert extras == ["faiss-cpu==1.9.0.post1", "scikit-learn==1.5.2"]
    why = {c["text"].split("==")[0]: c for c in changes}
    assert why["torchrec"]["action"] == "dropped" and "imports it" in why["torchrec"]["why"]
    assert why["protobuf"]["action"] == "added (separate call)" and "numpy >= 2.1.1" in why["protobuf"]["why"]
    assert all(c["why"] for c in changes)
    (tmp_path / "b.py").write_text("import torchrec\nimport some_unknown_pkg\n")
    with pytest.raises(HarnessError, match="torchrec is imported by b.py"):
        plan(REQUIREMENTS, scan_imports(tmp_path))


def test_make_upstream_env_without_the_checkout_says_how_to_get_it(tmp_path):
    r = subprocess.run([sys.executable, "-m", "harness.upstream.env", str(tmp_path / "requirements.txt"),
                        str(tmp_path / "venv")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "make upstream" in r.stderr
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
    from harness.data.upstream_format import write_upstream_dir
    from harness.sid.index import read_index_json

    ds = read_dataset(work / "data/dataset")
    write_upstream_dir(ds, work / "data/sid/upstream", CAT, read_index_json(work / "data/sid/index.json"))
    return work


def _clean(work: Path) -> None:
    """An upstream run never changes the checkout (bytecode, wandb and outputs all go elsewhere)."""
    assert git(work / "upstream", "status", "--porcelain", "--ignored").stdout == ""


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A native SFT model (2 steps on the tiny workdir's data) to stand in for a pretrained base the fake sft.py
    'fine-tunes', trained once for this module."""
    from harness.data.schema import write_dataset
    from harness.data.synthetic import generate
    from harness.params import SyntheticParams
    from harness.sid.index import write_index_json
    from harness.sid.tokens import codes_to_tokens
    from harness.train.sft import run_sft

    d = tmp_path_factory.mktemp("tiny-model")
    ds = generate(SyntheticParams(n_items=40, n_users=120, seed=3), 10, (0.8, 0.1, 0.1))
    write_dataset(ds, d / "dataset")
    write_index_json(d / "index.json", {it.id: codes_to_tokens([it.id % 5, (it.id // 5) % 4, it.id // 20])
                                        for it in ds.items})
    (d / "sid").mkdir()
    (d / "index.json").rename(d / "sid" / "index.json")
    run_sft(SftParams(max_steps=2, batch_size=8, model=TINY_MODEL), d / "dataset", d / "sid", d / "base")
    return d / "base"


@pytest.fixture()
def base(tiny_model, checkout) -> Path:
    shutil.copytree(tiny_model, checkout / "base")
    return checkout / "base"


def test_upstream_sft_rl_and_cross_scored_evaluation_on_the_fake(checkout, base, monkeypatch):
    from harness.evaluate.metrics_stage import run_metrics
    from harness.report.model_tables import model_blocks

    monkeypatch.setenv("HF_ENDPOINT", "https://hf-mirror.com")  # upstream's rl.sh sets it; nothing may download
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")  # as inside a launched harness worker
    log = backends.run("sft", SftParams(backend="upstream", batch_size=4, num_processes=1,
                                        model={"source": str(base)}), *stage_paths("sft"))
    sft = checkout / "models/sft"
    assert log["backend"] == "upstream" and log["global_steps"] == 2 and log["best_eval_loss"] == 1.5
    assert log["train_loss"] == 1.8  # only printed by the Trainer, as the real run
    assert not (sft / "training_args.bin").exists() and (sft / "model.safetensors").is_file()
    seen = (sft / "upstream_logs/sft.log").read_text()
    assert "'HF_ENDPOINT': None, 'ACCELERATE_MIXED_PRECISION': None, 'WANDB_MODE': 'disabled', " \
           "'NCCL_IB_DISABLE': '1', 'MINIONEREC_SHIMS': 'cpu_bf16'" in seen
    run = json.loads((sft / "upstream_run.json").read_text())
    pin = git(checkout, "rev-parse", "HEAD:upstream").stdout.strip()
    assert run["upstream_commit"] == pin and run["upstream_matches_pin"] and run["exit_codes"] == [0]
    assert run["commands"][0]["argv"][run["commands"][0]["argv"].index("--category") + 1] == CAT
    assert run["commands"][0]["shims"] == ["cpu_bf16"]
    assert run["not_passed"]["lr_scheduler"]["params"] == "cosine" and "linear" in run["not_passed"]["lr_scheduler"][
        "upstream"]
    assert "(sft.py" in run["not_passed"]["bf16"]["upstream"]  # the script (and, in the real one, the line)
    _clean(checkout)

    with pytest.raises(HarnessError, match="needs a GPU: rl.py.*paged_adamw_32bit"):  # the real rl.py on a CPU
        backends.run("rl", RlParams(backend="upstream", num_processes=1), *stage_paths("rl"))
    monkeypatch.setattr(up_rl, "needs_gpu", lambda: None)  # the fake stands in for a GPU run
    with pytest.raises(ParamsError, match=r"rl.py(:\d+)? draws DataFrame.sample\(10000\)"):
        backends.run("rl", RlParams(backend="upstream", num_processes=1), *stage_paths("rl"))
    monkeypatch.setattr(up_rl, "SEQ_TITLE_SAMPLE", 10)
    rl_log = backends.run("rl", RlParams(backend="upstream", num_processes=1), *stage_paths("rl"))
    assert rl_log["upstream_commit"] == pin and rl_log["mean_reward_last_steps"] == pytest.approx(0.1)
    _clean(checkout)

    p = EvaluateParams(backend="both", prompts="upstream", num_beams=5, max_rows=12, num_processes=2)
    s = backends.run("evaluate", p, *stage_paths("evaluate", "sft"))
    assert s["evaluator"] == "native" and s["protocol"]["prompts"] == "upstream"
    assert s["metrics"]["legality_rate"] == 1.0  # native decoder, upstream's prompts and answer format
    up = json.loads((checkout / "reports/eval/sft/upstream/scores.json").read_text())
    # the fake ranks the target first on rows 0, 3, 6, 9, fifth on 1, 4, 7, 10, and never on the rest
    assert up["metrics"]["hr@1"] == pytest.approx(4 / 12) and up["metrics"]["hr@5"] == pytest.approx(8 / 12)
    assert up["metrics"]["calc_py_agrees"] and up["upstream_commit"] == pin
    assert len(list((checkout / "reports/eval/sft/upstream/upstream_logs").glob("evaluate-*.log"))) == 2
    agree = json.loads((checkout / "reports/eval/sft/upstream/agreement.json").read_text())
    assert agree["rows"] == 12 and sum(agree["classes"].values()) == 12
    _clean(checkout)
    backends.run("evaluate", p.model_copy(update={"backend": "upstream"}), *stage_paths("evaluate", "rl"))
    m = run_metrics(p, *stage_paths("metrics"))
    assert m["evaluated_by"]["rl"]["evaluator"] == "upstream" and "sft" in m["upstream_evaluate"]
    assert m["upstream_evaluate"]["sft"]["agreement"]["rows"] == 12
    labels = [label for label, _ in model_blocks(m)]
    from harness.evaluate.baselines import BASELINES

    assert any("upstream evaluate.py @ " + pin[:12] in x for x in labels) and len(labels) == 3 + len(BASELINES)
    _clean(checkout)


def test_agreement_names_a_class_and_a_cause_for_every_differing_row():
    cat = {"A", "B", "C", "D"}
    native = [["A", "B"], ["A", "B"], ["A", "B"], ["A", "B"], ["A", "B"]]
    upstream = [["A", "B"], ["A", "X"], ["B", "A"], ["A", "C"], ["C", "A"]]
    logp = {(2, "A"): -1.0, (2, "B"): -1.0 - 1e-7, (3, "B"): -2.0, (3, "C"): -3.0, (4, "A"): -1.0, (4, "C"): -0.5}
    got = up_evaluate.agreement(native, upstream, cat, {}, "float32", lambda row, sids: [logp[(row, s)] for s in sids])
    assert got["classes"] == {"identical": 1, "fail_open": 1, "inherited_sampling": 0, "tie": 1, "precision": 1,
                              "native_search": 1, "upstream_search": 0}
    assert got["identical_share"] == 0.2 and got["top1_agreement"] == 0.6
    same = up_evaluate.agreement(native[3:4], upstream[3:4], cat, {}, "bfloat16",
                                 lambda row, sids: [logp[(3, s)] for s in sids])
    assert same["classes"]["upstream_search"] == 1  # same precision on both sides: not a precision effect
    sampled = up_evaluate.agreement(native[3:4], upstream[3:4], cat, {"do_sample": True}, "float32", None)
    assert sampled["classes"]["inherited_sampling"] == 1


def test_calc_disagreement_or_a_missing_result_json_fails_and_writes_nothing(checkout, base, monkeypatch):
    shutil.copytree(base, checkout / "models/sft")
    p = EvaluateParams(backend="upstream", num_beams=5, max_rows=6)
    monkeypatch.setenv("FAKE_CALC_SKEW", "0.001")
    with pytest.raises(HarnessError, match="disagree with harness score"):
        backends.run("evaluate", p, *stage_paths("evaluate", "sft"))
    assert not (checkout / "reports/eval/sft").exists()
    monkeypatch.delenv("FAKE_CALC_SKEW")
    monkeypatch.setenv("FAKE_EVAL_EXIT", "2")  # H6: exit 2 is accepted once the result JSON exists
    assert backends.run("evaluate", p, *stage_paths("evaluate", "sft"))["metrics"]["rows"] == 6
    monkeypatch.setenv("FAKE_EVAL_NO_JSON", "1")
    shutil.rmtree(checkout / "reports/eval/sft")
    with pytest.raises(HarnessError, match="exited 2 without writing 0.json"):
        backends.run("evaluate", p, *stage_paths("evaluate", "sft"))
    assert not (checkout / "reports/eval/sft").exists()


def test_what_upstream_cannot_do_is_refused_up_front_naming_the_key_and_the_line(checkout, base):
    shutil.copytree(base, checkout / "models/sft")
    summary = json.loads((checkout / "data/dataset/summary.json").read_text())
    (checkout / "data/dataset/summary.json").write_text(json.dumps({**summary, "name": "synthetic"}))
    for stage, params, args in (("evaluate", EvaluateParams(backend="both"), stage_paths("evaluate", "sft")),
                                ("sft", SftParams(backend="upstream", model={"source": "scratch"}), stage_paths("sft"))):
        with pytest.raises(ParamsError, match=rf"key '{stage}.backend'.*{'evaluate' if stage == 'evaluate' else 'sft'}"
                                              r"\.py:\d+"):
            backends.run(stage, params, *args)
    with pytest.raises(ParamsError, match="sid.method.*generate_indices.py has no command line"):
        backends.run("sid", SidParams(backend="upstream", method="rqvae"), *stage_paths("sid"))
    with pytest.raises(ParamsError, match=r"sid.codebook_size.*not a power of two.*rqkmeans_faiss.py"):
        up_sid.refuse(SidParams(backend="upstream", method="rqkmeans", codebook_size=48))
    with pytest.raises(ParamsError, match="data.preprocess.reviews_file"):
        backends.run("data", DataParams(backend="upstream"), *stage_paths("data"))
    with pytest.raises(ParamsError, match="rl.num_generations.*does not divide"):
        up_rl.refuse(RlParams(num_generations=12), 20000)
    assert not (checkout / "reports/eval/sft/upstream").exists() and not (checkout / "models/rl").exists()


def test_unknown_flags_make_the_scripts_exit_2_and_the_wrapper_checks_flags_first(checkout):
    from harness.upstream import source

    r = subprocess.run([sys.executable, "evaluate.py", "--temperature", "1.0"], cwd=checkout / "upstream",
                       capture_output=True, text=True)
    assert r.returncode == 2 and "--temperature" in r.stderr
    with pytest.raises(HarnessError, match="takes no --temperature"):
        source.check_flags(["py", "evaluate.py", "--num_beams", "5", "--temperature", "1"], "evaluate.py", "main")
    source.check_flags(up_sft.command(SftParams(), "py", Path("b"), _files(checkout), Path("o"), CAT).argv, "sft.py",
                       "train")


def test_a_modified_upstream_checkout_is_refused_unless_allowed(checkout, base):
    shutil.copytree(base, checkout / "models/sft")
    (checkout / "upstream/calc.py").write_text((checkout / "upstream/calc.py").read_text() + "\n# edited\n")
    p = EvaluateParams(backend="upstream", num_beams=5, max_rows=3)
    with pytest.raises(HarnessError, match="local modifications"):
        backends.run("evaluate", p, *stage_paths("evaluate", "sft"))
    s = backends.run("evaluate", p, *stage_paths("evaluate", "sft"), allow_unpinned=True)
    run = json.loads((checkout / "reports/eval/sft/upstream_run.json").read_text())
    assert s["scored"] and run["upstream_dirty"] is True


def test_a_script_that_writes_into_the_checkout_fails_the_stage(checkout, base):
    shutil.copytree(base, checkout / "models/sft")
    calc = checkout / "upstream/calc.py"
    calc.write_text(calc.read_text() + "\nopen(__file__ + '.out', 'w').write('x')\n")
    git(checkout / "upstream", "commit", "-qam", "a calc.py that writes beside itself")
    git(checkout, "commit", "-qam", "pin it")
    with pytest.raises(HarnessError, match="upstream/ changed while.*calc.py.out"):
        backends.run("evaluate", EvaluateParams(backend="upstream", num_beams=5, max_rows=3), *stage_paths("evaluate", "sft"))


def test_a_temp_experiment_is_refused_before_anything_runs(checkout, base, monkeypatch, tmp_path):
    monkeypatch.setenv("DVC_ROOT", str(tmp_path / "the-real-workspace"))
    shutil.copytree(base, checkout / "models/sft")
    with pytest.raises(HarnessError, match="dvc exp run --temp.*dvc issues 7186, 10873"):
        backends.run("evaluate", EvaluateParams(backend="upstream"), *stage_paths("evaluate", "sft"))


def test_data_embed_and_sid_stages_from_the_fake_scripts(checkout, base, tmp_path):
    from harness.params import EmbedParams

    encoder = base  # any local HF model dir serves as text2emb's --plm_checkpoint
    raw = tmp_path / "raw"
    raw.mkdir()
    meta = [{"asin": f"B{i:03d}", "title": f"Widget {i} {'xyz'[i % 3] * (i % 5)}"} for i in range(30)]
    reviews = [{"reviewerID": f"U{u}", "asin": f"B{(u * 7 + j) % 30:03d}", "unixReviewTime": 1000 * u + j}
               for u in range(25) for j in range(4)]
    (raw / "meta.jsonl").write_text("".join(json.dumps(m) + "\n" for m in meta))
    (raw / "reviews.jsonl").write_text("".join(json.dumps(r) + "\n" for r in reviews))
    ds = backends.run("data", DataParams(backend="upstream", preprocess={"reviews_file": str(raw / "reviews.jsonl"),
                                                                         "metadata_file": str(raw / "meta.jsonl")}),
                      *stage_paths("data"))
    assert ds.name == CAT and len(ds.items) == 30 and {r.split for r in ds.interactions} == {"train", "valid", "test"}
    summary = json.loads((checkout / "data/dataset/summary.json").read_text())
    assert summary["upstream"]["upstream_commit"] and "TZ UTC" in (
        checkout / "data/dataset/upstream_logs/preprocess.log").read_text()

    meta_out = backends.run("embed", EmbedParams(backend="upstream", model=str(encoder), upstream={"max_sent_len": 64}),
                            *stage_paths("embed"))
    assert meta_out["source"] == "upstream" and meta_out["dim"] == 8
    assert meta_out["upstream"]["not_passed"]["dtype"]["upstream"].startswith("always loads the encoder in float16")

    s = backends.run("sid", SidParams(backend="upstream", method="rqkmeans", levels=3, codebook_size=4, compare=[]),
                     *stage_paths("sid"))
    assert s["backend"] == "upstream" and s["items"] == 30 and s["upstream_commit"] and s["code_base"] == 0
    assert s["codebook_size_per_level"] == [4, 4, 4]
    assert (checkout / "data/sid/upstream/info").is_dir()  # the upstream-layout export, as with native
    _clean(checkout)


def test_without_the_submodule_an_upstream_stage_says_how_to_check_it_out(tiny_workdir, tiny_model):
    work = tiny_workdir
    git(work, "init", "-q")
    git(work, "update-index", "--add", "--cacheinfo", "160000,81b4ba9811cfb152cf161f1c486fe516510d081e,upstream")
    git(work, "commit", "-qm", "gitlink only")
    (work / "params.yaml").write_text(yaml.safe_dump({"evaluate": {"backend": "upstream"}}))
    shutil.copytree(tiny_model, work / "models/sft")
    summary = json.loads((work / "data/dataset/summary.json").read_text())
    (work / "data/dataset/summary.json").write_text(json.dumps({**summary, "name": CAT}))
    r = subprocess.run([sys.executable, "-m", "harness.cli", *stage_args("evaluate", "sft")], cwd=work,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "make upstream" in r.stderr and "UPSTREAM_URL" in r.stderr, r.stderr
    assert not [f for f in (work / "reports").rglob("*") if f.is_file()]


def test_the_training_log_is_completed_from_what_the_trainer_printed(tmp_path):
    """sft.py keeps only its best checkpoint: steps after it and the final train_loss exist only in the output."""
    from harness.upstream.checkpoints import trainer_log

    (tmp_path / "run" / "checkpoint-3").mkdir(parents=True)
    state = {"global_step": 3, "best_metric": 2.5, "log_history": [{"loss": 4.0 - i, "step": i + 1} for i in range(3)]
             + [{"eval_loss": 2.5, "step": 3}]}
    (tmp_path / "run" / "checkpoint-3" / "trainer_state.json").write_text(json.dumps(state))
    printed = "".join(f" 40%|####| {i + 1}/5 [00:01<00:01]{{'loss': {4.0 - i}, 'epoch': {(i + 1) / 5}}}\n" for i in range(5))
    printed += "{'eval_loss': 2.6, 'epoch': 1.0}\n{'train_runtime': 2.0, 'train_loss': 2.9, 'epoch': 1.0}\n"
    printed += "{'not a': dict} __import__('os')\n"  # not a literal dict line: skipped, never evaluated
    (tmp_path / "sft.log").write_text(printed)
    log = trainer_log(tmp_path / "run", tmp_path / "sft.log")
    assert log["global_steps"] == 5 and log["train_loss"] == 2.9 and log["best_eval_loss"] == 2.5
    assert [h["step"] for h in log["log_history"] if "loss" in h] == [1, 2, 3, 4, 5]
    assert {"eval_loss": 2.6, "epoch": 1.0, "step": 5} in log["log_history"]
