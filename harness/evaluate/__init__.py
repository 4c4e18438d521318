"""Evaluate stage: constrained beam search on the test split, upstream-format predictions, HR/NDCG/legality."""

from __future__ import annotations

from pathlib import Path

import torch

from harness.console import progress
from harness.data.schema import read_dataset
from harness.data.upstream_format import read_index_json
from harness.errors import HarnessError
from harness.evaluate.baselines import most_popular, repeat_last
from harness.evaluate.score import TOPK, score_records
from harness.io import atomic_dir, write_json
from harness.params import EvaluateParams
from harness.prompts import next_sid_prompt
from harness.sid.tokens import catalogue_sids, history_sids, sid_string


def load_model(model_dir: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (model_dir / "config.json").is_file():
        raise HarnessError(f"{model_dir}: not a model directory (config.json missing)")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.to("cuda" if torch.cuda.is_available() else "cpu")
    return model, tokenizer


def run_evaluate(p: EvaluateParams, dataset_dir: str | Path = "data/dataset", sid_dir: str | Path = "data/sid",
                 model_dirs: dict[str, Path] | None = None, predictions_dir: str | Path = "reports/predictions",
                 metrics_path: str | Path = "reports/metrics.json") -> dict:
    """Entry point of the ``evaluate`` stage: every trained model on the same test rows, plus the baselines.

    ``rl`` is scored when ``models/rl`` holds a model; with ``rl.enabled: false`` it holds only the record
    that RL was skipped, and ``metrics.json`` carries ``"rl": null``.
    """
    from harness.decode.constrained import catalogue_trie, constrained_beam_search, generation_config

    ds = read_dataset(Path(dataset_dir))
    index = read_index_json(Path(sid_dir) / "index.json", len(ds.items))
    rows = [r for r in ds.split("test") if r.target in index]
    if p.max_rows is not None:
        rows = rows[: p.max_rows]
    if not rows:
        raise HarnessError(f"{dataset_dir}: no test rows with a SID target")
    catalogue = catalogue_sids(index)
    num_beams = min(p.num_beams, len(catalogue))

    prompts = [next_sid_prompt(history_sids(r.history, index)) for r in rows]
    targets = [sid_string(index[r.target]) for r in rows]
    ks = [k for k in TOPK if k <= num_beams]
    info_sids = [sid_string(index[i]) for i in sorted(index)]  # one per item, as upstream's info file

    def records(preds: list[list[str]]) -> list[dict]:
        return [{"input": pr, "output": t + "\n", "predict": pred} for pr, t, pred in zip(prompts, targets, preds)]

    model_dirs = model_dirs or {"sft": Path("models/sft"), "rl": Path("models/rl")}
    scored: dict[str, dict | None] = {}
    predictions: dict[str, list[dict]] = {}
    for name, model_dir in model_dirs.items():
        model_dir = Path(model_dir)
        if name != "sft" and not (model_dir / "config.json").is_file():
            scored[name] = None  # the stage was switched off: nothing to score
            continue
        model, tokenizer = load_model(model_dir)
        trie = catalogue_trie(tokenizer, index, model_dir)
        with progress() as bar:
            task = bar.add_task(f"{name}: constrained beam search ({num_beams} beams)", total=len(prompts))
            beams = constrained_beam_search(model, tokenizer, prompts, trie, num_beams, p.batch_size,
                                            progress=lambda n: bar.advance(task, n))
        predictions[name] = records([["".join(tokenizer.convert_ids_to_tokens(b)) for b in res.sequences]
                                     for res in beams])
        scored[name] = score_records(predictions[name], info_sids, ks)

    popular = most_popular(ds.split("train"), index, num_beams)
    metrics = {
        **scored,
        "baselines": {
            "most_popular": score_records(records([popular] * len(rows)), info_sids, ks),
            "repeat_last": score_records(records([repeat_last(r, index) for r in rows]), info_sids, ks),
        },
        "protocol": {
            "split": "test",
            "rows": len(rows),
            "num_beams": num_beams,
            "num_beams_requested": p.num_beams,
            "catalogue_sids": len(catalogue),
            "sid_level": True,
        },
    }
    gc = generation_config(num_beams, trie.max_len, tokenizer.eos_token_id, tokenizer.pad_token_id)
    meta = {k: gc.to_dict().get(k) for k in ("num_beams", "num_return_sequences", "do_sample", "temperature",
                                              "top_k", "top_p", "repetition_penalty", "length_penalty",
                                              "max_new_tokens")}
    metrics["protocol"]["generation"] = meta
    with atomic_dir(predictions_dir) as tmp:
        for name, recs in predictions.items():
            write_json(tmp / f"{name}.json", recs, indent=4)
    write_json(metrics_path, metrics)
    return metrics
