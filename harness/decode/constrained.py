"""Constrained beam search over a catalogue of SIDs.

The catalogue is a trie over token ids stored as dense tables, one per depth: a beam's state is its node
index, the allowed next tokens of every beam come from one gather, and the mask for a whole batch is one
tensor operation per step, on the model's device. After a complete SID only EOS is allowed; a prefix that
is not in the trie (which can only happen to a beam that was already impossible) gets EOS alone: the
constraint fails *closed*, unlike upstream's, which leaves such rows unconstrained (H2, docs/hazards.md).

Two decoders use it. For catalogues whose sequences all have the same length (SIDs without a dedup level,
with or without a fixed suffix) ``sid_beam_search`` prefills each prompt once, expands the KV cache to the
beams, and takes one forward step per SID level plus the EOS step, scoring only the allowed candidates: the
same ranked beams as ``generate``'s beam search with ``length_penalty 0``, without its full-vocabulary
bookkeeping. Variable-length catalogues go through ``generate`` with the vectorised ``SidConstraint``.

Every generation setting that could let a model's shipped ``generation_config.json`` turn beam search
into beam sampling is set explicitly (H1, docs/hazards.md).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

NEG = float("-inf")


class SidTrie:
    """Catalogue token sequences as per-depth tables: ``tokens[d]`` (code -> token id), ``code[d]`` (token id ->
    code, -1 if the token never occurs at depth d), ``child[d]`` (node x code -> node at depth d+1, -1 if
    absent) and ``terminal[d]`` (the node completes a sequence: EOS allowed)."""

    def __init__(self, sequences: Sequence[Sequence[int]], eos_id: int, vocab_size: int | None = None):
        seqs = [tuple(int(t) for t in s) for s in sequences]
        if not seqs or not all(seqs):
            raise ValueError("a catalogue trie needs at least one non-empty sequence")
        self.eos_id = eos_id
        self.depth = max(len(s) for s in seqs)
        self.fixed = len({len(s) for s in seqs}) == 1  # every sequence ends at the same depth
        self.max_len = self.depth + 1  # tokens + EOS
        width = max(vocab_size or 0, eos_id + 1, 1 + max(max(s) for s in seqs))
        nodes: list[dict[tuple[int, ...], int]] = [{(): 0}] + [{} for _ in range(self.depth)]
        for s in seqs:
            for d in range(len(s)):
                nodes[d + 1].setdefault(s[: d + 1], len(nodes[d + 1]))
        toks = [sorted({s[d] for s in seqs if len(s) > d}) for d in range(self.depth)]
        self.tokens = [torch.tensor(t, dtype=torch.long) for t in toks]
        self.code = torch.full((self.depth, width), -1, dtype=torch.long)
        for d, t in enumerate(toks):
            self.code[d, torch.tensor(t)] = torch.arange(len(t))
        self.child = [torch.full((len(nodes[d]), len(toks[d])), -1, dtype=torch.long) for d in range(self.depth)]
        for d in range(self.depth):
            for prefix, n in nodes[d + 1].items():
                self.child[d][nodes[d][prefix[:-1]], self.code[d, prefix[-1]]] = n
        self.terminal = [torch.zeros(len(nodes[d]), dtype=torch.bool) for d in range(self.depth + 1)]
        for s in seqs:
            self.terminal[len(s)][nodes[len(s)][s]] = True
        self.device = torch.device("cpu")

    def to(self, device: torch.device | str) -> SidTrie:
        """The tables on ``device`` (moved once; a no-op when they are there already)."""
        device = torch.device(device)
        if device != self.device:
            self.tokens = [t.to(device) for t in self.tokens]
            self.child = [t.to(device) for t in self.child]
            self.terminal = [t.to(device) for t in self.terminal]
            self.code = self.code.to(device)
            self.device = device
        return self

    def states(self, generated: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(node, inside) for each row of generated token ids: its node at depth ``generated.shape[1]``, and
        whether every token so far followed the trie."""
        rows, t = generated.shape
        node = torch.zeros(rows, dtype=torch.long, device=generated.device)
        inside = torch.ones(rows, dtype=torch.bool, device=generated.device)
        width = self.code.shape[1]
        for d in range(min(t, self.depth)):
            tok = generated[:, d]
            code = self.code[d][tok.clamp(0, width - 1)]
            inside &= (tok < width) & (code >= 0)
            nxt = self.child[d][node, code.clamp(min=0)]
            inside &= nxt >= 0
            node = torch.where(inside, nxt, torch.zeros_like(nxt))
        if t > self.depth:
            inside &= False
        return node, inside

    def mask(self, generated: torch.Tensor, vocab: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """An additive mask ``[rows, vocab]``: 0 where a row may continue, -inf elsewhere (EOS only outside)."""
        rows, t = generated.shape
        node, inside = self.states(generated)
        out = torch.full((rows, vocab), NEG, dtype=dtype, device=generated.device)
        zero = torch.zeros((), dtype=dtype, device=generated.device)
        neg = torch.full((), NEG, dtype=dtype, device=generated.device)
        if t < self.depth:
            ok = (self.child[t][node] >= 0) & inside[:, None]
            out[:, self.tokens[t]] = torch.where(ok, zero, neg)
        eos = ~inside | (self.terminal[t][node] if t <= self.depth else torch.ones_like(inside))
        out[:, self.eos_id] = torch.where(eos, zero, neg)
        return out

    def allowed(self, prefix: tuple[int, ...]) -> torch.Tensor:
        """Allowed next token ids after one prefix (for inspection and tests)."""
        row = self.mask(torch.tensor([list(prefix)], dtype=torch.long, device=self.device), self.code.shape[1])[0]
        return torch.nonzero(row == 0).flatten().cpu()


def catalogue_trie(tokenizer, index: dict[int, list[str]], model_dir: object, suffix: Sequence[int] = ()) -> SidTrie:
    """The trie of every catalogue SID in this tokenizer's ids; a SID token it lacks is an error, never UNK.
    ``suffix``: tokens every answer ends with before EOS (upstream-trained models answer "SID" + newline)."""
    from harness.errors import HarnessError

    seqs = [tokenizer.convert_tokens_to_ids(index[i]) for i in sorted(index)]
    if any(t == tokenizer.unk_token_id or t is None for s in seqs for t in s):
        raise HarnessError(f"{model_dir}: the tokenizer lacks SID tokens of the index.json")
    return SidTrie([[*s, *suffix] for s in seqs], tokenizer.eos_token_id, len(tokenizer))


class SidConstraint(LogitsProcessor):
    """For ``generate``: masks every token that would leave the catalogue, for all beams in one operation."""

    def __init__(self, trie: SidTrie, prompt_len: int):
        self.trie = trie
        self.prompt_len = prompt_len

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.trie.to(scores.device)
        return scores + self.trie.mask(input_ids[:, self.prompt_len:], scores.shape[1], scores.dtype)


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


def _left_pad(prompts: Sequence[Sequence[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad_id] * (width - len(p)) + list(p) for p in prompts], dtype=torch.long, device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], dtype=torch.long, device=device)
    return ids, mask


