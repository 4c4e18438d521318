"""The ``upstream`` backend of each stage: run the pinned script, then turn what it wrote into the same
canonical artifact the native backend writes, so later stages and audits never ask which backend ran.

Every stage first runs ``preflight`` (no temp/queue executor, the pinned and clean checkout, the upstream
environment), keeps the script's log and an ``upstream_run.json`` (commit, commands, exit codes, and the
params upstream cannot take) beside its outputs, and writes nothing when anything fails.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from harness.console import console
from harness.data.schema import Dataset, Interaction, Item
from harness.data.upstream_format import (
    UPSTREAM_SUFFIX, read_index_json, read_item_json, write_info_txt, write_item_json, write_split_csv)
from harness.errors import DataFormatError, HarnessError, ParamsError
from harness.io import read_utf8, write_json
from harness.upstream import commands
from harness.upstream.runner import RUN_RECORD, Command, preflight, run, run_parallel, run_record, upstream_python

PARAMS = "params.yaml"
SAFE_SUFFIXES = (".json", ".safetensors", ".txt", ".model", ".jinja", ".tiktoken")  # no pickles from a run


@contextmanager
def workdir(stage: str):
    """A scratch folder for one upstream run, removed afterwards whatever happens."""
    path = Path(tempfile.mkdtemp(prefix=f"minionerec-upstream-{stage}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _begin(stage: str, allow_unpinned: bool) -> tuple[dict, str, float]:
    record = preflight(stage, allow_unpinned)
    python = upstream_python()
    console.print(f"{stage}: backend upstream at {record['upstream_checked_out'][:12]}"
                  + (" (NOT the pinned commit)" if record["allowed_unpinned"] else ""), highlight=False)
    return record, python, time.time()


def _finish(out: Path, record: dict, cmds: list[Command], codes: list[int], started: float, logs: list[Path],
            not_passed: dict | None = None) -> dict:
    run_info = run_record(record, cmds, codes, time.time() - started, not_passed)
    (out / "upstream_logs").mkdir(parents=True, exist_ok=True)
    for log in logs:
        shutil.copy2(log, out / "upstream_logs" / log.name)
    write_json(out / RUN_RECORD, run_info)
    return run_info


# ---------------------------------------------------------------- data
def read_inter(path: Path, split: str) -> list[Interaction]:
    """An upstream ``.inter`` split (TSV: user index, space-separated history ids, target id)."""
    rows: list[Interaction] = []
    lines = read_utf8(path).splitlines()
    if not lines or not lines[0].startswith("user_id"):
        raise DataFormatError(path, 1, "expected the header user_id:token<TAB>item_id_list:token_seq<TAB>item_id:token")
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 3:
            raise DataFormatError(path, n, f"expected 3 tab-separated fields, got {len(parts)}")
        try:
            history = tuple(int(x) for x in parts[1].split())
            rows.append(Interaction(f"A{int(parts[0])}", history, int(parts[2]), split))
        except ValueError:
            raise DataFormatError(path, n, "user, history and target must be integers") from None
    return rows


def data(p, out: Path, allow_unpinned: bool = False) -> Dataset:
    """amazon18_data_process.py on the raw files; its .inter splits and item.json become the dataset."""
    record, python, started = _begin("data", allow_unpinned)
    cat = p.preprocess.category
    with workdir("data") as work:
        cmd = commands.preprocess(p, python, work / "out")
        codes = [run(cmd, work / "preprocess.log")]
        d = work / "out" / cat
        items = read_item_json(d / f"{cat}.item.json")
        rows = [r for split in ("train", "valid", "test") for r in read_inter(d / f"{cat}.{split}.inter", split)]
        bad = next((r for r in rows if r.target >= len(items) or any(h >= len(items) for h in r.history)), None)
        if bad is not None:
            raise HarnessError(f"{d}: user {bad.user} refers to an item id outside {cat}.item.json")
        too_long = max((len(r.history) for r in rows), default=0)
        if too_long > p.max_history:
            raise ParamsError(PARAMS, "data.max_history", f"{p.max_history}, but upstream wrote histories of "
                              f"{too_long} items")
        ds = Dataset(name=cat, items=items, interactions=rows, sid_index=None,
                     meta={"source": "upstream-preprocess", "preprocess": p.preprocess.model_dump()})
        ds.meta["upstream"] = _finish(out, record, [cmd], codes, started, [work / "preprocess.log"])
    return ds


# ---------------------------------------------------------------- embed
def embed(p, items: list[Item], category: str, model_dir: Path, out: Path,
          allow_unpinned: bool = False) -> tuple[np.ndarray, dict]:
    """amazon_text2emb.py on the catalogue's item.json (mean pooling, fp16: H16)."""
    from harness.embed import load_npy

    record, python, started = _begin("embed", allow_unpinned)
    with workdir("embed") as work:
        write_item_json(work / f"{category}.item.json", items)
        cmd = commands.text2emb(p, python, model_dir, work, category)
        codes = [run(cmd, work / "text2emb.log")]
        arr = load_npy(commands.embeddings_file(work, category), len(items))
        info = _finish(out, record, [cmd], codes, started, [work / "text2emb.log"])
    return arr, {"source": "upstream", "model": str(model_dir), "items": len(items), "dim": int(arr.shape[1]),
                 "upstream": info}


