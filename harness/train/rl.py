"""RL stage: GRPO on the SFT model. Each group is the top-G constrained beams of one prompt (trl GRPOTrainer
with a ``rollout_func``), and the rewards are rank-aware (``harness.train.rewards``).

The rollout runs the same constrained beam search as evaluation. It therefore returns G distinct catalogue
SIDs per prompt, sorted by beam score, so position j in a group is beam rank j. As upstream, the loss is
the on-policy GRPO loss (one update per generation, mean over each completion's tokens). It has a k3 KL
term against the frozen SFT model when ``beta`` > 0. SIDs are parsed from completion token ids, never from
decoded text, because trl decodes with special tokens skipped.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import torch
from datasets import Dataset as HFDataset

from harness.data.schema import Dataset, read_dataset
from harness.errors import HarnessError
from harness.io import atomic_dir, write_json
from harness.params import RlParams
from harness.prompts import next_sid_prompt, title_to_sid_prompt
from harness.sid.index import read_index_json
from harness.sid.tokens import history_sids, sid_string
from harness.train.rewards import make_rewards
from harness.train.tokenizer import save_tokenizer

TRAINING_LOG = "training_log.json"


def rl_examples(ds: Dataset, index: dict[int, list[str]], p: RlParams) -> tuple[HFDataset, dict[str, int]]:
    """Train-split next-SID prompts (plus, with ``title_to_sid``, one title -> SID prompt per distinct title),
    each with its own target SID: the reward's label. ``max_prompts`` draws from the mixture with the seed."""
    rows = [r for r in ds.split("train") if r.target in index]
    examples = [("next_sid", next_sid_prompt(history_sids(r.history, index)), sid_string(index[r.target]))
                for r in rows]
    if p.title_to_sid:
        by_title: dict[str, int] = {}
        for it in ds.items:  # one prompt per distinct title; of duplicates the lowest item id, never a guess
            if it.id in index and it.title.strip():
                by_title.setdefault(it.title, it.id)
        examples += [("title_to_sid", title_to_sid_prompt(t), sid_string(index[i])) for t, i in by_title.items()]
    if p.max_prompts is not None and p.max_prompts < len(examples):
        examples = random.Random(p.seed).sample(examples, p.max_prompts)
    counts: dict[str, int] = {}
    for task, _, _ in examples:
        counts[task] = counts.get(task, 0) + 1
    return HFDataset.from_dict({"prompt": [e[1] for e in examples], "target": [e[2] for e in examples]}), counts


def probe_sets(ds: Dataset, index: dict[int, list[str]], train: HFDataset, p: RlParams) -> dict:
    """The policy probe's fixed next-SID prompts (harness.train.diagnostics): some RL trains on, and train rows
    whose prompt it never sees (every train row is drawn when ``max_prompts`` is null: no held-out set)."""
    from harness.train.diagnostics import probe_rows

    rows = dict.fromkeys((next_sid_prompt(history_sids(r.history, index)), sid_string(index[r.target]))
                         for r in ds.split("train") if r.target in index)
    # ``trained``: exactly RL's own next-SID examples, (prompt, label) pairs, once each. Several train rows can
    # share a prompt (equal histories, or histories whose SIDs collide) with other labels; those are neither
    # trained on as such nor held out, since RL sees their prompt.
    trained = [e for e in dict.fromkeys(zip(train["prompt"], train["target"])) if e in rows]
    seen = set(train["prompt"])
    held_out = [e for e in rows if e[0] not in seen]
    return probe_rows(trained, held_out, p.probe_prompts, p.seed)