@torch.inference_mode()
def sid_beam_search(model, prompts: Sequence[Sequence[int]], trie: SidTrie, num_beams: int,
                    pad_id: int) -> list[BeamResult]:
    """Beam search over a fixed-depth catalogue, ranked as ``generate``'s beam search with ``length_penalty 0``
    ranks it (sum of log-probabilities, EOS included). Each prompt is prefilled once; its cache is expanded
    to the beams; each step scores only the allowed candidates of every beam and keeps the best
    ``num_beams``; the last step adds EOS to every complete sequence."""
    if not trie.fixed:
        raise ValueError("sid_beam_search needs sequences of one length (use generate with SidConstraint)")
    device = next(model.parameters()).device
    trie.to(device)
    b = len(prompts)
    ids, attn = _left_pad(prompts, pad_id, device)
    pos = (attn.cumsum(-1) - 1).clamp(min=0)  # positions as generate derives them for left padding
    out = model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=True, logits_to_keep=1)
    logp = torch.log_softmax(out.logits[:, -1].float(), dim=-1)
    cache = out.cache
    first = trie.tokens[0]
    scores, code = logp[:, first].topk(min(num_beams, len(first)), dim=-1)  # every first code is allowed
    node = trie.child[0][0][code]
    seqs = first[code].unsqueeze(-1)  # [b, beams, generated]
    beams = code.shape[1]
    cache.batch_repeat_interleave(beams)
    attn, last = attn.repeat_interleave(beams, 0), pos[:, -1:].repeat_interleave(beams, 0)
    offsets = torch.arange(b, device=device)[:, None]
    for d in range(1, trie.depth + 1):
        attn = torch.cat([attn, attn.new_ones(attn.shape[0], 1)], dim=1)
        last = last + 1
        out = model(input_ids=seqs[:, :, -1].reshape(-1, 1), attention_mask=attn, position_ids=last,
                    cache=cache, use_cache=True)
        logp = torch.log_softmax(out.logits[:, -1].float(), dim=-1).view(b, beams, -1)
        if d == trie.depth:  # every sequence is complete: EOS is the only continuation
            final = scores + logp[:, :, trie.eos_id]
            order = final.argsort(dim=-1, descending=True, stable=True)
            seqs, final = seqs.gather(1, order[:, :, None].expand_as(seqs)), final.gather(1, order)
            return [BeamResult(seqs[i].tolist(), final[i].tolist()) for i in range(b)]
        toks = trie.tokens[d]
        nxt = trie.child[d][node]  # [b, beams, codes]
        total = torch.where(nxt >= 0, scores[:, :, None] + logp[:, :, toks], NEG).view(b, -1)
        keep = min(num_beams, int((nxt >= 0).sum(dim=(1, 2)).min()))
        scores, flat = total.topk(keep, dim=-1)
        origin = flat // len(toks)
        node = nxt.view(b, -1).gather(1, flat)
        seqs = torch.cat([seqs.gather(1, origin[:, :, None].expand(-1, -1, seqs.shape[2])),
                          toks[flat % len(toks)][:, :, None]], dim=2)
        rows = (origin + offsets * beams).view(-1)
        cache.reorder_cache(rows)
        attn, last, beams = attn[rows], last[rows], keep
    raise AssertionError("unreachable")


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
    """Decode ``num_beams`` ranked catalogue SIDs for every prompt. A prompt is text, or token ids already
    rendered (e.g. by upstream's own dataset class). Prompts are batched by length (less padding) and the
    results returned in the input order. ``trie=None`` decodes *without* the constraint (the
    constrained-vs-unconstrained comparison), ``max_new_tokens`` tokens at most."""
    model.eval()
    eos_id, pad_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    encoded = [list(p) if not isinstance(p, str) else tokenizer(p, add_special_tokens=False).input_ids
               for p in prompts]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    results: dict[int, BeamResult] = {}
    for start in range(0, len(order), batch_size):
        chunk = order[start: start + batch_size]
        batch = [encoded[i] for i in chunk]
        if trie is not None and trie.fixed:
            found = sid_beam_search(model, batch, trie, num_beams, pad_id)
        else:
            found = _generate(model, batch, trie, num_beams, eos_id, pad_id, max_new_tokens)
        results.update(zip(chunk, found))
        if progress is not None:
            progress(len(chunk))
    return [results[i] for i in range(len(encoded))]


