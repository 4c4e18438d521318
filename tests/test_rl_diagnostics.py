"""RL diagnostics computed by hand: what trl's log turns into, the probe's metrics and its fixed prompts."""

from __future__ import annotations

import math

import pytest

from harness.train.diagnostics import hit_metrics, probe_rows, step_diagnostics, summarise


def test_step_diagnostics_renames_trl_keys_and_derives_the_target_share():
    history = [
        {"step": 1, "reward": 0.25, "reward_std": 0.4, "frac_reward_zero_std": 0.5, "kl": 0.0, "grad_norm": 1.5,
         "rewards/rule/mean": 0.125, "loss": 0.1},
        {"step": 1, "train_runtime": 3.0},  # the end-of-training summary: no reward, not a step
        {"step": 2, "reward": 0.0, "reward_std": 0.0, "frac_reward_zero_std": 1.0},
    ]
    diag = step_diagnostics(history, g=4)
    assert [d["step"] for d in diag] == [1, 2]
    assert diag[0] == {"step": 1, "reward_mean": 0.25, "reward_std": 0.4, "zero_std_groups": 0.5, "kl": 0.0,
                       "grad_norm": 1.5, "loss": 0.1, "target_groups": 0.5}  # 0.125 x 4 beams per group
    assert "target_groups" not in diag[1]  # no rule reward logged: not guessed
    s = summarise(diag, [{"step": 0}, {"step": 2}])
    assert s["steps"] == 2 and s["zero_std_groups"] == 0.75 and s["target_groups"] == 0.5
    assert s["probe_first"] == {"step": 0} and s["probe_last"] == {"step": 2}


def test_hit_metrics_by_hand():
    ranked = [["a", "b", "c"], ["b", "c", "a"], ["c", "b", "d"]]
    m = hit_metrics(ranked, ["a", "a", "a"], k=3)
    assert m["hr@3"] == pytest.approx(2 / 3)
    assert m["ndcg@3"] == pytest.approx((1 + 1 / math.log2(4)) / 3)
    assert hit_metrics(ranked, ["a", "a", "a"], k=1) == {"hr@1": pytest.approx(1 / 3), "ndcg@1": pytest.approx(1 / 3)}


def test_probe_rows_are_fixed_by_the_seed_and_capped():
    trained = [(f"p{i}", f"t{i}") for i in range(10)]
    held = [(f"q{i}", f"t{i}") for i in range(3)]
    a, b = probe_rows(trained, held, 4, seed=1), probe_rows(trained, held, 4, seed=1)
    assert a == b and len(a["trained"]) == 4 and set(a["trained"]) <= set(trained)
    assert a["held_out"] == held  # fewer than n: all of them, in order
    assert "held_out" not in probe_rows(trained, [], 4, seed=1)  # every train row drawn: no held-out set
    assert probe_rows(trained, held, 0, seed=1) == {}  # probe_prompts 0 = off


def test_probe_sets_take_rl_examples_once_and_hold_out_only_unseen_prompts():
    """Two train rows with one history but different targets share a prompt: the one RL draws is a trained probe
    row (once, though drawn twice), the other is neither trained nor held out, since RL sees its prompt."""
    from datasets import Dataset as HFDataset

    from harness.data.schema import Dataset, Interaction, Item
    from harness.params import RlParams
    from harness.prompts import next_sid_prompt
    from harness.sid.tokens import history_sids, sid_string
    from harness.train.rl import probe_sets

    index = {i: [f"<a_{i}>", f"<b_{i}>", f"<c_{i}>"] for i in range(6)}
    rows = [Interaction("u1", (0, 1), 2, "train"), Interaction("u2", (0, 1), 3, "train"),  # one prompt, 2 labels
            Interaction("u3", (4,), 5, "train"), Interaction("u4", (2,), 4, "train")]
    ds = Dataset("tiny", [Item(i, f"item {i}") for i in range(6)], rows)
    prompt = {r.user: next_sid_prompt(history_sids(r.history, index)) for r in rows}
    label = {r.user: sid_string(index[r.target]) for r in rows}
    train = HFDataset.from_dict({"prompt": [prompt["u1"]] * 2, "target": [label["u1"]] * 2})
    sets = probe_sets(ds, index, train, RlParams(probe_prompts=64))
    assert sets == {"trained": [(prompt["u1"], label["u1"])],
                    "held_out": [(prompt["u3"], label["u3"]), (prompt["u4"], label["u4"])]}
