"""The embedded default dataset follows upstream's protocol and is deterministic."""

from __future__ import annotations

from collections import defaultdict

import pytest

from harness.data.synthetic import generate
from harness.params import SyntheticParams

SPLIT = (0.8, 0.1, 0.1)


@pytest.fixture(scope="module")
def ds():
    return generate(SyntheticParams(n_items=120, n_users=300, seed=7), 10, SPLIT)


def test_windows_at_most_max_history(ds):
    assert all(1 <= len(r.history) <= 10 for r in ds.interactions)
    assert max(len(r.history) for r in ds.interactions) == 10


def test_no_valid_or_test_target_earlier_than_a_train_target(ds):
    last_train = max(r.timestamp for r in ds.split("train"))
    assert min(r.timestamp for r in ds.split("valid")) >= last_train
    assert min(r.timestamp for r in ds.split("test")) >= max(r.timestamp for r in ds.split("valid"))


def test_split_sizes_follow_upstream_arithmetic(ds):
    n = len(ds.interactions)
    assert len(ds.split("train")) == int(0.8 * n)
    assert len(ds.split("train")) + len(ds.split("valid")) == int(0.9 * n)


def test_windows_slide_over_each_users_time_ordered_sequence(ds):
    by_user = defaultdict(list)
    for r in ds.interactions:
        by_user[r.user].append(r)
    for rows in by_user.values():
        rows.sort(key=lambda r: r.timestamp)
        seq = list(rows[0].history) + [r.target for r in rows]
        assert len(rows[0].history) == 1  # the first sample of a user has one history item
        for i, r in enumerate(rows, start=1):
            assert r.history == tuple(seq[max(0, i - 10) : i])


def test_catalogue_is_realistic(ds):
    assert len(ds.items) == 120 and [it.id for it in ds.items] == list(range(120))
    assert len({it.title for it in ds.items}) == 120
    assert all(it.description and it.brand and it.category for it in ds.items)


def test_deterministic_for_a_seed():
    p = SyntheticParams(n_items=60, n_users=80, seed=11)
    a, b = generate(p, 10, SPLIT), generate(p, 10, SPLIT)
    assert a.items == b.items and a.interactions == b.interactions
    c = generate(SyntheticParams(n_items=60, n_users=80, seed=12), 10, SPLIT)
    assert c.interactions != a.interactions


def test_sequences_carry_learnable_signal():
    """The last item predicts the next far better than popularity does (the signal SFT must learn)."""
    from collections import Counter

    data = generate(SyntheticParams(seed=0), 10, SPLIT)
    train, test = data.split("train"), data.split("test")
    follows = defaultdict(Counter)
    for r in train:
        follows[r.history[-1]][r.target] += 1
    popular = [i for i, _ in Counter(r.target for r in train).most_common(10)]
    by_last = sum(r.target in [i for i, _ in follows[r.history[-1]].most_common(10)] for r in test) / len(test)
    by_pop = sum(r.target in popular for r in test) / len(test)
    assert by_last > 2 * by_pop
