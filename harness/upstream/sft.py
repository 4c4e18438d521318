"""The ``sft`` stage's upstream adapter: the pinned sft.py under torchrun on the sid stage's upstream-layout
export, from ``sft.model.source`` (a pretrained folder, SmolLM2, or the scratch model written as a base
folder); its ``final_checkpoint`` becomes ``models/sft`` and its Trainer logs ``training_log.json``.

sft.py hard-codes ``bf16=True`` in its TrainingArguments, which transformers refuses on a machine without a
GPU; there the ``cpu_bf16`` shim (harness/upstream/shims) sets ``use_cpu`` so it runs in bf16 on the CPU,
and the run record says so. Upstream's code is never edited.
"""

from __future__ import annotations

from pathlib import Path

from harness.data.schema import read_dataset
from harness.errors import ParamsError
from harness.io import atomic_dir, write_json
from harness.params import SftParams
from harness.upstream import source
from harness.upstream.checkpoints import copy_checkpoint, trainer_log
from harness.upstream.export import require, three_level_sids, upstream_files
from harness.upstream.runner import (
    Command,
    begin,
    finish,
    not_passed,
    run_command,
    warn_not_passed,
    workdir,
)

PARAMS = "params.yaml"
SCRIPT = "sft.py"


def fixed(p: SftParams) -> dict:
    """What sft.py does whatever params say: (its effective value, what it does, with the line)."""
    line = lambda needle: source.line_of(SCRIPT, needle)  # noqa: E731
    return {
        "tasks": ({"next_sid": True, "title_to_sid": True, "sid_to_title": True, "title_history_to_sid": True,
                   "sid_history_to_title": True}, f"always trains its five-task mixture ({line('train_data5 =')}; "
                  "its title tasks are not this project's)"),
        "lr_scheduler": ("linear", f"decays linearly (the Trainer's default; its cosine is unused, {line('warmup_steps=20')})"),
        "warmup_ratio": (None, f"warms up for 20 steps ({line('warmup_steps=20')})"),
        "weight_decay": (0.0, "uses no weight decay"),
        "select_on_valid": (True, f"keeps the checkpoint with the lowest valid loss ({line('load_best_model_at_end')})"),
        "eval_steps": (0.05, f"evaluates and saves every 5% of the steps ({line('eval_step = 0.05')})"),
        "early_stopping_patience": (3, f"stops after 3 evaluations without a lower valid loss ({line('early_stopping_patience')})"),
        "bf16": (True, f"always trains in bf16 ({line('bf16=True')})"),
        "gradient_checkpointing": (False, "never checkpoints activations"),
        "max_steps": (None, "has no step cap (sft.upstream.sample shrinks its data instead)"),
        "max_examples": (None, "has no cap on the whole mixture (sft.upstream.sample caps each task's rows instead)"),
        "seed": (42, f"passes --seed to its data sampling, but the Trainer reseeds with TrainingArguments' default 42 "
                 f"(data order, dropout; {line('transformers.Trainer(')})"),
        "mode": ("full", "trains every weight"),
        "distributed": ("torchrun (DDP)", "runs under torchrun, plain DDP"),
    }


def command(p: SftParams, python: str, base_model: Path, files: dict[str, Path], out_dir: Path,
            category: str) -> Command:
    """sft.py under torchrun. Upstream's global batch = batch_size; each rank takes micro_batch_size and
    accumulates batch_size / micro / world_size, so both are derived from the native knobs. The base folder is
    always loaded as it is (``--train_from_scratch False``): the scratch model's folder already holds its
    config-initialised weights."""
    world = p.num_processes
    return Command([python, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(world), "sft.py",
                    "--base_model", str(base_model.resolve()), "--train_file", str(files["train"].resolve()),
                    "--eval_file", str(files["valid"].resolve()), "--output_dir", str(out_dir.resolve()),
                    "--sample", str(p.upstream.sample), "--seed", str(p.seed),
                    "--batch_size", str(p.batch_size * p.gradient_accumulation_steps * world),
                    "--micro_batch_size", str(p.batch_size), "--num_epochs", str(p.epochs),
                    "--learning_rate", str(p.learning_rate), "--cutoff_len", str(p.max_length),
                    "--category", category, "--sid_index_path", str(files["index"].resolve()),
                    "--item_meta_path", str(files["item"].resolve()), "--freeze_LLM", "False",
                    "--train_from_scratch", "False"],
                   env={"NCCL_IB_DISABLE": "1"}, shims=() if _cuda() else ("cpu_bf16",))


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def run(p: SftParams, dataset_dir: str | Path, sid_dir: str | Path,
        out_dir: str | Path, allow_unpinned: bool = False) -> dict:
    """Adapter of ``harness.train.sft.run_sft`` for ``sft.backend: upstream``."""
    from harness.train.model import base_model_record, pretrained_dir
    from harness.train.sft import write_scratch_base

    if p.mode != "full":
        raise ParamsError(PARAMS, "sft.mode", f"{p.mode!r} with sft.backend: upstream: upstream's sft.py has no LoRA, "
                          "and its freeze_LLM (embeddings only) crashes with a NameError (H17, issue #61)")
    ds = read_dataset(Path(dataset_dir))
    source.need_category(SCRIPT, ds.name, "sft.backend")
    files = upstream_files(Path(sid_dir), ds.name)
    stand_in = require(files, ("train", "valid", "index", "item"), "sft")
    skipped = {**not_passed(p, fixed(p)), **three_level_sids(files["index"], "sft"), **stand_in}
    record, python, started = begin("sft", allow_unpinned)
    warn_not_passed("sft", skipped)
    with workdir("sft") as work, atomic_dir(out_dir) as tmp:
        scratch = p.model.source == "scratch"
        base = write_scratch_base(p, ds, work / "base") if scratch else pretrained_dir(p.model.source)
        cmd = command(p, python, base, files, work / "run", ds.name)
        source.check_flags(cmd.argv, SCRIPT, "train")
        codes = [run_command(cmd, work / "sft.log")]
        copy_checkpoint(work / "run" / "final_checkpoint", tmp)
        log = {"backend": "upstream", "upstream_commit": record["upstream_checked_out"], "base_model": p.model.source,
               "base": base_model_record(p.model), "architecture": p.model.architecture if scratch else None, "mode": "full",
               **trainer_log(work / "run", work / "sft.log")}
        write_json(tmp / "training_log.json", log)
        finish(tmp, record, [cmd], codes, started, [work / "sft.log"], skipped)
    return log
