"""Exact ranking of a whole catalogue: every SID scored as beam search scores it, log p(SID + EOS | prompt).

Beam search keeps ``num_beams`` prefixes per level, so a SID the model scores highly can be pruned at level 1
or 2 and never reach the Top-K; HR@K past the beam count is undefined. Scoring every catalogue sequence
exactly says what the beams lose. The work is shared the way the catalogue's prefixes are: one prefill of the
prompt, then one forward step per level over every live prefix of that level (each prefix fed its last token
on its parent's cache), and a last step that reads EOS after every complete sequence. A catalogue of N items
with n_d distinct prefixes at depth d costs n_1 + ... + n_D one-token rows per prompt, not N x D.

Memory is bounded by ``max_rows``: the first-level prefixes are processed in groups whose subtrees hold at
most that many prefixes at any depth (a single first-level subtree larger than that is processed alone).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PrefixLevels:
    """The distinct prefixes of a fixed-length catalogue, level by level: ``token[d][j]`` is the last token of
    prefix j at depth d+1, ``parent[d][j]`` its prefix at depth d (an index into level d-1; 0 = the prompt),
    and ``leaf[i]`` the index of sequence i among the complete prefixes."""

    token: list[torch.Tensor]
    parent: list[torch.Tensor]
    leaf: torch.Tensor

    @classmethod
    def of(cls, sequences: Sequence[Sequence[int]]) -> PrefixLevels:
        depth = len(sequences[0])
        if any(len(s) != depth for s in sequences):
            raise ValueError("exact ranking needs catalogue sequences of one length")
        ids: list[dict[tuple[int, ...], int]] = [{(): 0}] + [{} for _ in range(depth)]
        token: list[list[int]] = [[] for _ in range(depth)]
        parent: list[list[int]] = [[] for _ in range(depth)]
        for s in sequences:
            for d in range(1, depth + 1):
                p = tuple(s[:d])
                if p not in ids[d]:
                    ids[d][p] = len(token[d - 1])
                    token[d - 1].append(int(s[d - 1]))
                    parent[d - 1].append(ids[d - 1][p[:-1]])
        leaf = torch.tensor([ids[depth][tuple(s)] for s in sequences], dtype=torch.long)
        return cls([torch.tensor(t, dtype=torch.long) for t in token],
                   [torch.tensor(p, dtype=torch.long) for p in parent], leaf)

    @property
    def depth(self) -> int:
        return len(self.token)

    def sizes(self) -> list[int]:
        return [len(t) for t in self.token]

    def groups(self, max_rows: int) -> list[list[torch.Tensor]]:
        """The prefixes of each depth split into groups by first-level subtree: per group, the (ascending)
        prefix indices at every depth, no depth holding more than ``max_rows`` unless one subtree does."""
        root = [torch.arange(len(self.token[0]))]
        for d in range(1, self.depth):
            root.append(root[-1][self.parent[d]])  # first-level ancestor of every prefix at depth d+1
        count = torch.stack([torch.bincount(r, minlength=len(self.token[0])) for r in root])  # [depth, n_1]
        out, start, width = [], 0, len(self.token[0])
        while start < width:
            end = start + 1
            while end < width and int(count[:, start:end + 1].sum(dim=1).max()) <= max_rows:
                end += 1
            out.append([torch.nonzero((r >= start) & (r < end)).flatten() for r in root])
            start = end
        return out


@torch.inference_mode()
def exact_scores(model, prompt: Sequence[int], levels: PrefixLevels, eos_id: int, max_rows: int = 1024) -> torch.Tensor:
    """log p(sequence + EOS | prompt) of every catalogue sequence (in the order ``levels`` was built from),
    from the full-vocabulary softmax at every step, as ``sid_beam_search`` sums it. float32, on the CPU."""
    device = next(model.parameters()).device
    ids = torch.tensor([list(prompt)], dtype=torch.long, device=device)
    out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
    first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)[0]  # [vocab]
    prefill, plen = out.cache, ids.shape[1]
    leaf_score = torch.empty(levels.sizes()[-1], dtype=torch.float32)
    for group in levels.groups(max_rows):
        cache = copy.deepcopy(prefill)
        score = first[levels.token[0].to(device)[group[0].to(device)]]  # depth-1 prefixes of this group
        rows_prev = None
        for d in range(levels.depth):
            mine = group[d].to(device)
            if d == 0:
                cache.batch_repeat_interleave(len(mine))
            else:  # each prefix continues on its parent's cache; parents are positions in the previous group level
                pos = torch.searchsorted(rows_prev, levels.parent[d].to(device)[mine])
                cache.reorder_cache(pos)
                score = score[pos] + logp[pos, levels.token[d].to(device)[mine]]
            tok = levels.token[d].to(device)[mine][:, None]
            attn = torch.ones(len(mine), plen + d + 1, dtype=torch.long, device=device)
            position = torch.full((len(mine), 1), plen + d, dtype=torch.long, device=device)
            out = model(input_ids=tok, attention_mask=attn, position_ids=position, cache=cache, use_cache=True)
            logp = torch.log_softmax(out.logits[:, -1].float(), dim=-1)
            rows_prev = mine
        leaf_score[group[-1]] = (score + logp[:, eos_id]).cpu()
        del cache
    return leaf_score[levels.leaf]
