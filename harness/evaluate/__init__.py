"""Evaluate stages: constrained beam search on the test split for one model (``evaluate@sft``,
``evaluate@rl``), then ``metrics`` merges the models' scores with the baselines into ``reports/metrics.json``.

With ``evaluate.num_processes`` > 1 the stage runs under ``accelerate launch``: each process decodes every
N-th test row, rank 0 gathers the rows and checks that the merged count equals the test rows.
"""

from __future__ import annotations

from pathlib import Path

import torch

from harness.console import progress
from harness.data.schema import Interaction, read_dataset
from harness.data.upstream_format import read_index_json
from harness.errors import HarnessError
from harness.evaluate.baselines import most_popular, repeat_last
from harness.evaluate.score import TOPK, score_records
from harness.io import atomic_dir, read_utf8, write_json
from harness.params import EvaluateParams
from harness.prompts import next_sid_prompt
from harness.sid.tokens import catalogue_sids, history_sids, sid_string

MODELS = ("sft", "rl")
SCORES = "scores.json"
UNCONSTRAINED = "unconstrained.json"  # the same rows decoded without the constraint (evaluate.unconstrained_rows)
UPSTREAM = "upstream"  # backend both: upstream's evaluation of the same model, beside the native one
PREDICTIONS = "predictions.json"


def load_model(model_dir: Path, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32):
    from harness.train.model import load_pretrained

    model, tokenizer = load_pretrained(Path(model_dir), dtype)
    model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return model, tokenizer


class ScoredRows:
    """The scored rows of the test split, with their prompts and targets, and the catalogue they rank in."""

    def __init__(self, p: EvaluateParams, dataset_dir: Path, sid_dir: Path):
        self.dataset = read_dataset(dataset_dir)
        self.index = read_index_json(sid_dir / "index.json", len(self.dataset.items))
        rows = [r for r in self.dataset.split("test") if r.target in self.index]
        self.rows: list[Interaction] = rows[: p.max_rows] if p.max_rows is not None else rows
        if not self.rows:
            raise HarnessError(f"{dataset_dir}: no test rows with a SID target")
        self.catalogue = catalogue_sids(self.index)
        self.num_beams = min(p.num_beams, len(self.catalogue))
        self.prompts = [next_sid_prompt(history_sids(r.history, self.index)) for r in self.rows]
        self.targets = [sid_string(self.index[r.target]) for r in self.rows]
        self.ks = [k for k in TOPK if k <= self.num_beams]
        self.info_sids = [sid_string(self.index[i]) for i in sorted(self.index)]  # one per item, as upstream's info
        self.protocol = {"split": "test", "rows": len(self.rows), "num_beams": self.num_beams,
                         "num_beams_requested": p.num_beams, "catalogue_sids": len(self.catalogue), "sid_level": True}

    def records(self, preds: list[list[str]]) -> list[dict]:
        """Upstream's result format, one object per row in test-split order."""
        return [{"input": pr, "output": t + "\n", "predict": pred}
                for pr, t, pred in zip(self.prompts, self.targets, preds)]


def run_evaluate(p: EvaluateParams, model: str, dataset_dir: str | Path = "data/dataset",
                 sid_dir: str | Path = "data/sid", model_dir: str | Path | None = None,
                 out_dir: str | Path | None = None, allow_unpinned: bool = False) -> dict | None:
    """Entry point of ``evaluate@<model>``: ``reports/eval/<model>/`` gets ``scores.json`` and, when the model
    exists, upstream-format ``predictions.json``. ``models/rl`` without a model (``rl.enabled: false``) is
    recorded as not scored. Returns None on the non-zero ranks of a launched run.

    ``evaluate.backend``: native (this package's decoder), upstream (the pinned evaluate.py + calc.py), or
    both: native in the folder itself and upstream's run in ``upstream/`` beside it (cross-scoring)."""
    model_dir = Path(model_dir or f"models/{model}")
    out_dir = Path(out_dir or f"reports/eval/{model}")
    t = ScoredRows(p, Path(dataset_dir), Path(sid_dir))
    if model != "sft" and not (model_dir / "config.json").is_file():  # the stage was switched off
        with atomic_dir(out_dir) as tmp:
            write_json(tmp / SCORES, {"model": model, "scored": False, "reason": f"{model_dir} holds no model",
                                      "metrics": None, "protocol": t.protocol})
        return {"model": model, "scored": False}
    if p.backend == "upstream":
        with atomic_dir(out_dir) as tmp:
            return _upstream_scores(p, t, model, model_dir, tmp, allow_unpinned)
    native = _native_scores(p, t, model, model_dir, allow_unpinned)
    if native is None:  # a non-zero rank of a launched run
        return None
    records, scores, free = native
    with atomic_dir(out_dir) as tmp:
        write_json(tmp / PREDICTIONS, records, indent=4)
        write_json(tmp / SCORES, scores)
        if free is not None:
            write_json(tmp / UNCONSTRAINED, free)
        if p.backend == "both":
            (tmp / UPSTREAM).mkdir()
            scores["upstream"] = _upstream_scores(p, t, model, model_dir, tmp / UPSTREAM, allow_unpinned)
    return scores


