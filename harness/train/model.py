"""The embedded default model: a small Llama-architecture causal LM initialised from a config (no download)."""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from harness.params import ModelParams


def scratch_model(p: ModelParams, vocab_size: int, eos_id: int, pad_id: int, max_positions: int, seed: int):
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=p.hidden_size,
        intermediate_size=p.intermediate_size,
        num_hidden_layers=p.num_layers,
        num_attention_heads=p.num_heads,
        num_key_value_heads=p.num_heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)
