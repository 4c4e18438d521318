"""SFT stage: teach a causal LM to emit the next item's SID from the history's SIDs (trl SFTTrainer),
mixed with the tasks that align titles and SIDs (``sft.tasks``).

Loss is on the completion (target SID or title + EOS) only. With ``select_on_valid`` the checkpoint with the
lowest valid-split loss is kept, as upstream does (every epoch, or every ``eval_steps`` share of the steps:
upstream evaluates every 5%), and
``early_stopping_patience`` stops after that many evaluations without improvement (upstream: 3).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from datasets import Dataset as HFDataset

from harness.data.schema import Dataset, read_dataset
from harness.errors import HarnessError, ParamsError
from harness.io import atomic_dir, write_json
from harness.params import SftParams, SftTasks
from harness.prompts import (
    TEMPLATES,
    next_sid_prompt,
    short_title,
    sid_history_to_title_prompt,
    sid_to_title_prompt,
    title_history_prompt,
    title_to_sid_prompt,
)
from harness.sid.index import read_index_json
from harness.sid.tokens import history_sids, sid_string, vocabulary

TRAINING_LOG = "training_log.json"


def next_sid_examples(ds: Dataset, index: dict[int, list[str]], split: str) -> HFDataset:
    rows = [r for r in ds.split(split) if r.target in index]
    return HFDataset.from_dict({
        "prompt": [next_sid_prompt(history_sids(r.history, index)) for r in rows],
        "completion": [sid_string(index[r.target]) for r in rows],
    })


def task_mixture(ds: Dataset, index: dict[int, list[str]], tasks: SftTasks, seed: int) -> tuple[HFDataset, dict]:
    """The train-split examples of every switched-on task, shuffled together with the seed.

    Per-row tasks use every train row; the item-level alignment tasks use each catalogue item once.
    """
    import random

    items = {it.id: it for it in ds.items}
    rows = [r for r in ds.split("train") if r.target in index]
    examples: list[tuple[str, str, str]] = []
    if tasks.next_sid:
        examples += [("next_sid", next_sid_prompt(history_sids(r.history, index)), sid_string(index[r.target]))
                     for r in rows]
    if tasks.title_history_to_sid:
        examples += [("title_history_to_sid", title_history_prompt([items[i].title for i in r.history]),
                      sid_string(index[r.target])) for r in rows]
    if tasks.sid_history_to_title:
        examples += [("sid_history_to_title", sid_history_to_title_prompt(history_sids(r.history, index)),
                      short_title(items[r.target].title)) for r in rows]
    catalogue = [it for it in ds.items if it.id in index and it.title.strip()]
    if tasks.title_to_sid:
        examples += [("title_to_sid", title_to_sid_prompt(it.title), sid_string(index[it.id])) for it in catalogue]
    if tasks.sid_to_title:
        examples += [("sid_to_title", sid_to_title_prompt(sid_string(index[it.id])), short_title(it.title))
                     for it in catalogue]
    random.Random(seed).shuffle(examples)
    counts: dict[str, int] = {}
    for task, _, _ in examples:
        counts[task] = counts.get(task, 0) + 1
    return HFDataset.from_dict({"prompt": [e[1] for e in examples], "completion": [e[2] for e in examples]}), counts


def tokenizer_corpus(ds: Dataset) -> list[str]:
    return list(TEMPLATES) * 50 + [f"{it.title}. {it.brand}. {it.category}." for it in ds.items]


def write_scratch_base(p: SftParams, ds: Dataset, out: Path) -> Path:
    """The scratch model as a base-model folder (config-initialised weights and the trained tokenizer, without SID
    tokens), for trainers that take a pretrained directory, e.g. upstream's sft.py (which adds the SID tokens
    itself, as it does to Qwen2.5): upstream's "from scratch" setting on this project's scratch model."""
    from harness.train.model import scratch_model
    from harness.train.tokenizer import save_tokenizer, train_tokenizer

    tokenizer = train_tokenizer(tokenizer_corpus(ds), p.model.tokenizer_vocab_size, [], p.model.architecture)
    model = scratch_model(p.model, len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id,
                          max(p.max_length, 1024), p.seed)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(str(out))
    save_tokenizer(tokenizer, out)
    return out


def run_sft(p: SftParams, dataset_dir: str | Path, sid_dir: str | Path,
            out_dir: str | Path) -> dict | None:
    """Entry point of the ``sft`` stage: writes an HF model folder with its tokenizer and training log."""
    from transformers import PrinterCallback, set_seed
    from trl import SFTTrainer

    from harness.console import console
    from harness.train.callbacks import RichProgress
    from harness.train.checkpoints import checkpoint_dir, last_complete_checkpoint
    from harness.train.model import base_model_record, pretrained_model, scratch_model
    from harness.train.tokenizer import save_tokenizer, train_tokenizer

    if not any(p.tasks.model_dump().values()):
        raise HarnessError("sft.tasks: every task is switched off")
    ds = read_dataset(Path(dataset_dir))
    index = read_index_json(Path(sid_dir) / "index.json", len(ds.items))
    train, task_counts = task_mixture(ds, index, p.tasks, p.seed)
    if len(train) == 0:
        raise HarnessError(f"{dataset_dir}: the train split is empty")
    if p.max_examples is not None and p.max_examples < len(train):
        train = train.select(range(p.max_examples))  # the mixture is shuffled: the first N are a fair sample
    valid = next_sid_examples(ds, index, "valid") if p.select_on_valid else None
    select = valid is not None and len(valid) > 0

    set_seed(p.seed)
    if p.model.source == "scratch":
        tokenizer = train_tokenizer(tokenizer_corpus(ds), p.model.tokenizer_vocab_size, vocabulary(index),
                                    p.model.architecture)
        model = scratch_model(p.model, len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id,
                              p.max_length, p.seed)
    else:
        dtype = torch.bfloat16 if p.bf16 else torch.float32
        model, tokenizer = pretrained_model(p.model.source, vocabulary(index), dtype)
    model = with_training_mode(model, tokenizer, vocabulary(index), p)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    ckpt_dir = checkpoint_dir(out_dir, p, [Path(dataset_dir) / "interactions.jsonl", Path(dataset_dir) / "items.jsonl",
                                           Path(sid_dir) / "index.json"])
    last = last_complete_checkpoint(ckpt_dir)
    if last:
        console.print(f"sft: resuming from {last} (a killed run with the same params and inputs)")
    args = sft_config(p, ckpt_dir, select)
    callbacks = [RichProgress("sft")]
    if select and p.early_stopping_patience:
        from transformers import EarlyStoppingCallback

        callbacks.append(EarlyStoppingCallback(early_stopping_patience=p.early_stopping_patience))
    trainer = SFTTrainer(model=model, args=args, train_dataset=train, eval_dataset=valid if select else None,
                         processing_class=tokenizer, callbacks=callbacks)
    trainer.remove_callback(PrinterCallback)  # RichProgress reports instead
    result = trainer.train(resume_from_checkpoint=last)  # on failure the checkpoints stay for the next run
    if not trainer.is_world_process_zero():  # a launched run: rank 0 writes the outputs
        return None
    log = {
        "train_examples": len(train),
        "task_examples": task_counts,
        "valid_examples": len(valid) if select else 0,
        "global_steps": result.global_step,
        "processes": args.world_size,
        "train_loss": result.training_loss,
        "best_eval_loss": trainer.state.best_metric,
        "best_checkpoint_step": _step_of(trainer.state.best_model_checkpoint),
        "base_model": p.model.source,
        "base": base_model_record(p.model),
        "mode": p.mode,
        "trainable_parameters": trainable_parameters(model, len(vocabulary(index)), p.mode),
        "parameters": sum(t.numel() for t in model.parameters()),
        "vocab_size": len(tokenizer),
        "sid_tokens": len(vocabulary(index)),
        "log_history": [_without_timings(h) for h in trainer.state.log_history],
    }
    final = trainer.model
    if p.mode == "lora":  # fold the adapters into a plain model
        final = final.merge_and_unload()
    with atomic_dir(out_dir) as tmp:
        final.generation_config.eos_token_id = tokenizer.eos_token_id
        final.generation_config.pad_token_id = tokenizer.pad_token_id
        final.save_pretrained(str(tmp))  # weights, config and generation config; no training_args pickle
        save_tokenizer(tokenizer, tmp)
        write_json(tmp / TRAINING_LOG, log)
    shutil.rmtree(ckpt_dir.parent, ignore_errors=True)  # this run's and any stale runs' checkpoints
    return log


def sft_config(p: SftParams, output_dir: Path, select: bool, **overrides):
    """The stage's trainer settings (also what ``benchmarks/training_memory.py`` measures). ``select``: keep the
    checkpoint with the lowest valid loss; ``overrides``: any SFTConfig field (the benchmark turns saving off)."""
    from trl import SFTConfig

    from harness.train.runtime import runtime_args

    every = p.eval_steps or p.max_steps  # steps (a share of the total when < 1) between evaluations; None: epochs
    args = dict(
        output_dir=str(output_dir),
        num_train_epochs=p.epochs,
        max_steps=p.max_steps or -1,
        per_device_train_batch_size=p.batch_size,
        gradient_accumulation_steps=p.gradient_accumulation_steps,
        gradient_checkpointing=p.gradient_checkpointing,
        bf16=p.bf16,
        per_device_eval_batch_size=max(p.batch_size, 64),
        learning_rate=p.learning_rate,
        lr_scheduler_type=p.lr_scheduler,
        warmup_steps=p.warmup_ratio,
        weight_decay=p.weight_decay,
        max_length=p.max_length,
        completion_only_loss=True,
        logging_steps=20,
        eval_strategy=("steps" if every else "epoch") if select else "no",
        eval_steps=every,
        save_strategy="steps" if every else "epoch",  # also the resume points
        save_steps=every,
        load_best_model_at_end=select,
        metric_for_best_model="eval_loss" if select else None,
        greater_is_better=False if select else None,
        save_total_limit=2,
        save_only_model=False,  # optimizer, scheduler and RNG state too, so a killed run can resume
        **runtime_args(p.seed),
    )
    return SFTConfig(**{**args, **overrides})


def with_training_mode(model, tokenizer, sid_tokens: list[str], p: SftParams):
    """full: every weight; lora: peft LoRA adapters plus the SID-token embedding rows; embeddings: only the
    SID-token rows, everything else frozen.

    The SID rows are trained through a gradient mask on the (tied) embedding matrix. peft's trainable-token
    wrapper would be the natural tool, but trl 1.16 computes the loss from ``lm_head.weight``/``.bias``
    directly, and with tied embeddings that wrapper has no ``bias``. With weight decay at 0, AdamW leaves
    rows whose gradient is always 0 exactly as they were.
    """
    if p.mode == "full":
        return model
    if p.weight_decay:
        raise ParamsError("params.yaml", "sft.weight_decay", f"must be 0 with mode '{p.mode}' (weight decay would "
                          "move the frozen embedding rows)")
    if p.mode == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=p.lora.r, lora_alpha=p.lora.alpha, lora_dropout=p.lora.dropout,
                                                 target_modules=p.lora.target_modules, task_type="CAUSAL_LM"))
    else:
        for param in model.parameters():
            param.requires_grad_(False)
    embed = model.get_input_embeddings().weight
    rows = torch.zeros(embed.shape[0], 1, dtype=embed.dtype, device=embed.device)
    rows[tokenizer.convert_tokens_to_ids(sid_tokens)] = 1
    embed.requires_grad_(True)
    embed.register_hook(lambda grad: grad * rows.to(grad.dtype))
    if p.gradient_checkpointing:
        model.enable_input_require_grads()
    return model


def trainable_parameters(model, sid_tokens: int, mode: str) -> int:
    """Weights the optimiser can move: in lora / embeddings mode only the SID rows of the embedding count."""
    embed = model.get_input_embeddings().weight
    if mode == "full":
        return sum(t.numel() for t in model.parameters() if t.requires_grad)
    others = sum(t.numel() for t in model.parameters() if t.requires_grad and t is not embed)
    return others + sid_tokens * embed.shape[1]


def _without_timings(entry: dict) -> dict:
    """Wall-clock figures differ run to run; keeping them out makes the model dir hash reproducible."""
    return {k: v for k, v in entry.items() if "runtime" not in k and "per_second" not in k and not k.endswith("_time")}


def _step_of(checkpoint: str | None) -> int | None:
    return int(checkpoint.rsplit("-", 1)[-1]) if checkpoint else None
