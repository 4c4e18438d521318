"""Training step throughput and peak memory of the stages' own trainer settings, one process per mode.

    python benchmarks/training_memory.py --out /tmp/t.json                       # CPU smoke: tiny model
    python benchmarks/training_memory.py --device cuda --model qwen2.5-1.5b --vocab 151936 --out t.json

Modes: SFT with ``full`` fine-tuning, ``lora`` and ``embeddings``-only (``harness.train.sft.sft_config`` and
``with_training_mode``, trl's SFTTrainer), and ``grpo``: GRPO steps with the RL stage's constrained-beam
rollout, rank-aware reward and ``grpo_config`` (trl's GRPOTrainer). Everything else comes from a profile's
``sft`` and ``rl`` sections (default ``single-gpu-16gb``: bf16, gradient checkpointing, LoRA, 8 sequences
per micro-batch, 16 beams per group). Every SFT sequence is ``--seq-len`` tokens long (upstream's
cutoff_len, 512, by default): the worst case, since nothing is shorter than the longest row of a batch.

Each mode runs in its own process, so each peak is its own: ``torch.cuda.max_memory_allocated`` on a GPU,
the process's peak resident set on a CPU (which includes Python and torch themselves). On a GPU the
profile's own modes (its ``sft.mode`` and ``grpo``) are checked against ``--budget-gib`` (15 GiB: what a
16 GB card leaves after the CUDA context); the script exits 1 when one is over.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from architectures import ARCHITECTURES, config_model  # beside this script
from transformers import PrinterCallback, TrainerCallback

MODES = ("full", "lora", "embeddings", "grpo")
SID_LEVELS, SID_CODES = 3, 256  # Industrial's SIDs: three levels of 256 codes


def synthetic_tokenizer(vocab_size: int):
    """A word-level tokenizer with exactly ``vocab_size`` ids: ordinary words ``w<i>``, the SID tokens and
    EOS/pad. One word is one token, so prompt lengths are exact."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    sids = [f"<{'abc'[d]}_{c}>" for d in range(SID_LEVELS) for c in range(SID_CODES)]
    words = vocab_size - len(sids) - 2
    if words < 100:
        raise SystemExit(f"--vocab {vocab_size}: too small for {len(sids)} SID tokens")
    vocab = {"<pad>": 0, "<eos>": 1, **{f"w{i}": i + 2 for i in range(words)}}
    core = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<eos>", pad_token="<pad>")
    tok.add_tokens(sids)
    assert len(tok) == vocab_size
    return tok, sids


def catalogue(n: int, seed: int) -> list[list[str]]:
    rng = random.Random(seed)
    seen: set[tuple[int, ...]] = set()
    while len(seen) < n:
        seen.add(tuple(rng.randrange(SID_CODES) for _ in range(SID_LEVELS)))
    return [[f"<{'abc'[d]}_{c}>" for d, c in enumerate(t)] for t in sorted(seen)]


def words(rng: random.Random, n: int, vocab_words: int) -> str:
    return " ".join(f"w{rng.randrange(1, vocab_words)}" for _ in range(n))


class StepClock(TrainerCallback):
    """Wall time of every optimiser step (the first, with its warm-up, is reported apart)."""

    def __init__(self):
        self.times: list[float] = []
        self._t = 0.0

    def on_step_begin(self, args, state, control, **kw):
        self._sync()
        self._t = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        self._sync()
        self.times.append(time.perf_counter() - self._t)

    @staticmethod
    def _sync():
        if torch.cuda.is_available():
            torch.cuda.synchronize()


def build_model(a: argparse.Namespace, tok, dtype: torch.dtype):
    """The config-initialised model in ``dtype``, built on the device it trains on (seconds, not minutes, for 1.5B
    weights on a GPU). The GPU peak counts from here: the weights, not their fp32 initialisation."""
    with torch.device(a.device):
        model = config_model(a.model, a.vocab, tok.eos_token_id, tok.pad_token_id, 2 * a.seq_len, a.seed).to(dtype)
    if a.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    return model