# ---------------------------------------------------------------- sid
def sid(p, emb: np.ndarray, category: str, n_items: int, out: Path,
        allow_unpinned: bool = False) -> tuple[dict, dict]:
    """The rq/ script(s) for sid.method on the embed stage's vectors; the index.json they write, validated."""
    import torch

    record, python, started = _begin("sid", allow_unpinned)
    device = "cuda:0" if torch.cuda.is_available() else "cpu"
    dim = int(emb.shape[1])
    with workdir("sid") as work:
        np.save(commands.embeddings_file(work, category), emb, allow_pickle=False)
        cmds = commands.sid_builders(p, python, work, category, dim, device)
        logs = [work / f"sid-{i}.log" for i in range(len(cmds))]
        codes = [run(c, log) for c, log in zip(cmds, logs)]
        if p.method == "rqkmeans-plus":
            ckpts = sorted((work / "rqkmeans_plus_ckpt").glob("*/best_collision_model.pth"))
            if not ckpts:
                raise HarnessError("rqkmeans_plus.py wrote no best_collision_model.pth under its --ckpt_dir")
            cmds.append(commands.generate_indices_plus(p, python, work, category, dim, ckpts[-1], device))
            logs.append(work / "generate_indices_plus.log")
            codes.append(run(cmds[-1], logs[-1]))
        out_path = commands.sid_output(p, work, category)
        if not out_path.is_file():
            raise HarnessError(f"upstream's {p.method} builder exited 0 but wrote no {out_path.name}")
        index = read_index_json(out_path, n_items)
        unused = {"kmeans_iters": {"params": p.kmeans_iters, "upstream": "faiss defaults"}} \
            if p.method == "rqkmeans" else None
        info = _finish(out, record, cmds, codes, started, logs, unused)
    return index, info


# ---------------------------------------------------------------- sft / rl
def upstream_files(sid_dir: Path, category: str) -> dict[str, Path]:
    """The upstream-layout export the sid stage writes (train/valid/test CSVs, info, index, item)."""
    base = Path(sid_dir) / "upstream"
    files = {"index": base / "index" / f"{category}.index.json", "item": base / "index" / f"{category}.item.json",
             "info": base / "info" / f"{category}{UPSTREAM_SUFFIX}.txt"}
    files.update({s: base / s / f"{category}{UPSTREAM_SUFFIX}.csv" for s in ("train", "valid", "test")})
    return files


def _require(files: dict[str, Path], keys: tuple[str, ...], stage: str) -> None:
    for key in keys:
        if not files[key].is_file():
            why = " (data.upstream.valid_as_train moved the valid rows into training; upstream needs a valid CSV " \
                  "for its evaluation and early stopping)" if key == "valid" else ""
            raise HarnessError(f"{stage}: backend upstream needs {files[key]}{why}")


def copy_checkpoint(src: Path, dest: Path) -> None:
    """The final model folder, without pickles (training_args.bin) or optimizer state."""
    if not (src / "config.json").is_file():
        raise HarnessError(f"{src}: the upstream run left no model there (config.json missing)")
    if not any(src.glob("*.safetensors")):
        raise HarnessError(f"{src}: no safetensors weights (only pickled ones would be loaded, which this project "
                           "refuses)")
    dest.mkdir(parents=True, exist_ok=True)
    for f in sorted(src.iterdir()):
        if f.is_file() and f.suffix in SAFE_SUFFIXES:
            shutil.copy2(f, dest / f.name)


def trainer_log(run_dir: Path) -> dict:
    """trainer_state.json of the last checkpoint (upstream's Trainer saves it there, not in the final folder)."""
    states = sorted(run_dir.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name.split("-")[1]))
    if (run_dir / "trainer_state.json").is_file():
        states.append(run_dir / "trainer_state.json")
    if not states:
        return {"global_steps": None, "log_history": []}
    state = json.loads(read_utf8(states[-1]))
    history = state.get("log_history", [])
    train = [h["train_loss"] for h in history if "train_loss" in h]
    return {"global_steps": state.get("global_step"), "train_loss": train[-1] if train else None,
            "best_eval_loss": state.get("best_metric"), "best_checkpoint": state.get("best_model_checkpoint"),
            "log_history": history}


