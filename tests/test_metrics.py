"""HR/NDCG and legality against hand-computed cases."""

from __future__ import annotations

import math

import pytest

from harness.evaluate.baselines import most_popular, repeat_last
from harness.evaluate.metrics import first_hit_rank, hr_ndcg, legality, score
from harness.data.schema import Interaction


def test_first_hit_rank_is_first_match():
    assert first_hit_rank(["x", "t", "t"], "t") == 1
    assert first_hit_rank(["x", "y"], "t") is None
    assert first_hit_rank([], "t") is None


def test_hr_ndcg_hand_computed():
    ranks = [0, 2, None, 9]
    m = hr_ndcg(ranks, ks=(1, 3, 10))
    assert m["hr@1"] == 0.25
    assert m["hr@3"] == 0.5
    assert m["hr@10"] == 0.75
    assert m["ndcg@1"] == 0.25
    assert m["ndcg@3"] == pytest.approx((1 + 1 / math.log2(4)) / 4)  # = 0.375
    assert m["ndcg@10"] == pytest.approx((1 + 0.5 + 1 / math.log2(11)) / 4)


def test_rank_equal_to_k_is_a_miss():
    assert hr_ndcg([3], ks=(3,)) == {"hr@3": 0.0, "ndcg@3": 0.0}


def test_score_three_rows_like_calc_py():
    """Three rows: hit at rank 0, hit at rank 2, miss; one illegal string in the miss row."""
    cat = {"<a_1>", "<a_2>", "<a_3>", "<a_4>"}
    preds = [["<a_1>", "<a_2>", "<a_3>"], ["<a_2>", "<a_3>", "<a_1>"], ["<a_2>", "<zz>", "<a_3>"]]
    m = score(preds, ["<a_1>", "<a_1>", "<a_4>"], cat, ks=(1, 3))
    assert m["hr@3"] == pytest.approx(2 / 3)
    assert m["ndcg@3"] == pytest.approx((1 + 0.5) / 3)
    assert m["hr@1"] == pytest.approx(1 / 3)
    assert m["illegal_count"] == 1
    assert m["legality_rate"] == pytest.approx(8 / 9)


def test_legality_counts_every_beam():
    rate, illegal = legality([["a", "bad", "bad"], ["a"]], {"a"})
    assert illegal == 2 and rate == pytest.approx(0.5)


def test_hr_ndcg_rejects_empty():
    with pytest.raises(ValueError):
        hr_ndcg([])


def test_baselines():
    index = {0: ["<a_0>", "<b_0>"], 1: ["<a_1>", "<b_0>"], 2: ["<a_0>", "<b_0>"], 3: ["<a_2>", "<b_1>"]}
    train = [Interaction("u", (0,), t, "train") for t in (1, 1, 3, 2, 0, 3, 1)]
    # counts: 1->3, 3->2, 0->1, 2->1 ; items 0 and 2 share a SID, which appears once
    assert most_popular(train, index, 10) == ["<a_1><b_0>", "<a_2><b_1>", "<a_0><b_0>"]
    assert most_popular(train, index, 2) == ["<a_1><b_0>", "<a_2><b_1>"]
    assert repeat_last(Interaction("u", (3, 1), 0, "test"), index) == ["<a_1><b_0>"]
