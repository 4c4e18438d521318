"""RL diagnostics: what each GRPO step could learn from, and whether the policy moves.

A GRPO group whose rewards are all equal has zero advantage and contributes no gradient. With constrained
beams as the group, every completion in a group is a distinct catalogue SID, so a group holds the target at
most once; with the ``rule`` and ``ranking`` rewards a group without the target is rewarded 0 throughout and
teaches nothing. The share of groups that hold the target is therefore the share that can teach, and the policy's
own HR@G on its training prompts bounds it. Both are logged here per step, beside reward, KL and gradient norm,
and a fixed sample of train prompts is ranked every ``probe_every`` steps (``PolicyProbe``) so a short run
can be told from a broken one.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from transformers import TrainerCallback

# trl's per-step log keys -> the diagnostics' names (trl >= 1.0 logs these for every optimiser step)
TRL_KEYS = {
    "reward": "reward_mean",
    "reward_std": "reward_std",
    "frac_reward_zero_std": "zero_std_groups",  # share of groups whose rewards are all equal: no gradient
    "kl": "kl",
    "grad_norm": "grad_norm",
    "loss": "loss",
    "learning_rate": "learning_rate",
}


def step_diagnostics(log_history: Sequence[dict], g: int) -> list[dict]:
    """One record per logged training step. ``target_groups`` (the share of groups containing the target) is
    the rule reward's mean times G: a group's beams are distinct SIDs, so it holds the target at most once."""
    out = []
    for h in log_history:
        if "reward" not in h or "step" not in h:
            continue
        row = {"step": h["step"], **{name: h[key] for key, name in TRL_KEYS.items() if key in h}}
        if "rewards/rule/mean" in h:
            row["target_groups"] = h["rewards/rule/mean"] * g
        out.append(row)
    return out


def summarise(diagnostics: Sequence[dict], probes: Sequence[dict]) -> dict:
    """The figures the report states in words: mean shares over the run, and the probe's first and last."""
    def mean(key: str) -> float | None:
        vals = [d[key] for d in diagnostics if key in d and d[key] is not None]
        return sum(vals) / len(vals) if vals else None

    out = {"steps": len(diagnostics), "zero_std_groups": mean("zero_std_groups"),
           "target_groups": mean("target_groups"), "kl": mean("kl"), "grad_norm": mean("grad_norm")}
    if probes:
        out["probe_first"], out["probe_last"] = probes[0], probes[-1]
    return out


def probe_rows(examples: Sequence[tuple[str, str]], others: Sequence[tuple[str, str]], n: int,
               seed: int) -> dict[str, list[tuple[str, str]]]:
    """The probe's fixed prompts: ``trained`` drawn from the RL prompts themselves (does the policy learn what
    it is rewarded for?), ``held_out`` from train rows RL never sees (does it generalise?). Empty when n = 0."""
    rng = random.Random(seed)
    pick = (lambda rows: list(rows) if len(rows) <= n else rng.sample(list(rows), n))
    out = {"trained": pick(examples)}
    if others:
        out["held_out"] = pick(others)
    return {k: v for k, v in out.items() if v and n > 0}


def hit_metrics(ranked: Sequence[Sequence[str]], targets: Sequence[str], k: int) -> dict[str, float]:
    """HR@k and NDCG@k of ranked SID lists against one target each (a single relevant item per row)."""
    hr = ndcg = 0.0
    for sids, target in zip(ranked, targets):
        if target in sids[:k]:
            hr += 1
            ndcg += 1 / math.log2(sids.index(target) + 2)
    n = max(len(targets), 1)
    return {f"hr@{k}": hr / n, f"ndcg@{k}": ndcg / n}


class PolicyProbe(TrainerCallback):
    """Ranks fixed train prompts with the policy's own constrained beam search before the first step, every
    ``every`` steps and after the last, on the main process (each process holds the whole model in DDP and
    ZeRO-2). The rows it writes are the ``probe`` list of training_log.json."""

    def __init__(self, tokenizer, trie, rows: dict[str, list[tuple[str, str]]], k: int, every: int,
                 batch_size: int = 16):
        self.tokenizer, self.trie, self.rows, self.k, self.every = tokenizer, trie, rows, k, every
        self.batch_size = batch_size
        self.records: list[dict] = []

    def _probe(self, state, model) -> None:
        from harness.decode.constrained import constrained_beam_search

        if not self.rows or not state.is_world_process_zero:
            return
        if self.records and self.records[-1]["step"] == state.global_step:
            return
        was_training = model.training
        row = {"step": state.global_step}
        for name, rows in self.rows.items():
            beams = constrained_beam_search(model, self.tokenizer, [p for p, _ in rows], self.trie, self.k,
                                            self.batch_size)
            ranked = [["".join(self.tokenizer.convert_ids_to_tokens(s)) for s in b.sequences] for b in beams]
            row[name] = hit_metrics(ranked, [t for _, t in rows], self.k)
        model.train(was_training)
        self.records.append(row)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._probe(state, model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.every and state.global_step % self.every == 0:
            self._probe(state, model)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self._probe(state, model)