def _native_scores(p: EvaluateParams, t: ScoredRows, model: str, model_dir: Path,
                   allow_unpinned: bool) -> tuple[list[dict], dict, dict | None] | None:
    """The native constrained decoder over this process's rows; rank 0 gets the merged records and scores,
    and the constrained-vs-unconstrained comparison on the first ``unconstrained_rows`` rows."""
    from accelerate import PartialState
    from accelerate.utils import gather_object

    from harness.decode.constrained import catalogue_trie, constrained_beam_search, generation_config

    state = PartialState(cpu=not torch.cuda.is_available())
    lm, tokenizer = load_model(model_dir, state.device, getattr(torch, p.dtype))
    prompts: list = t.prompts
    if p.prompts == "upstream":  # upstream's own prompt ids, and its answer format "SID\n" + EOS
        from harness.upstream import stages

        prompts, _ = stages.export_prompts(t, model_dir, allow_unpinned)
        trie = catalogue_trie(tokenizer, t.index, model_dir, tokenizer("\n", add_special_tokens=False).input_ids)
        as_text = lambda ids: tokenizer.decode(ids, skip_special_tokens=True).strip()  # noqa: E731
    else:
        trie = catalogue_trie(tokenizer, t.index, model_dir)
        as_text = lambda ids: "".join(tokenizer.convert_ids_to_tokens(ids))  # noqa: E731
    mine = list(range(state.process_index, len(t.rows), state.num_processes))  # this process's shard
    with progress(disable=not state.is_main_process) as bar:
        task = bar.add_task(f"{model}: constrained beam search ({t.num_beams} beams)", total=len(mine))
        beams = constrained_beam_search(lm, tokenizer, [prompts[i] for i in mine], trie, t.num_beams,
                                        p.batch_size, progress=lambda n: bar.advance(task, n))
    shard = [(i, [as_text(b) for b in res.sequences]) for i, res in zip(mine, beams)]
    merged = dict(gather_object(shard))
    if not state.is_main_process:
        return None
    if sorted(merged) != list(range(len(t.rows))):
        raise HarnessError(f"evaluate {model}: the {state.num_processes} shards merged into {len(merged)} rows, "
                           f"not the {len(t.rows)} test rows")
    records = t.records([merged[i] for i in range(len(t.rows))])
    if p.prompts == "upstream":
        records = [{**r, "input": tokenizer.decode(prompts[i])} for i, r in enumerate(records)]
    gc = generation_config(t.num_beams, trie.max_len, tokenizer.eos_token_id, tokenizer.pad_token_id).to_dict()
    generation = {k: gc.get(k) for k in ("num_beams", "num_return_sequences", "do_sample", "temperature", "top_k",
                                          "top_p", "repetition_penalty", "length_penalty", "max_new_tokens")}
    scores = {"model": model, "scored": True, "evaluator": "native", "metrics": score_records(records, t.info_sids, t.ks),
              "protocol": {**t.protocol, "generation": generation, "processes": state.num_processes,
                           "dtype": p.dtype, "prompts": p.prompts}}
    free = _unconstrained(p, t, lm, tokenizer, prompts, records, trie.max_len, as_text)
    del lm  # the upstream run of backend both loads the model again, in its own processes
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return records, scores, free