def make_rollout(tokenizer, trie, g: int):
    """trl rollout_func: constrained beams as the group (prompts arrive repeated G times, in blocks)."""
    from harness.decode.constrained import constrained_beam_search

    eos = tokenizer.eos_token_id

    def rollout(prompts: list[str], trainer) -> dict:
        if len(prompts) % g:
            raise HarnessError(f"rl: {len(prompts)} prompts is not a whole number of groups of {g}")
        blocks = [prompts[i:i + g] for i in range(0, len(prompts), g)]
        if any(len(set(b)) != 1 for b in blocks):
            raise HarnessError("rl: a group mixes prompts (trl changed how it repeats prompts?)")
        unique = list(dict.fromkeys(b[0] for b in blocks))
        model = trainer.accelerator.unwrap_model(trainer.model)
        was_training = model.training
        beams = constrained_beam_search(model, tokenizer, unique, trie, g, batch_size=len(unique))
        model.train(was_training)
        ids = tokenizer(unique, add_special_tokens=False)["input_ids"]
        out = {"prompt_ids": [], "completion_ids": [], "logprobs": [], "group": [], "beam_rank": []}
        for gi, block in enumerate(blocks):
            u = unique.index(block[0])
            for rank in range(g):
                completion = beams[u].sequences[rank] + [eos]
                out["prompt_ids"].append(ids[u])
                out["completion_ids"].append(completion)
                out["logprobs"].append([0.0] * len(completion))  # unused without vLLM
                out["group"].append(gi)
                out["beam_rank"].append(rank)
        return out

    return rollout


def run_rl(p: RlParams, dataset_dir: str | Path, sid_dir: str | Path,
           sft_dir: str | Path, out_dir: str | Path) -> dict | None:
    """Entry point of the ``rl`` stage: GRPO from the SFT model into an HF model folder."""
    from transformers import PrinterCallback, set_seed
    from trl import GRPOTrainer

    from harness.console import console
    from harness.decode.constrained import catalogue_trie
    from harness.train.callbacks import RichProgress
    from harness.train.diagnostics import PolicyProbe, step_diagnostics, summarise
    from harness.train.checkpoints import checkpoint_dir, last_complete_checkpoint
    from harness.train.model import load_model
    from harness.train.sft import _without_timings

    if not p.enabled:  # the SFT-only pipeline: record the decision, train nothing
        with atomic_dir(out_dir) as tmp:
            write_json(tmp / TRAINING_LOG, {"enabled": False})
        return {"enabled": False}
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is marked experimental
    ds = read_dataset(Path(dataset_dir))
    index = read_index_json(Path(sid_dir) / "index.json", len(ds.items))
    train, task_counts = rl_examples(ds, index, p)
    if len(train) == 0:
        raise HarnessError(f"{dataset_dir}: the train split is empty")
    catalogue = {sid_string(t) for t in index.values()}
    if p.num_generations > len(catalogue):
        raise HarnessError(f"rl.num_generations: {p.num_generations} beams exceed the {len(catalogue)} catalogue SIDs")

    set_seed(p.seed)
    # LoRA keeps the base frozen, so it can sit in bf16; full fine-tuning keeps fp32 master weights (autocast)
    dtype = torch.bfloat16 if p.bf16 and p.mode == "lora" else torch.float32
    model, tokenizer = load_model(Path(sft_dir), dtype=dtype)
    trie = catalogue_trie(tokenizer, index, sft_dir)
    eos = tokenizer.eos_token_id

    def parse_sid(ids) -> str:
        ids = list(ids)
        return "".join(tokenizer.convert_ids_to_tokens(ids[: ids.index(eos)] if eos in ids else ids))

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    ckpt_dir = checkpoint_dir(out_dir, p, [Path(dataset_dir) / "interactions.jsonl", Path(dataset_dir) / "items.jsonl",
                                           Path(sid_dir) / "index.json", *model_files(Path(sft_dir))])
    last = last_complete_checkpoint(ckpt_dir)
    if last:
        console.print(f"rl: resuming from {last} (a killed run with the same params and inputs)")
    g = p.num_generations
    args = grpo_config(p, ckpt_dir, trie.max_len)
    peft_config = None
    if p.mode == "lora":
        from peft import LoraConfig

        peft_config = LoraConfig(r=p.lora.r, lora_alpha=p.lora.alpha, lora_dropout=p.lora.dropout,
                                 target_modules=p.lora.target_modules, task_type="CAUSAL_LM")
    trainer = GRPOTrainer(model=model, args=args, train_dataset=train, processing_class=tokenizer,
                          peft_config=peft_config, reward_funcs=make_rewards(parse_sid, p.reward, g),
                          rollout_func=make_rollout(tokenizer, trie, g), callbacks=[RichProgress("rl")])
    probe = PolicyProbe(tokenizer, trie, probe_sets(ds, index, train, p), p.probe_k, p.probe_every)
    trainer.add_callback(probe)
    trainer.remove_callback(PrinterCallback)
    result = trainer.train(resume_from_checkpoint=last)  # on failure the checkpoints stay for the next run
    if not trainer.is_world_process_zero():  # a launched run: rank 0 writes the outputs
        return None
    history = [_without_timings(h) for h in trainer.state.log_history]
    rewards = [h["reward"] for h in history if "reward" in h]
    log = {
        "enabled": True,
        "train_prompts": len(train),
        "task_prompts": task_counts,
        "global_steps": result.global_step,
        "processes": args.world_size,
        "train_loss": result.training_loss,
        "reward": p.reward,
        "mode": p.mode,
        "base": _sft_base(Path(sft_dir)),  # the weights under the SFT model, carried along for the report
        "mean_reward_first_steps": sum(rewards[:5]) / max(len(rewards[:5]), 1),
        "mean_reward_last_steps": sum(rewards[-5:]) / max(len(rewards[-5:]), 1),
        "probe_k": p.probe_k,
        "probe_prompts": {name: len(rows) for name, rows in probe.rows.items()},
        "probe": probe.records,  # policy HR/NDCG@probe_k on fixed train prompts, before, during and after RL
        "diagnostics": (diag := step_diagnostics(history, g)),
        "diagnostics_summary": summarise(diag, probe.records),
        "log_history": history,
    }
    final = trainer.accelerator.unwrap_model(trainer.model)
    if p.mode == "lora":  # fold the adapters into a plain model, saved in fp32 like the SFT model
        final = final.merge_and_unload().to(torch.float32)
    with atomic_dir(out_dir) as tmp:
        final.save_pretrained(str(tmp))  # weights, config and generation config; no training_args pickle
        save_tokenizer(tokenizer, tmp)
        write_json(tmp / TRAINING_LOG, log)
    shutil.rmtree(ckpt_dir.parent, ignore_errors=True)  # this run's and any stale runs' checkpoints
    return log


