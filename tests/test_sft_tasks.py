"""The SFT task mixture: every switched-on task, each example right, shuffled with the seed, one wording."""

from __future__ import annotations

import pytest

from harness.errors import HarnessError
from harness.params import SftParams, SftTasks
from harness.prompts import next_sid_prompt, short_title, title_to_sid_prompt
from harness.sid.tokens import history_sids, sid_string
from harness.train.sft import run_sft, task_mixture

ALL = SftTasks(title_history_to_sid=True, sid_history_to_title=True)


def test_mixture_holds_each_task_with_correct_completions(small_synthetic):
    ds, index = small_synthetic
    data, counts = task_mixture(ds, index, ALL, seed=1)
    train = ds.split("train")
    assert counts == {"next_sid": len(train), "title_history_to_sid": len(train), "sid_history_to_title": len(train),
                      "title_to_sid": len(ds.items), "sid_to_title": len(ds.items)}
    pairs = set(zip(data["prompt"], data["completion"]))
    r = train[0]
    assert (next_sid_prompt(history_sids(r.history, index)), sid_string(index[r.target])) in pairs
    it = ds.items[3]
    assert (title_to_sid_prompt(it.title), sid_string(index[it.id])) in pairs
    assert any(c == short_title(it.title) and sid_string(index[it.id]) in p for p, c in pairs)


def test_mixture_is_shuffled_with_the_seed_and_tasks_switch_off(small_synthetic):
    ds, index = small_synthetic
    a, _ = task_mixture(ds, index, ALL, seed=1)
    b, _ = task_mixture(ds, index, ALL, seed=1)
    c, _ = task_mixture(ds, index, ALL, seed=2)
    assert a["prompt"] == b["prompt"] and a["prompt"] != c["prompt"]
    assert sorted(a["prompt"]) == sorted(c["prompt"])
    only, counts = task_mixture(ds, index, SftTasks(title_to_sid=False, sid_to_title=False), seed=1)
    assert counts == {"next_sid": len(ds.split("train"))} and len(only) == len(ds.split("train"))


def test_all_tasks_off_is_refused(tmp_path):
    off = SftTasks(next_sid=False, title_to_sid=False, sid_to_title=False)
    with pytest.raises(HarnessError, match="every task is switched off"):
        run_sft(SftParams(tasks=off), tmp_path, tmp_path, tmp_path / "out")


def test_rl_prompts_add_title_to_sid_with_each_items_own_label(small_synthetic):
    """RL data: the next-SID prompts, plus one title -> SID prompt per distinct title when switched on."""
    from harness.params import RlParams
    from harness.train.rl import rl_examples

    ds, index = small_synthetic
    base, counts = rl_examples(ds, index, RlParams(max_prompts=None))  # every prompt, not the default draw
    assert counts == {"next_sid": len(ds.split("train"))}
    both, counts = rl_examples(ds, index, RlParams(title_to_sid=True, max_prompts=None))
    titles = {it.title for it in ds.items}
    assert counts == {"next_sid": len(ds.split("train")), "title_to_sid": len(titles)}
    pairs = dict(zip(both["prompt"], both["target"]))
    first = {}
    for it in ds.items:
        first.setdefault(it.title, it.id)
    assert all(pairs[title_to_sid_prompt(t)] == sid_string(index[i]) for t, i in first.items())
    drawn, counts = rl_examples(ds, index, RlParams(title_to_sid=True, max_prompts=30, seed=4))
    again, _ = rl_examples(ds, index, RlParams(title_to_sid=True, max_prompts=30, seed=4))
    assert len(drawn) == 30 and sum(counts.values()) == 30 and drawn["prompt"] == again["prompt"]
