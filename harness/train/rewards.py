"""GRPO rewards, computed from each completion's token ids and each sample's own target SID.

Upstream looks the target up by prompt text -> history string -> target in global dicts merged from every
train dataset and then from the valid split. A history that occurs with several targets keeps only the last
one, so a sample can be rewarded against another sample's target (H14, docs/hazards.md). Here the target travels with
the sample (the dataset's ``target`` column), so that collision cannot happen.

- ``rule``: 1 for the completion whose SID equals the target, else 0.
- ``ndcg_rule``: the rank-aware penalty. Within a group that contains the target, a wrong beam at rank j gets
  p_j = -(1/log2(j+2)) / sum_{k<G} 1/log2(k+2), and the correct one gets 0. A group without the target gets
  0 throughout.
- ``ranking`` = rule + ndcg_rule, upstream's RL setting.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence


def rank_penalties(g: int) -> list[float]:
    z = sum(1 / math.log2(k + 2) for k in range(g))
    return [-(1 / math.log2(j + 2)) / z for j in range(g)]


def make_rewards(parse_sid: Callable[[Sequence[int]], str], kind: str, g: int) -> list[Callable]:
    """Reward functions for trl's GRPOTrainer; ``parse_sid`` turns completion ids into a SID string."""
    penalties = rank_penalties(g)

    def rule(completion_ids, target, **_) -> list[float]:
        return [float(parse_sid(ids) == t) for ids, t in zip(completion_ids, target)]

    def ndcg_rule(completion_ids, target, group, beam_rank, **_) -> list[float]:
        hit = [parse_sid(ids) == t for ids, t in zip(completion_ids, target)]
        group_has_target: dict[int, bool] = defaultdict(bool)
        for grp, h in zip(group, hit):
            group_has_target[grp] |= h
        return [0.0 if h or not group_has_target[grp] else penalties[rank]
                for h, grp, rank in zip(hit, group, beam_rank)]

    return [rule] if kind == "rule" else [rule, ndcg_rule]