def grpo_config(p: RlParams, output_dir: Path, max_completion_length: int, **overrides):
    """The stage's GRPO settings (also what ``benchmarks/training_memory.py`` measures); ``overrides``: any
    GRPOConfig field."""
    from trl import GRPOConfig

    from harness.train.runtime import runtime_args

    args = dict(
        output_dir=str(output_dir),
        num_train_epochs=p.epochs,
        per_device_train_batch_size=p.prompts_per_step * p.num_generations,
        gradient_accumulation_steps=p.gradient_accumulation_steps,
        bf16=p.bf16,  # trl defaults both to True, on a CPU too: never inherited
        gradient_checkpointing=p.gradient_checkpointing,
        num_generations=p.num_generations,
        max_completion_length=max_completion_length,
        learning_rate=p.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=p.warmup_ratio,
        max_grad_norm=p.max_grad_norm,
        beta=p.beta,
        sync_ref_model=p.sync_ref_model,
        loss_type="grpo",  # mean over each completion's tokens, then over the batch (upstream's default)
        scale_rewards="group",
        temperature=1.0,
        logging_steps=1,
        save_strategy="steps",  # the resume points of a killed run
        save_steps=p.save_steps,
        save_total_limit=2,
        save_only_model=False,  # optimizer, scheduler and RNG state too
        **runtime_args(p.seed),
    )
    return GRPOConfig(**{**args, **overrides})


def model_files(model_dir: Path) -> list[Path]:
    """The files that make the SFT model (weights, config, tokenizer), in a stable order, for the resume key."""
    return sorted(f for f in model_dir.iterdir() if f.is_file() and f.name != TRAINING_LOG)


def _sft_base(sft_dir: Path) -> dict | None:
    """The SFT model's record of its own base (None for a model trained before the record existed)."""
    from harness.io import read_json

    log = sft_dir / TRAINING_LOG
    doc = read_json(log) if log.is_file() else {}
    return doc.get("base") if isinstance(doc, dict) else None
