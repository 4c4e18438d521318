"""Constrained beam search never leaves the catalogue, fails closed, and ignores a model's sampling defaults."""

from __future__ import annotations

import random

import pytest
import torch
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    LogitsProcessor,
    LogitsProcessorList,
)

from harness.decode.constrained import (
    SidConstraint,
    SidTrie,
    constrained_beam_search,
    generation_config,
)
from harness.prompts import next_sid_prompt
from harness.sid.tokens import codes_to_tokens, sid_string, vocabulary
from harness.train.tokenizer import train_tokenizer


def _setup(seed: int, n_items: int = 60, k: int = 6):
    rng = random.Random(seed)
    index = {i: codes_to_tokens([rng.randrange(k), rng.randrange(k), rng.randrange(k)]) for i in range(n_items)}
    tok = train_tokenizer(["drills, flasks and safety glasses for the lab"] * 20, 300, vocabulary(index))
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, bos_token_id=None)
    model = LlamaForCausalLM(cfg)
    trie = SidTrie([tok.convert_tokens_to_ids(t) for t in index.values()], tok.eos_token_id)
    prompts = [next_sid_prompt([sid_string(index[(j * 7 + i) % n_items]) for i in range(1 + j % 6)])
               for j in range(12)]
    return index, tok, model, trie, prompts


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_beam_is_a_catalogue_sid(seed):
    index, tok, model, trie, prompts = _setup(seed)
    catalogue = {sid_string(t) for t in index.values()}
    beams = 30
    res = constrained_beam_search(model, tok, prompts, trie, beams, batch_size=5)
    assert len(res) == len(prompts)
    for r in res:
        strings = ["".join(tok.convert_ids_to_tokens(b)) for b in r.sequences]
        assert len(strings) == beams
        assert all(s in catalogue for s in strings)
        assert len(set(strings)) == beams  # beams are distinct SIDs
        assert r.scores == sorted(r.scores, reverse=True)


def test_constraint_fails_closed():
    trie = SidTrie([[10, 20, 30], [10, 21, 31]], eos_id=2)
    assert trie.allowed(()).tolist() == [10]
    assert trie.allowed((10,)).tolist() == [20, 21]
    assert trie.allowed((10, 20, 30)).tolist() == [2]
    assert trie.allowed((99,)).tolist() == [2]  # unknown prefix: EOS only, never unconstrained
    proc = SidConstraint(trie, prompt_len=1)
    scores = torch.zeros(2, 40)
    scores[:, 35] = 100.0  # the model loves an illegal token
    out = proc(torch.tensor([[5, 10], [5, 99]]), scores)
    assert out[0].argmax().item() in (20, 21)
    assert out[1].argmax().item() == 2
    assert torch.isinf(out[0, 35]) and torch.isinf(out[1, 35])


def test_model_generation_config_cannot_turn_beams_into_sampling():
    """Hazard H1: a checkpoint shipping sampling defaults must not change the ranked beams."""
    index, tok, model, trie, prompts = _setup(5)
    clean = constrained_beam_search(model, tok, prompts, trie, 20, batch_size=4)
    model.generation_config.do_sample = True
    model.generation_config.temperature = 0.3
    model.generation_config.top_k = 2
    model.generation_config.top_p = 0.5
    model.generation_config.repetition_penalty = 1.3
    torch.manual_seed(123)
    leaky = constrained_beam_search(model, tok, prompts, trie, 20, batch_size=4)
    assert [r.sequences for r in leaky] == [r.sequences for r in clean]


def test_variable_length_sids_decode_whole_and_legal():
    """Dedup-level SIDs (3 tokens for unique items, 4 for collision-group members) are never truncated (H10)."""
    import numpy as np

    from harness.sid.constrained import dedup_level

    rng = np.random.default_rng(0)
    codes = dedup_level(rng.integers(0, 4, size=(60, 3)))
    assert {len(c) for c in codes} == {3, 4}
    index = {i: codes_to_tokens(c) for i, c in enumerate(codes)}
    tok = train_tokenizer(["lab gear and tools"] * 20, 300, vocabulary(index))
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                                         bos_token_id=None))
    trie = SidTrie([tok.convert_tokens_to_ids(t) for t in index.values()], tok.eos_token_id)
    catalogue = {sid_string(t) for t in index.values()}
    # as many beams as SIDs: every catalogue SID, of either length, must come back whole
    res = constrained_beam_search(model, tok, [next_sid_prompt([sid_string(index[1])])] * 2, trie, len(catalogue),
                                  batch_size=2)
    for r in res:
        assert {"".join(tok.convert_ids_to_tokens(b)) for b in r.sequences} == catalogue


class _PerBeamLookup(LogitsProcessor):
    """The per-beam Python constraint (upstream's way): the reference the vectorised decoders must match."""

    def __init__(self, sequences, eos_id, prompt_len):
        self.prompt_len, self.eos_id, self.table = prompt_len, eos_id, {}
        for s in sequences:
            for i in range(len(s) + 1):
                self.table.setdefault(tuple(s[:i]), set()).add(s[i] if i < len(s) else eos_id)

    def __call__(self, input_ids, scores):
        mask = torch.full_like(scores, float("-inf"))
        for row, ids in enumerate(input_ids[:, self.prompt_len:].tolist()):
            mask[row, sorted(self.table.get(tuple(ids), {self.eos_id}))] = 0.0
        return scores + mask