def run_one(mode: str, a: argparse.Namespace) -> dict:
    """One mode in this process: build the model and trainer as the stage does, train ``a.steps`` steps."""
    from harness.params import RlParams, SftParams
    from harness.profiles import load_profile

    profile = load_profile(a.profile, Path(__file__).resolve().parents[1] / "profiles").params
    tok, sid_tokens = synthetic_tokenizer(a.vocab)
    rng = random.Random(a.seed)
    vocab_words = a.vocab - len(sid_tokens) - 2
    items = catalogue(a.items, a.seed)
    out = tempfile.mkdtemp(prefix=f"bench-{mode}-")
    clock = StepClock()
    if a.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    if mode == "grpo":
        from trl import GRPOTrainer

        from harness.decode.constrained import catalogue_trie
        from harness.train.rewards import make_rewards
        from harness.train.rl import grpo_config, make_rollout

        p = RlParams(**{**profile.get("rl", {}), **({"bf16": False} if a.dtype == "float32" else {})})
        if a.grad_acc:
            p = p.model_copy(update={"gradient_accumulation_steps": a.grad_acc})
        dtype = torch.bfloat16 if p.bf16 and p.mode == "lora" else torch.float32  # as the rl stage loads
        model = build_model(a, tok, dtype)
        index = dict(enumerate(items))
        trie = catalogue_trie(tok, index, "benchmark")
        n = p.prompts_per_step * p.gradient_accumulation_steps * a.steps
        data = {"prompt": [words(rng, a.rl_prompt_len, vocab_words) for _ in range(n)],
                "target": ["".join(items[rng.randrange(len(items))]) for _ in range(n)]}
        from datasets import Dataset

        eos = tok.eos_token_id

        def parse_sid(ids) -> str:
            ids = list(ids)
            return "".join(tok.convert_ids_to_tokens(ids[: ids.index(eos)] if eos in ids else ids))

        peft_config = None
        if p.mode == "lora":
            from peft import LoraConfig

            peft_config = LoraConfig(r=p.lora.r, lora_alpha=p.lora.alpha, lora_dropout=p.lora.dropout,
                                     target_modules=p.lora.target_modules, task_type="CAUSAL_LM")
        args = grpo_config(p, Path(out), trie.max_len, save_strategy="no", max_steps=a.steps,
                           use_cpu=a.device == "cpu")
        trainer = GRPOTrainer(model=model, args=args, train_dataset=Dataset.from_dict(data), processing_class=tok,
                              peft_config=peft_config, reward_funcs=make_rewards(parse_sid, p.reward,
                                                                                 p.num_generations),
                              rollout_func=make_rollout(tok, trie, p.num_generations), callbacks=[clock])
        sequences = p.prompts_per_step * p.num_generations * p.gradient_accumulation_steps
        tokens = sequences * (a.rl_prompt_len + trie.max_len)
        shape = {"train_mode": p.mode, "micro_batch": p.prompts_per_step * p.num_generations,
                 "gradient_accumulation_steps": p.gradient_accumulation_steps, "num_generations": p.num_generations,
                 "prompt_tokens": a.rl_prompt_len, "bf16": p.bf16, "gradient_checkpointing": p.gradient_checkpointing,
                 "beta": p.beta}
    else:
        from datasets import Dataset
        from trl import SFTTrainer

        from harness.train.sft import sft_config, with_training_mode

        p = SftParams(**{**profile.get("sft", {}), "mode": mode, "max_length": a.seq_len,
                         **({"bf16": False} if a.dtype == "float32" else {})})
        if a.grad_acc:
            p = p.model_copy(update={"gradient_accumulation_steps": a.grad_acc})
        if a.batch:
            p = p.model_copy(update={"batch_size": a.batch})
        dtype = torch.bfloat16 if p.bf16 else torch.float32  # as the sft stage loads a pretrained model
        model = build_model(a, tok, dtype)
        model = with_training_mode(model, tok, sid_tokens, p)
        n = p.batch_size * p.gradient_accumulation_steps * a.steps
        data = {"prompt": [words(rng, a.seq_len - SID_LEVELS - 1, vocab_words) for _ in range(n)],
                "completion": ["".join(items[rng.randrange(len(items))]) for _ in range(n)]}
        args = sft_config(p, Path(out), select=False, save_strategy="no", max_steps=a.steps, logging_steps=1,
                          use_cpu=a.device == "cpu")
        trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_dict(data), processing_class=tok,
                             callbacks=[clock])
        sequences = p.batch_size * p.gradient_accumulation_steps
        tokens = sequences * a.seq_len
        shape = {"train_mode": mode, "micro_batch": p.batch_size,
                 "gradient_accumulation_steps": p.gradient_accumulation_steps, "sequence_tokens": a.seq_len,
                 "bf16": p.bf16, "gradient_checkpointing": p.gradient_checkpointing}
    trainer.remove_callback(PrinterCallback)
    trainable = sum(t.numel() for t in trainer.model.parameters() if t.requires_grad)
    trainer.train()
    steady = clock.times[1:] or clock.times
    step_s = sorted(steady)[len(steady) // 2]
    if a.device == "cuda":
        peak, kind = torch.cuda.max_memory_allocated() / 2**30, "cuda_max_memory_allocated"
    else:
        peak, kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "cpu_peak_rss"  # KiB on Linux
    return {"mode": mode, **shape, "steps": len(clock.times), "first_step_s": clock.times[0],
            "step_s": step_s, "sequences_per_step": sequences, "tokens_per_s": tokens / step_s,
            "trainable_parameters": trainable, "peak_gib": peak, "memory": kind}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--model", default="tiny", choices=sorted(ARCHITECTURES))
    ap.add_argument("--vocab", type=int, default=50_000, help="embedding rows (Qwen2.5: 151936)")
    ap.add_argument("--profile", default="single-gpu-16gb")
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--dtype", default="profile", choices=["profile", "float32"],
                    help="float32: bf16 off (CPUs without fast bf16)")
    ap.add_argument("--seq-len", type=int, default=512, help="SFT sequence length (upstream's cutoff_len)")
    ap.add_argument("--rl-prompt-len", type=int, default=128, help="GRPO prompt tokens")
    ap.add_argument("--steps", type=int, default=3, help="optimiser steps per mode (the first is a warm-up)")
    ap.add_argument("--batch", type=int, default=0, help="SFT micro-batch (0: the profile's)")
    ap.add_argument("--grad-acc", type=int, default=0, help="gradient accumulation (0: the profile's)")
    ap.add_argument("--items", type=int, default=3686, help="catalogue SIDs (Industrial: 3,686)")
    ap.add_argument("--budget-gib", type=float, default=15.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--one", choices=MODES, help=argparse.SUPPRESS)  # internal: run one mode, print its JSON
    a = ap.parse_args()
    if a.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")
    if a.one:
        print("RESULT " + json.dumps(run_one(a.one, a)), flush=True)
        return

    from harness.profiles import load_profile
    from harness.provenance import cpu_model

    profile = load_profile(a.profile, Path(__file__).resolve().parents[1] / "profiles").params
    budgeted = {profile.get("sft", {}).get("mode", "full"), "grpo"}
    runs = []
    for mode in a.modes:
        cmd = [sys.executable, __file__, *sys.argv[1:], "--one", mode]
        r = subprocess.run(cmd, capture_output=True, text=True)
        line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if r.returncode != 0 or line is None:
            # out of memory is a result (the mode does not fit), anything else is a failure of the script
            if "OutOfMemoryError" in r.stderr or "CUDA out of memory" in r.stderr:
                runs.append({"mode": mode, "error": "out of memory", "peak_gib": None})
                print(f"{mode:10s} out of memory", flush=True)
                continue
            raise SystemExit(f"{mode}: failed (exit {r.returncode})\n{r.stderr[-4000:]}")
        res = json.loads(line[len("RESULT "):])
        res["within_budget"] = (res["peak_gib"] <= a.budget_gib) if a.device == "cuda" else None
        runs.append(res)
        print(f"{mode:10s} step {res['step_s']:8.3f} s  {res['tokens_per_s']:10.0f} tok/s  "
              f"peak {res['peak_gib']:6.2f} GiB ({res['memory']})", flush=True)
    over = [r["mode"] for r in runs if r["mode"] in budgeted and a.device == "cuda"
            and (r["peak_gib"] is None or r["peak_gib"] > a.budget_gib)]
    doc = {
        "device": torch.cuda.get_device_name(0) if a.device == "cuda" else cpu_model(),
        "model": a.model, "vocab_size": a.vocab, "profile": a.profile, "catalogue_size": a.items,
        "budget_gib": a.budget_gib, "budgeted_modes": sorted(budgeted),
        "profile_within_budget": (not over) if a.device == "cuda" else None,
        "runs": runs, "torch": torch.__version__,
    }
    a.out.write_text(json.dumps(doc, indent=2) + "\n")
    if over:
        raise SystemExit(f"over the {a.budget_gib} GiB budget of profile {a.profile}: {', '.join(over)}")


if __name__ == "__main__":
    main()
