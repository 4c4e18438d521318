"""The real upstream scripts at the pinned commit, run through the upstream backend on upstream's Industrial data.

These run whenever ``upstream/`` is checked out (``make upstream``) and its environment is built (``make
upstream-env``), and skip with that reason otherwise (a fresh clone has neither: GitHub, or a mirror, and 6.5
GiB of packages are needed). Each stage's real script runs on CPU in seconds on a small slice: text2emb, the
three SID builders, sft.py, evaluate.py per shard + calc.py; rl.py cannot run on a CPU (its paged optimizer
needs CUDA), so its refusal and its command line against the real signature are what is checked. After every
stage, ``git status`` in ``upstream/`` must be clean.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from harness.params import (
    DataParams,
    EmbedParams,
    EvaluateParams,
    RlParams,
    SftParams,
    SidParams,
)
from harness.provenance import git_record
from harness.upstream import backends
from harness.upstream.runner import PYTHON_ENV, UPSTREAM_VENV
from tests.conftest import CATEGORY, REPO
from tests.test_submodule import git


def _ready() -> str | None:
    rec = git_record(REPO)
    if not rec["upstream_initialised"]:
        return "upstream/ is not checked out (make upstream [UPSTREAM_URL=...])"
    if not rec["upstream_matches_pin"] or rec["upstream_dirty"]:
        return f"upstream/ is not the clean pinned commit {rec['upstream_pinned']}"
    if not (os.environ.get(PYTHON_ENV) or (REPO / UPSTREAM_VENV / "bin" / "python").exists()):
        return "no upstream environment (make upstream-env)"
    return None


pytestmark = [pytest.mark.upstream_real, pytest.mark.skipif(_ready() is not None, reason=_ready() or "")]
QWEN2_TINY = {"source": "scratch", "architecture": "qwen2", "hidden_size": 32, "num_layers": 1, "num_heads": 2,
              "intermediate_size": 64, "tokenizer_vocab_size": 1500}


def _clean() -> None:
    assert git(REPO / "upstream", "status", "--porcelain", "--ignored").stdout == ""


@pytest.fixture(scope="module")
def industrial(shared_amazon, tmp_path_factory):
    """Upstream's Industrial export (valid split as training data, shipped SIDs) as the pipeline's artifacts, in a
    folder inside the repository (so upstream/ resolves), with MiniLM vectors from the native embed stage."""
    from harness.data.stage import run_data
    from harness.embed.stage import run_embed

    work = REPO / ".pytest-upstream-work"
    shutil.rmtree(work, ignore_errors=True)
    old = Path.cwd()
    os.chdir(REPO)
    try:
        run_data(DataParams(source="upstream", upstream={"dir": str(shared_amazon), "category": CATEGORY,
                                                         "valid_as_train": True}), work / "data/dataset")
        run_embed(EmbedParams(), work / "data/dataset", work / "data/embed")
        yield work
    finally:
        os.chdir(old)
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture()
def at_repo(monkeypatch):
    monkeypatch.chdir(REPO)
    monkeypatch.delenv("DVC_ROOT", raising=False)


def test_text2emb_embeds_like_the_native_encoder_in_fp16(industrial, at_repo, tmp_path):
    """amazon_text2emb.py on a 120-item slice of the catalogue with MiniLM: upstream mean-pools in fp16 without
    normalising. The native encoder with the same pooling and length points the same way (median cosine 0.98 on
    this slice); the rest is the two text cleanings (upstream embeds the description's list literal as a string,
    H16) and fp16."""
    from harness.data.schema import Dataset, read_dataset, write_dataset
    from harness.embed.stage import embed_items

    ds = read_dataset(industrial / "data/dataset")
    small = Dataset(name=ds.name, items=ds.items[:120], interactions=[], sid_index=None)
    write_dataset(small, tmp_path / "dataset")
    from harness.errors import ParamsError

    with pytest.raises(ParamsError, match=r"embed.upstream.max_sent_len.*512 positions.*amazon_text2emb.py:\d+"):
        backends.run("embed", EmbedParams(backend="upstream"), tmp_path / "dataset", tmp_path / "embed")
    p = EmbedParams(backend="upstream", upstream={"max_sent_len": 256})
    meta = backends.run("embed", p, tmp_path / "dataset", tmp_path / "embed")
    assert meta["source"] == "upstream" and meta["items"] == 120 and meta["dim"] == 384
    up = np.load(tmp_path / "embed" / "embeddings.npy")
    native, _ = embed_items(small.items, EmbedParams(normalize=False, cache=False, max_length=256),
                            show_progress=False)
    cos = (up * native).sum(1) / np.linalg.norm(up, axis=1) / np.linalg.norm(native, axis=1)
    assert np.median(cos) > 0.95 and cos.min() > 0.5, np.percentile(cos, [0, 50])
    run = json.loads((tmp_path / "embed" / "upstream_run.json").read_text())
    assert run["upstream_matches_pin"] and run["not_passed"]["normalize"]["params"] is True
    _clean()


@pytest.mark.parametrize("method", ["rqkmeans", "rqkmeans-constrained", "rqkmeans-plus"])
def test_each_upstream_sid_builder_writes_an_index_the_pipeline_reads(industrial, at_repo, tmp_path, method):
    p = SidParams(backend="upstream", method=method, levels=3, codebook_size=8, kmeans_iters=5, compare=[],
                  rqkmeans_plus={"epochs": 2, "eval_every": 1})
    s = backends.run("sid", p, industrial / "data/dataset", industrial / "data/embed", tmp_path / "sid")
    index = json.loads((tmp_path / "sid" / "index.json").read_text())
    assert s["backend"] == "upstream" and s["items"] == len(index) == 3686
    lengths = {len(t) for t in index.values()}
    codes = {int(t[0][3:-1]) for t in index.values()}
    if method == "rqkmeans":
        assert lengths == {3} and s["code_base"] == 0 and codes <= set(range(8))
    else:  # 1-based codes and a dedup level for colliding items; the given sizes go to the audit
        assert lengths <= {3, 4} and s["code_base"] == 1 and codes <= set(range(1, 9))
        assert s["codebook_size_per_level"][:3] == [8, 8, 8]
    run = json.loads((tmp_path / "sid" / "upstream_run.json").read_text())
    scripts = [c["argv"][1] for c in run["commands"]]
    assert scripts == {"rqkmeans": ["rqkmeans_faiss.py"], "rqkmeans-constrained": ["rqkmeans_constrained.py"],
                       "rqkmeans-plus": ["rqkmeans_constrained.py", "rqkmeans_plus.py",
                                         "generate_indices_plus.py"]}[method]
    if method == "rqkmeans-plus":
        assert run["commands"][-1]["env"] == {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"} and "2024" in run["not_passed"]["seed"][
            "upstream"]
    _clean()


def test_sft_py_trains_and_its_model_is_scored_by_evaluate_py_and_the_native_decoder(industrial, at_repo, tmp_path):
    """The real sft.py (bf16 on the CPU through the recorded shim) from the scratch Qwen2-style model, on the valid
    split as training data (the train CSV then stands in for its --eval_file, recorded), then evaluate.backend both
    with upstream's prompts: calc.py agrees with harness score, and the two decoders' Top-K are compared row by
    row."""
    from harness.data.schema import read_dataset
    from harness.data.upstream_format import write_upstream_dir
    from harness.sid.index import read_index_json

    work = tmp_path / "w"
    shutil.copytree(industrial / "data/dataset", work / "data/dataset")
    ds = read_dataset(work / "data/dataset")
    index = read_index_json(industrial / "data/dataset" / "sid_index.json")
    (work / "data/sid").mkdir(parents=True)
    shutil.copy(industrial / "data/dataset" / "sid_index.json", work / "data/sid/index.json")
    write_upstream_dir(ds, work / "data/sid/upstream", ds.name, index)
    p = SftParams(backend="upstream", model=QWEN2_TINY, epochs=1, batch_size=8, max_length=256,
                  learning_rate=1e-3, upstream={"sample": 32})
    log = backends.run("sft", p, work / "data/dataset", work / "data/sid", work / "models/sft")
    assert log["backend"] == "upstream" and log["global_steps"] and log["train_loss"] is not None
    run = json.loads((work / "models/sft/upstream_run.json").read_text())
    assert run["commands"][0]["shims"] == ["cpu_bf16"] and run["exit_codes"] == [0]
    assert "sft.py:" in run["not_passed"]["bf16"]["upstream"]
    assert run["commands"][0]["argv"][run["commands"][0]["argv"].index("--eval_file") + 1].endswith(
        "train/Industrial_and_Scientific_5_2016-10-2018-11.csv") and "valid_split" in run["not_passed"]
    _clean()

    e = EvaluateParams(backend="both", prompts="upstream", num_beams=5, max_rows=16, num_processes=2,
                       batch_size=8, unconstrained_rows=0)
    s = backends.run("evaluate", e, "sft", work / "data/dataset", work / "data/sid", work / "models/sft",
                     work / "reports/eval/sft")
    up = json.loads((work / "reports/eval/sft/upstream/scores.json").read_text())
    assert up["metrics"]["calc_py_agrees"] and up["metrics"]["rows"] == 16 and up["metrics"]["illegal_count"] == 0
    assert s["metrics"]["legality_rate"] == 1.0 and s["protocol"]["prompts"] == "upstream"
    agree = json.loads((work / "reports/eval/sft/upstream/agreement.json").read_text())
    assert agree["rows"] == 16 and sum(agree["classes"].values()) == 16
    assert agree["classes"]["fail_open"] == 0 and agree["classes"]["inherited_sampling"] == 0
    _clean()


def test_rl_py_is_refused_on_a_cpu_and_its_command_line_matches_the_real_signature(industrial, at_repo, tmp_path):
    import torch

    from harness.errors import HarnessError
    from harness.upstream import rl, source
    from harness.upstream.export import upstream_files

    cmd = rl.command(RlParams(), "py", tmp_path / "sft", upstream_files(tmp_path, CATEGORY), tmp_path / "o", CATEGORY,
                     None)
    source.check_flags(cmd.argv, "rl.py", "train")  # every flag we pass is a parameter of rl.py's train()
    assert source.category_dict("rl.py")[0][:2] == ["Industrial_and_Scientific", "Office_Products"]
    if not torch.cuda.is_available():
        with pytest.raises(HarnessError, match=r"needs a GPU: rl.py:\d+ sets optim='paged_adamw_32bit'"):
            rl.needs_gpu()