SFT_FIXED_UPSTREAM = {  # what sft.py does whatever params say (spec §1.5)
    "tasks": "its five-task mixture, always",
    "lr_scheduler": "linear", "warmup_ratio": "warmup_steps 20", "weight_decay": 0.0,
    "select_on_valid": True, "eval_steps": 0.05, "early_stopping_patience": 3, "bf16": True,
    "gradient_checkpointing": False, "max_steps": None, "distributed": "torchrun (DDP)",
}


def _not_passed(params, fixed: dict) -> dict:
    """Params whose value differs from what the upstream script does regardless (recorded, and warned about)."""
    out = {}
    for key, upstream_value in fixed.items():
        ours = getattr(params, key)
        ours = ours.model_dump() if hasattr(ours, "model_dump") else ours
        if ours != upstream_value:
            out[key] = {"params": ours, "upstream": upstream_value}
    return out


def sft(p, category: str, sid_dir: Path, out: Path, allow_unpinned: bool = False) -> dict:
    from harness.train.model import pretrained_dir

    if p.mode != "full":
        raise ParamsError(PARAMS, "sft.mode", f"{p.mode!r} with sft.backend: upstream: upstream's sft.py has no LoRA, "
                          "and its freeze_LLM (embeddings only) crashes with a NameError (H17, issue #61)")
    if p.model.source == "scratch":
        raise ParamsError(PARAMS, "sft.model.source", "upstream's sft.py fine-tunes a pretrained model directory: "
                          "use smollm2-135m or a local HF model dir (e.g. Qwen2.5-1.5B-Instruct)")
    files = upstream_files(sid_dir, category)
    _require(files, ("train", "valid", "index", "item"), "sft")
    base = pretrained_dir(p.model.source)
    record, python, started = _begin("sft", allow_unpinned)
    not_passed = _not_passed(p, SFT_FIXED_UPSTREAM)
    for key, v in not_passed.items():
        console.print(f"sft: sft.{key}={v['params']!r} is not passed: upstream uses {v['upstream']!r}", highlight=False)
    with workdir("sft") as work:
        cmd = commands.sft(p, python, base, files, work / "run", category)
        codes = [run(cmd, work / "sft.log")]
        copy_checkpoint(work / "run" / "final_checkpoint", out)
        log = {"backend": "upstream", "upstream_commit": record["upstream_checked_out"], "base_model": p.model.source,
               "mode": "full", **trainer_log(work / "run")}
        write_json(out / "training_log.json", log)
        _finish(out, record, [cmd], codes, started, [work / "sft.log"], not_passed)
    return log


RL_FIXED_UPSTREAM = {  # rl.py's own choices (spec §1.6)
    "max_prompts": None, "title_to_sid": True, "mode": "full", "bf16": True, "gradient_checkpointing": False,
    "warmup_ratio": 0.03, "max_grad_norm": 0.3,
}


