"""The ``rl`` stage's upstream adapter: the pinned rl.py under accelerate launch with rl.sh's choices (beam-search
groups, no test decode during training, H3), the reward and KL from params; its ``final_checkpoint``
becomes ``models/rl``.

rl.py needs a GPU: its GRPOConfig sets ``optim="paged_adamw_32bit"``, whose paged optimizer state
bitsandbytes allocates in CUDA managed memory ("cget_managed_ptr not available in CPU-only version of
bitsandbytes", measured on a CPU machine at the first optimizer step). Swapping the optimizer would change
the algorithm, so on a machine without CUDA the stage is refused up front instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.data.schema import read_dataset
from harness.errors import HarnessError, ParamsError
from harness.io import atomic_dir, write_json
from harness.params import RlParams
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
SCRIPT = "rl.py"
EVAL_BATCH = 128  # rl.sh's --eval_batch_size
SEQ_TITLE_SAMPLE = 10000  # RLSeqTitle2SidDataset(train_file, sample=10000) in rl.py


def fixed(p: RlParams) -> dict:
    line = lambda needle: source.line_of(SCRIPT, needle)  # noqa: E731
    return {
        "max_prompts": (None, "trains on every train row, every item title/description and 10,000 sampled title "
                        f"histories ({line('sample=10000')})"),
        "title_to_sid": (True, f"always adds title and description -> SID prompts ({line('RLTitle2SidDataset(')})"),
        "mode": ("full", "trains every weight"),
        "bf16": (True, f"always trains in bf16 ({line('bf16=True')})"),
        "gradient_checkpointing": (False, "never checkpoints activations"),
        "warmup_ratio": (0.03, f"warms up for 3% of the steps ({line('warmup_ratio=0.03')})"),
        "max_grad_norm": (0.3, f"clips gradients at 0.3 ({line('max_grad_norm')})"),
        "save_steps": (None, f"saves every 10% of the steps ({line('save_steps=0.1')})"),
        "seed": (None, f"also samples the title histories with seed 0 ({line('sample=10000')}) and seeds each rank "
                 "differently"),
    }


def refuse(p: RlParams, train_rows: int) -> None:
    if p.mode != "full":
        raise ParamsError(PARAMS, "rl.mode", "lora with rl.backend: upstream: upstream's rl.py trains every weight")
    if train_rows < SEQ_TITLE_SAMPLE:
        raise ParamsError(PARAMS, "rl.backend", f"upstream's {source.line_of(SCRIPT, 'sample=10000')} draws "
                          f"DataFrame.sample({SEQ_TITLE_SAMPLE}) rows from the train CSV, which has {train_rows} "
                          "(pandas raises ValueError); it needs a train split of 10,000 rows or more")
    if (EVAL_BATCH * p.num_processes) % p.num_generations:
        raise ParamsError(PARAMS, "rl.num_generations", f"{p.num_generations} does not divide the global eval batch "
                          f"{EVAL_BATCH} x {p.num_processes} (rl.sh's --eval_batch_size {EVAL_BATCH}); trl's "
                          "GRPOConfig refuses it before training starts")


def needs_gpu() -> None:
    import torch

    if not torch.cuda.is_available():
        raise HarnessError(f"rl: backend upstream needs a GPU: {source.line_of(SCRIPT, 'paged_adamw_32bit')} sets "
                           "optim='paged_adamw_32bit', whose optimizer state bitsandbytes keeps in CUDA managed memory "
                           "(on a CPU it stops at the first optimizer step: 'cget_managed_ptr not available in "
                           "CPU-only version of bitsandbytes'). Run this stage on a GPU machine, or use rl.backend: "
                           "native")


def command(p: RlParams, python: str, sft_model: Path, files: dict[str, Path], out_dir: Path, category: str,
            zero2_config: Path | None) -> Command:
    launch = [python, "-m", "accelerate.commands.launch", "--num_processes", str(p.num_processes)]
    if zero2_config is not None:
        launch += ["--config_file", str(zero2_config.resolve())]
    return Command([*launch, "rl.py", "--model_path", str(sft_model.resolve()), "--seed", str(p.seed),
                    "--train_file", str(files["train"].resolve()), "--eval_file", str(files["valid"].resolve()),
                    "--info_file", str(files["info"].resolve()), "--category", category,
                    "--train_batch_size", str(p.prompts_per_step * p.num_generations),
                    "--eval_batch_size", str(EVAL_BATCH),
                    "--gradient_accumulation_steps", str(p.gradient_accumulation_steps),
                    "--num_train_epochs", str(p.epochs), "--learning_rate", str(p.learning_rate),
                    "--beta", str(p.beta), "--num_generations", str(p.num_generations), "--temperature", "1.0",
                    "--beam_search", "True", "--test_during_training", "False",
                    "--sync_ref_model", "True" if p.sync_ref_model else "False", "--reward_type", p.reward,
                    "--eval_step", "0.0999", "--output_dir", str(out_dir.resolve()),
                    "--sid_index_path", str(files["index"].resolve()), "--item_meta_path", str(files["item"].resolve())])


def run(p: RlParams, dataset_dir: str | Path, sid_dir: str | Path,
        sft_dir: str | Path, out_dir: str | Path, allow_unpinned: bool = False) -> dict:
    """Adapter of ``harness.train.rl.run_rl`` for ``rl.backend: upstream``."""
    ds = read_dataset(Path(dataset_dir))
    source.need_category(SCRIPT, ds.name, "rl.backend")
    files = upstream_files(Path(sid_dir), ds.name)
    stand_in = require(files, ("train", "valid", "info", "index", "item"), "rl")
    needs_gpu()
    refuse(p, len(ds.split("train")))
    skipped = {**not_passed(p, fixed(p)), **three_level_sids(files["index"], "rl"), **stand_in}
    record, python, started = begin("rl", allow_unpinned)
    warn_not_passed("rl", skipped)
    zero2 = Path("upstream/config/zero2_opt.yaml") if p.distributed == "zero2" and p.num_processes > 1 else None
    with workdir("rl") as work, atomic_dir(out_dir) as tmp:
        cmd = command(p, python, Path(sft_dir), files, work / "run", ds.name, zero2)
        source.check_flags(cmd.argv, SCRIPT, "train")
        codes = [run_command(cmd, work / "rl.log")]
        copy_checkpoint(work / "run" / "final_checkpoint", tmp)
        state = trainer_log(work / "run", work / "rl.log")
        from harness.train.diagnostics import step_diagnostics, summarise

        diagnostics = step_diagnostics(state["log_history"], p.num_generations)
        rewards = [h["reward"] for h in state["log_history"] if "reward" in h]
        n = max(1, len(rewards) // 10)
        log = {"enabled": True, "backend": "upstream", "upstream_commit": record["upstream_checked_out"],
               "reward": p.reward, **state,
               # what trl logged of reward spread, zero-variance groups, KL and gradient norm (no policy probe)
               "diagnostics": diagnostics, "diagnostics_summary": summarise(diagnostics, []),
               "mean_reward_first_steps": float(np.mean(rewards[:n])) if rewards else None,
               "mean_reward_last_steps": float(np.mean(rewards[-n:])) if rewards else None}
        write_json(tmp / "training_log.json", log)
        finish(tmp, record, [cmd], codes, started, [work / "rl.log"], skipped)
    return log
