"""GRPO rewards: each sample is scored against its own target, with upstream's rank-aware penalty."""

from __future__ import annotations

import math

import pytest

from harness.train.rewards import make_rewards, rank_penalties


def parse(ids):  # completion ids here are already SID strings, one token each
    return ids[0]


def test_rank_penalties_sum_to_minus_one_and_hurt_top_ranks_most():
    p = rank_penalties(4)
    assert sum(p) == pytest.approx(-1.0)
    assert p[0] < p[1] < p[2] < p[3] < 0
    assert p[0] == pytest.approx(-1 / sum(1 / math.log2(k + 2) for k in range(4)))


def test_same_history_different_targets_are_each_scored_against_their_own_label():
    """H14: upstream keys the target by history text, so one of two such samples is scored wrongly."""
    (rule,) = make_rewards(parse, "rule", 2)
    completions = [["<a_1>"], ["<a_2>"], ["<a_1>"], ["<a_2>"]]
    targets = ["<a_1>", "<a_1>", "<a_2>", "<a_2>"]  # two groups, same prompt, different targets
    assert rule(completions, targets) == [1.0, 0.0, 0.0, 1.0]


def test_ranking_penalises_wrong_beams_only_in_groups_that_contain_the_target():
    rule, ndcg = make_rewards(parse, "ranking", 3)
    p = rank_penalties(3)
    completions = [["x"], ["t"], ["y"], ["x"], ["y"], ["z"]]
    targets = ["t"] * 6
    group, rank = [0, 0, 0, 1, 1, 1], [0, 1, 2, 0, 1, 2]
    assert ndcg(completions, targets, group=group, beam_rank=rank) == [p[0], 0.0, p[2], 0.0, 0.0, 0.0]
    total = [a + b for a, b in zip(rule(completions, targets), ndcg(completions, targets, group=group, beam_rank=rank))]
    assert total[1] == 1.0 and total[0] < total[2] < 0