def rl(p, category: str, sid_dir: Path, sft_dir: Path, out: Path, allow_unpinned: bool = False) -> dict:
    if p.mode != "full":
        raise ParamsError(PARAMS, "rl.mode", "lora with rl.backend: upstream: upstream's rl.py trains every weight")
    files = upstream_files(sid_dir, category)
    _require(files, ("train", "valid", "info", "index", "item"), "rl")
    record, python, started = _begin("rl", allow_unpinned)
    zero2 = Path("upstream/config/zero2_opt.yaml") if p.distributed == "zero2" and p.num_processes > 1 else None
    not_passed = _not_passed(p, RL_FIXED_UPSTREAM)
    for key, v in not_passed.items():
        console.print(f"rl: rl.{key}={v['params']!r} is not passed: upstream uses {v['upstream']!r}", highlight=False)
    with workdir("rl") as work:
        cmd = commands.rl(p, python, sft_dir, files, work / "run", category, zero2)
        codes = [run(cmd, work / "rl.log")]
        copy_checkpoint(work / "run" / "final_checkpoint", out)
        state = trainer_log(work / "run")
        rewards = [h["reward"] for h in state["log_history"] if "reward" in h]
        n = max(1, len(rewards) // 10)
        log = {"enabled": True, "backend": "upstream", "upstream_commit": record["upstream_checked_out"],
               "reward": p.reward, **state,
               "mean_reward_first_steps": float(np.mean(rewards[:n])) if rewards else None,
               "mean_reward_last_steps": float(np.mean(rewards[-n:])) if rewards else None}
        write_json(out / "training_log.json", log)
        _finish(out, record, [cmd], codes, started, [work / "rl.log"], not_passed)
    return log


# ---------------------------------------------------------------- evaluate
def generation_inherited(model_dir: Path) -> dict:
    """Sampling settings in the model's generation_config.json that upstream's evaluate.py, which leaves them
    unset, inherits (H1): non-empty means its beam search may be beam sampling."""
    path = Path(model_dir) / "generation_config.json"
    if not path.is_file():
        return {}
    cfg = json.loads(read_utf8(path))
    return {k: cfg[k] for k in ("do_sample", "top_k", "top_p", "temperature", "repetition_penalty") if k in cfg}


def evaluate(p, rows, model_dir: Path, out: Path, allow_unpinned: bool = False) -> dict:
    """evaluate.py once per shard (one per GPU, as evaluate.sh), shards merged in order, calc.py on the merged
    JSON; its printed figures must agree with ``harness score`` (which is what gets recorded)."""
    import torch

    from harness.evaluate.score import score_records
    from harness.upstream.calc_output import disagreements, parse_calc_stdout

    t = rows
    record, python, started = _begin("evaluate", allow_unpinned)
    shards = p.num_processes
    gpus = torch.cuda.device_count()
    if gpus and shards > gpus:
        raise ParamsError(PARAMS, "evaluate.num_processes", f"{shards} shards but {gpus} GPUs")
    cat = t.dataset.name
    with workdir("evaluate") as work:
        info = work / "info.txt"
        write_info_txt(info, t.dataset.items, t.index)
        bounds = np.linspace(0, len(t.rows), shards + 1).astype(int)  # contiguous shards, like split.py
        cmds, logs, results = [], [], []
        for i in range(shards):
            csv_path, result = work / f"{i}.csv", work / f"{i}.json"
            write_split_csv(csv_path, t.rows[bounds[i]:bounds[i + 1]], t.dataset.items, t.index)
            cmds.append(commands.evaluate_shard(p.model_copy(update={"num_beams": t.num_beams}), python, model_dir,
                                                info, cat, csv_path, result, i if gpus else None))
            logs.append(work / f"evaluate-{i}.log")
            results.append(result)
        codes = run_parallel(cmds, logs)
        records: list[dict] = []
        for code, result, log in zip(codes, results, logs):
            if not result.is_file():
                raise HarnessError(f"evaluate.py exited {code} without writing {result.name} (log: {log.name})")
            try:
                part = json.loads(read_utf8(result))
            except json.JSONDecodeError as e:
                raise DataFormatError(result, e.lineno, f"not JSON: {e.msg}") from None
            if not isinstance(part, list) or not all(isinstance(r, dict) and "predict" in r for r in part):
                raise DataFormatError(result, 1, "expected a list of objects with 'predict'")
            records += part
        got = [str(r.get("output", "")).strip() for r in records]
        if got != t.targets:
            raise HarnessError(f"the merged upstream results hold {len(records)} rows that do not line up with the "
                               f"{len(t.targets)} test rows in order")
        merged = work / "final_result.json"
        write_json(merged, records, indent=4)
        cmds.append(commands.calc(python, merged, info))
        logs.append(work / "calc.log")
        codes.append(run(cmds[-1], logs[-1]))
        metrics = score_records(records, t.info_sids, t.ks)
        problems = disagreements(parse_calc_stdout(read_utf8(logs[-1]), "calc.py stdout"), metrics, t.ks)
        if problems:
            raise HarnessError("calc.py's printed figures disagree with harness score on the same result JSON: "
                               + "; ".join(problems))
        write_json(out / "predictions.json", records, indent=4)
        run_info = _finish(out, record, cmds, codes, started, logs)
    generation = {"num_beams": t.num_beams, "length_penalty": 0.0, "max_new_tokens": 256,
                  "inherited_from_model": generation_inherited(model_dir)}
    return {"metrics": {**metrics, "calc_py_agrees": True}, "generation": generation, "processes": shards,
            "dtype": "bfloat16", "upstream_commit": run_info["upstream_commit"]}


def export_prompts(rows, model_dir: Path, allow_unpinned: bool = False) -> tuple[list[list[int]], dict]:
    """Upstream's evaluation prompts (token ids), rendered by its own EvalSidDataset in its environment."""
    record, python, started = _begin("evaluate (upstream prompts)", allow_unpinned)
    with workdir("prompts") as work:
        csv_path = work / "test.csv"
        write_split_csv(csv_path, rows.rows, rows.dataset.items, rows.index)
        cmd = commands.export_prompts(python, model_dir, csv_path, rows.dataset.name, work / "prompts.json")
        codes = [run(cmd, work / "export.log")]
        doc = json.loads(read_utf8(work / "prompts.json"))
    prompts = doc.get("prompts") if isinstance(doc, dict) else None
    if not isinstance(prompts, list) or len(prompts) != len(rows.rows):
        raise HarnessError(f"upstream's EvalSidDataset rendered {len(prompts or [])} prompts for "
                           f"{len(rows.rows)} test rows")
    return prompts, run_record(record, [cmd], codes, time.time() - started)
