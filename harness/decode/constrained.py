"""Constrained beam search over a catalogue of SIDs.

The constraint is a prefix trie over token ids: after a prefix of a catalogue SID, only tokens that
extend it to another catalogue prefix are allowed; after a complete SID, only EOS. A prefix that is not
in the trie (which can only happen to a beam that was already impossible) gets EOS alone: the
constraint fails *closed*, unlike upstream's, which leaves such rows unconstrained (spec H2).

Every generation setting that could let a model's shipped ``generation_config.json`` turn beam search
into beam sampling is set explicitly (spec H1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList


class SidTrie:
    """Allowed next token ids for every prefix of the catalogue's SID token sequences."""

    def __init__(self, sequences: Sequence[Sequence[int]], eos_id: int):
        self.eos_id = eos_id
        nexts: dict[tuple[int, ...], set[int]] = {}
        for seq in sequences:
            seq = tuple(seq)
            for i in range(len(seq)):
                nexts.setdefault(seq[:i], set()).add(seq[i])
            nexts.setdefault(seq, set()).add(eos_id)
        self._allowed = {k: torch.tensor(sorted(v), dtype=torch.long) for k, v in nexts.items()}
        self._closed = torch.tensor([eos_id], dtype=torch.long)
        self.max_len = max(len(s) for s in sequences) + 1  # SID tokens + EOS

    def allowed(self, prefix: tuple[int, ...]) -> torch.Tensor:
        return self._allowed.get(prefix, self._closed)


def catalogue_trie(tokenizer, index: dict[int, list[str]], model_dir: object, suffix: Sequence[int] = ()) -> SidTrie:
    """The trie of every catalogue SID in this tokenizer's ids; a SID token it lacks is an error, never UNK.
    ``suffix``: tokens every answer ends with before EOS (upstream-trained models answer "SID" + newline)."""
    from harness.errors import HarnessError

    seqs = [tokenizer.convert_tokens_to_ids(index[i]) for i in sorted(index)]
    if any(t == tokenizer.unk_token_id or t is None for s in seqs for t in s):
        raise HarnessError(f"{model_dir}: the tokenizer lacks SID tokens of the index.json")
    return SidTrie([[*s, *suffix] for s in seqs], tokenizer.eos_token_id)


class SidConstraint(LogitsProcessor):
    """Masks every token that would leave the catalogue, per beam, from the tokens generated so far."""

    def __init__(self, trie: SidTrie, prompt_len: int):
        self.trie = trie
        self.prompt_len = prompt_len

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        mask = torch.full_like(scores, float("-inf"))
        generated = input_ids[:, self.prompt_len :].tolist()
        for row, prefix in enumerate(generated):
            allowed = self.trie.allowed(tuple(prefix)).to(scores.device)
            mask[row, allowed] = 0.0
        return scores + mask


def generation_config(num_beams: int, max_new_tokens: int, eos_id: int, pad_id: int) -> GenerationConfig:
    """Deterministic beam search with every sampling knob pinned (nothing left for a model default)."""
    return GenerationConfig(
        num_beams=num_beams,
        num_return_sequences=num_beams,
        do_sample=False,
        temperature=1.0,
        top_k=0,
        top_p=1.0,
        repetition_penalty=1.0,
        length_penalty=0.0,
        early_stopping=True,
        max_new_tokens=max_new_tokens,
        min_new_tokens=0,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        bos_token_id=None,
        output_scores=True,
        return_dict_in_generate=True,
    )


@dataclass
class BeamResult:
    sequences: list[list[int]]  # generated token ids per beam, EOS/pad stripped, best first
    scores: list[float]


@torch.inference_mode()
def constrained_beam_search(
    model,
    tokenizer,
    prompts: Sequence[str] | Sequence[Sequence[int]],
    trie: SidTrie | None,
    num_beams: int,
    batch_size: int,
    progress=None,
    max_new_tokens: int | None = None,
) -> list[BeamResult]:
    """Decode ``num_beams`` ranked catalogue SIDs for every prompt (left-padded batches). A prompt is text, or
    token ids already rendered (e.g. by upstream's own dataset class). ``trie=None`` decodes *without* the
    constraint (for the constrained-vs-unconstrained comparison), ``max_new_tokens`` tokens at most."""
    model.eval()
    eos_id, pad_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    gc = generation_config(num_beams, max_new_tokens or trie.max_len, eos_id, pad_id)
    tokenizer.padding_side = "left"
    out: list[BeamResult] = []
    for start in range(0, len(prompts), batch_size):
        chunk = list(prompts[start : start + batch_size])
        enc = _encode(tokenizer, chunk, pad_id).to(model.device)
        plen = enc["input_ids"].shape[1]
        res = model.generate(
            **enc,
            generation_config=gc,
            logits_processor=LogitsProcessorList([SidConstraint(trie, plen)] if trie is not None else []),
        )
        seqs = res.sequences[:, plen:].tolist()
        scores = res.sequences_scores.tolist()
        for i in range(len(chunk)):
            beams = []
            for seq in seqs[i * num_beams : (i + 1) * num_beams]:
                end = next((j for j, t in enumerate(seq) if t in (eos_id, pad_id)), len(seq))
                beams.append(seq[:end])
            out.append(BeamResult(beams, scores[i * num_beams : (i + 1) * num_beams]))
        if progress is not None:
            progress(len(chunk))
    return out


def _encode(tokenizer, chunk: list, pad_id: int):
    """Left-padded input ids and attention mask for text prompts or pre-tokenised ones."""
    if chunk and not isinstance(chunk[0], str):
        from transformers import BatchEncoding

        width = max(len(ids) for ids in chunk)
        ids = [[pad_id] * (width - len(x)) + list(x) for x in chunk]
        mask = [[0] * (width - len(x)) + [1] * len(x) for x in chunk]
        return BatchEncoding({"input_ids": torch.tensor(ids, dtype=torch.long),
                              "attention_mask": torch.tensor(mask, dtype=torch.long)})
    return tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