def _reference(model, tok, prompts, seqs, beams):
    """generate's beam search with the per-beam lookup, one prompt at a time (no padding)."""
    out = []
    for p in prompts:
        ids = torch.tensor([tok(p, add_special_tokens=False).input_ids])
        gc = generation_config(beams, max(map(len, seqs)) + 1, tok.eos_token_id, tok.pad_token_id)
        res = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=gc,
                             logits_processor=LogitsProcessorList([_PerBeamLookup(seqs, tok.eos_token_id,
                                                                                  ids.shape[1])]))
        rows = res.sequences[:, ids.shape[1]:].tolist()
        out.append(([[t for t in r if t not in (tok.eos_token_id, tok.pad_token_id)] for r in rows],
                    res.sequences_scores.tolist()))
    return out


@pytest.mark.parametrize("seed", [0, 3])
def test_sid_decoder_returns_generates_ranked_beams(seed):
    """The specialised decoder (prefill once, one step per level) ranks exactly as generate's beam search with a
    per-beam constraint; its batches are padded and sorted by length, the reference runs prompt by prompt."""
    index, tok, model, trie, prompts = _setup(seed)
    seqs = [tok.convert_tokens_to_ids(t) for t in index.values()]
    assert trie.fixed
    ours = constrained_beam_search(model, tok, prompts, trie, 20, batch_size=5)
    ref = _reference(model, tok, prompts, seqs, 20)
    for r, (ref_seqs, ref_scores) in zip(ours, ref):
        # Rank for rank the same scores; a sequence may trade places only with one whose score it ties (the two
        # paths sum the same log-probs in a different order, so a near tie can flip on another CPU), and one
        # missing from the reference's list must tie the reference's last beam (it was cut at the boundary).
        assert r.scores == pytest.approx(ref_scores, abs=1e-4)
        by_seq = dict(zip(map(tuple, ref_seqs), ref_scores))
        for seq, score in zip(r.sequences, r.scores):
            assert score == pytest.approx(by_seq.get(tuple(seq), ref_scores[-1]), abs=1e-4), seq
        assert len(set(map(tuple, r.sequences))) == len(r.sequences)
        swapped = [i for i, (a, b) in enumerate(zip(r.sequences, ref_seqs)) if a != b]
        assert len(swapped) <= len(r.sequences) // 4, swapped  # ties are rare: most ranks agree exactly


def test_vectorised_mask_matches_the_per_beam_lookup_on_every_prefix():
    index, tok, model, trie, prompts = _setup(1)
    seqs = [tok.convert_tokens_to_ids(t) for t in index.values()]
    ref = _PerBeamLookup(seqs, tok.eos_token_id, prompt_len=0)
    prefixes = sorted({tuple(s[:i]) for s in seqs for i in range(4)}) + [(seqs[0][0], 999 % len(tok)), (5, 5, 5, 5)]
    for length in range(5):
        batch = [p for p in prefixes if len(p) == length]
        if not batch:
            continue
        ids = torch.tensor(batch, dtype=torch.long)
        assert torch.equal(SidConstraint(trie, 0)(ids, torch.zeros(len(batch), len(tok))),
                           ref(ids, torch.zeros(len(batch), len(tok))))


@pytest.mark.parametrize("seed,max_rows", [(0, 1024), (1, 7)])
def test_exact_ranking_equals_exhaustive_beam_search(seed, max_rows):
    """With at least as many beams as the catalogue has prefixes at every level, beam search prunes nothing, so
    its ranked beams must be the exact ranking, score for score; small ``max_rows`` splits the catalogue into
    first-level groups and must not change a score."""
    from harness.decode.exact import PrefixLevels, exact_scores

    index, tok, model, trie, prompts = _setup(seed)
    sids = list(dict.fromkeys(sid_string(t) for t in index.values()))
    seqs = [tok.convert_tokens_to_ids([f"<{c}" for c in s[1:].split("<")]) for s in sids]
    levels = PrefixLevels.of(seqs)
    assert levels.sizes()[-1] == len(sids) and max(len(g[0]) for g in levels.groups(max_rows)) >= 1
    res = constrained_beam_search(model, tok, prompts[:4], trie, len(sids), batch_size=4)
    for prompt, r in zip(prompts[:4], res):
        score = exact_scores(model, tok(prompt, add_special_tokens=False).input_ids, levels, tok.eos_token_id,
                             max_rows)
        order = torch.argsort(score, descending=True, stable=True).tolist()
        beams = ["".join(tok.convert_ids_to_tokens(b)) for b in r.sequences]
        assert beams == [sids[j] for j in order]
        assert torch.allclose(torch.tensor(r.scores), score[order], atol=1e-4)


def test_exact_best_never_below_a_narrow_beams_best():
    """Two beams can lose the best sequence: the exact best is never below the best beam, whose beam score is
    exactly its SID's exact score."""
    from harness.decode.exact import PrefixLevels, exact_scores

    index, tok, model, trie, prompts = _setup(4, n_items=120, k=8)
    sids = list(dict.fromkeys(sid_string(t) for t in index.values()))
    levels = PrefixLevels.of([tok.convert_tokens_to_ids([f"<{c}" for c in s[1:].split("<")]) for s in sids])
    for prompt, r in zip(prompts, constrained_beam_search(model, tok, prompts, trie, 2, batch_size=6)):
        score = exact_scores(model, tok(prompt, add_special_tokens=False).input_ids, levels, tok.eos_token_id)
        best_beam = "".join(tok.convert_ids_to_tokens(r.sequences[0]))
        assert float(score.max()) >= score[sids.index(best_beam)] - 1e-5
        assert abs(float(score[sids.index(best_beam)]) - r.scores[0]) < 1e-4