def _unconstrained(p: EvaluateParams, t: ScoredRows, lm, tokenizer, prompts: list, records: list[dict],
                   max_new_tokens: int, as_text) -> dict | None:
    """The same beams without the constraint on the first rows: what the constraint buys (legality, H2) and
    costs, set against the constrained scores of exactly those rows."""
    from harness.decode.constrained import constrained_beam_search

    n = len(t.rows) if p.unconstrained_rows is None else min(p.unconstrained_rows, len(t.rows))
    if n == 0:
        return None
    with progress() as bar:
        task = bar.add_task(f"unconstrained beam search ({t.num_beams} beams, {n} rows)", total=n)
        beams = constrained_beam_search(lm, tokenizer, prompts[:n], None, t.num_beams, p.batch_size,
                                        progress=lambda k: bar.advance(task, k), max_new_tokens=max_new_tokens)
    free = t.records([[as_text(b) for b in res.sequences] for res in beams])
    catalogue = set(t.info_sids)
    illegal = sorted({b for r in free for b in r["predict"] if b not in catalogue})
    return {"rows": n, "num_beams": t.num_beams, "max_new_tokens": max_new_tokens,
            "constrained": score_records(records[:n], t.info_sids, t.ks),
            "unconstrained": score_records(free, t.info_sids, t.ks),
            "illegal_examples": illegal[:10]}


def _upstream_scores(p: EvaluateParams, t: ScoredRows, model: str, model_dir: Path, out: Path,
                     allow_unpinned: bool) -> dict:
    """The pinned evaluate.py + calc.py on the same rows; writes predictions.json, scores.json and the logs."""
    from harness.upstream import stages

    u = stages.evaluate(p, t, model_dir, out, allow_unpinned)
    scores = {"model": model, "scored": True, "evaluator": "upstream", "metrics": u["metrics"],
              "upstream_commit": u["upstream_commit"],
              "protocol": {**t.protocol, "generation": u["generation"], "processes": u["processes"],
                           "dtype": u["dtype"], "prompts": "upstream"}}
    write_json(out / SCORES, scores)
    return scores


def run_metrics(p: EvaluateParams, dataset_dir: str | Path = "data/dataset", sid_dir: str | Path = "data/sid",
                eval_dir: str | Path = "reports/eval", metrics_path: str | Path = "reports/metrics.json") -> dict:
    """Entry point of the ``metrics`` stage: every model's scores side by side with the baselines, all on the
    same test rows (a model scored under another protocol, e.g. a stale evaluation, is an error)."""
    import json

    t = ScoredRows(p, Path(dataset_dir), Path(sid_dir))
    scored: dict[str, dict | None] = {}
    cross: dict[str, dict] = {}
    decoding: dict[str, dict] = {}
    evaluators: dict[str, dict] = {}
    generation = None

    def read_scores(path: Path) -> dict:
        try:
            s = json.loads(read_utf8(path))
            s["metrics"], protocol = s["metrics"], s["protocol"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise HarnessError(f"{path}: not an evaluate scores file ({e.__class__.__name__}: {e})") from None
        mismatch = {k: (protocol.get(k), v) for k, v in t.protocol.items() if protocol.get(k) != v}
        if mismatch:
            raise HarnessError(f"{path}: scored under another protocol than evaluate's params and data "
                               f"({', '.join(f'{k}: {a} vs {b}' for k, (a, b) in mismatch.items())}); run `dvc repro`")
        return s

    for model in MODELS:
        s = read_scores(Path(eval_dir) / model / SCORES)
        scored[model] = s["metrics"]
        generation = generation or s["protocol"].get("generation")
        if s["metrics"] is not None:
            evaluators[model] = {"evaluator": s.get("evaluator", "native"), "upstream_commit": s.get("upstream_commit"),
                                 "prompts": s["protocol"].get("prompts", "harness")}
        free_path = Path(eval_dir) / model / UNCONSTRAINED
        if s["metrics"] is not None and free_path.is_file():
            decoding[model] = json.loads(read_utf8(free_path))
        upstream_path = Path(eval_dir) / model / UPSTREAM / SCORES
        if upstream_path.is_file():  # evaluate.backend both: the pinned evaluate.py on the same model
            u = read_scores(upstream_path)
            cross[model] = {"metrics": u["metrics"], "upstream_commit": u.get("upstream_commit"),
                            "generation": u["protocol"].get("generation")}
    if scored["sft"] is None:
        raise HarnessError(f"{Path(eval_dir) / 'sft' / SCORES}: the SFT model was not scored")
    popular = most_popular(t.dataset.split("train"), t.index, t.num_beams)
    metrics = {
        **scored,
        "baselines": {
            "most_popular": score_records(t.records([popular] * len(t.rows)), t.info_sids, t.ks),
            "repeat_last": score_records(t.records([repeat_last(r, t.index) for r in t.rows]), t.info_sids, t.ks),
        },
        "protocol": {**t.protocol, "generation": generation},
        "evaluated_by": evaluators,
    }
    if cross:
        metrics["upstream_evaluate"] = cross
    if decoding:
        metrics["decoding"] = decoding
    write_json(metrics_path, metrics)
    return metrics
