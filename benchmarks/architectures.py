"""Config-initialised models for the benchmark scripts: real architectures, random weights (time and memory
do not depend on weight values), nothing downloaded."""

from __future__ import annotations

import torch

ARCHITECTURES = {
    # the embedded default's size: a 2-layer Llama
    "tiny": ("llama", dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=4)),
    # Qwen2.5-1.5B-Instruct's config.json (the model of upstream's recipes and of the single-gpu-16gb profile)
    "qwen2.5-1.5b": ("qwen2", dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                                   num_attention_heads=12, num_key_value_heads=2, rope_theta=1_000_000.0,
                                   rms_norm_eps=1e-6, tie_word_embeddings=True)),
}
QWEN_VOCAB = 151_936  # Qwen2.5's embedding rows


def config_model(name: str, vocab_size: int, eos_id: int, pad_id: int, max_positions: int = 1024,
                 seed: int = 0):
    """A freshly initialised causal LM of architecture ``name`` with ``vocab_size`` embedding rows."""
    from transformers import AutoConfig, AutoModelForCausalLM

    kind, dims = ARCHITECTURES[name]
    config = AutoConfig.for_model(kind, vocab_size=vocab_size, eos_token_id=eos_id, pad_token_id=pad_id,
                                  bos_token_id=None, max_position_embeddings=max_positions, **dims)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config)