def iter_constrained_beam_search(model, tokenizer, prompts: Sequence, trie: SidTrie | None, num_beams: int,
                                 batch_size: int, chunk_rows: int = 4096, progress=None,
                                 max_new_tokens: int | None = None) -> Iterator[list[BeamResult]]:
    """``constrained_beam_search`` over consecutive chunks of ``chunk_rows`` prompts, yielded in input order:
    the results held at once are bounded by the chunk, not by the number of prompts (50k test rows x 50
    beams would otherwise sit in memory until the end). Within a chunk, prompts are batched by length as
    usual."""
    for start in range(0, len(prompts), chunk_rows):
        yield constrained_beam_search(model, tokenizer, prompts[start:start + chunk_rows], trie, num_beams,
                                      batch_size, progress, max_new_tokens)


def _generate(model, batch: list[list[int]], trie: SidTrie | None, num_beams: int, eos_id: int, pad_id: int,
              max_new_tokens: int | None) -> list[BeamResult]:
    """``generate``'s beam search, with the vectorised constraint (variable-length catalogues) or none."""
    device = next(model.parameters()).device
    ids, attn = _left_pad(batch, pad_id, device)
    plen = ids.shape[1]
    gc = generation_config(num_beams, max_new_tokens or trie.max_len, eos_id, pad_id)
    res = model.generate(input_ids=ids, attention_mask=attn, generation_config=gc,
                         logits_processor=LogitsProcessorList([SidConstraint(trie, plen)] if trie else []))
    seqs, scores = res.sequences[:, plen:].tolist(), res.sequences_scores.tolist()
    out = []
    for i in range(len(batch)):
        beams = []
        for seq in seqs[i * num_beams: (i + 1) * num_beams]:
            end = next((j for j, t in enumerate(seq) if t in (eos_id, pad_id)), len(seq))
            beams.append(seq[:end])
        out.append(BeamResult(beams, scores[i * num_beams: (i + 1) * num_beams]))
    return out
