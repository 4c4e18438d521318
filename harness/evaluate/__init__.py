"""Evaluate stages: constrained beam search on the test split for one model (``evaluate@sft``,
``evaluate@rl``), then ``metrics`` merges the models' scores with the baselines into ``reports/metrics.json``.

With ``evaluate.num_processes`` > 1 the stage runs under ``accelerate launch``: each process decodes every
N-th test row into its shard file, and rank 0 merges the shards in test-row order, checking that each row is
where it should be. The merge streams into ``predictions.json`` and the scores, so memory does not grow with
the number of test rows.
"""

from __future__ import annotations

from collections.abc import Callable
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

    def record(self, i: int, pred: list[str], prompt: str | None = None) -> dict:
        """Row ``i`` in upstream's result format (``prompt``: the text shown as input, if not ours)."""
        return {"input": self.prompts[i] if prompt is None else prompt, "output": self.targets[i] + "\n",
                "predict": pred}

    def records(self, preds: list[list[str]]) -> list[dict]:
        """Upstream's result format, one object per row in test-split order."""
        return [self.record(i, pred) for i, pred in enumerate(preds)]


# Renders the native decoder's prompts another way (upstream's own evaluation dataset): the token ids of every
# scored row; the decoder then constrains to that format's answer, "SID" + newline + EOS.
PromptSource = Callable[["ScoredRows", Path], list[list[int]]]
# Runs inside the stage's output folder once the native scores exist (cross-scoring): gets that folder, the
# scored rows, the model folder and the native scores, and returns what to record under scores["upstream"].
AfterScoring = Callable[[Path, "ScoredRows", Path, dict], dict]


def run_evaluate(p: EvaluateParams, model: str, dataset_dir: str | Path = "data/dataset",
                 sid_dir: str | Path = "data/sid", model_dir: str | Path | None = None,
                 out_dir: str | Path | None = None, prompt_source: PromptSource | None = None,
                 after_scoring: AfterScoring | None = None) -> dict | None:
    """Entry point of ``evaluate@<model>``: ``reports/eval/<model>/`` gets ``scores.json`` and, when the model
    exists, upstream-format ``predictions.json``. ``models/rl`` without a model (``rl.enabled: false``) is
    recorded as not scored. Returns None on the non-zero ranks of a launched run.

    The two hooks are how the upstream layer (``evaluate.prompts: upstream``, ``evaluate.backend: both``) adds
    to this stage without this package knowing about it."""
    model_dir = Path(model_dir or f"models/{model}")
    out_dir = Path(out_dir or f"reports/eval/{model}")
    t = ScoredRows(p, Path(dataset_dir), Path(sid_dir))
    if not model_present(model, model_dir):
        return record_not_scored(t, model, model_dir, out_dir)
    native = _native_decode(p, t, model, model_dir, out_dir.parent / f".{out_dir.name}.shards", prompt_source)
    if native is None:  # a non-zero rank of a launched run
        return None
    with atomic_dir(out_dir) as tmp:
        scores, free = native.merge(tmp / PREDICTIONS)
        write_json(tmp / SCORES, scores)
        if free is not None:
            write_json(tmp / UNCONSTRAINED, free)
        if after_scoring is not None:
            scores["upstream"] = after_scoring(tmp, t, model_dir, scores)
    return scores


def model_present(model: str, model_dir: Path) -> bool:
    """The SFT model must exist; models/rl may hold no model (rl.enabled: false)."""
    return model == "sft" or (model_dir / "config.json").is_file()


def record_not_scored(t: "ScoredRows", model: str, model_dir: Path, out_dir: Path) -> dict:
    with atomic_dir(out_dir) as tmp:
        write_json(tmp / SCORES, {"model": model, "scored": False, "reason": f"{model_dir} holds no model",
                                  "metrics": None, "protocol": t.protocol})
    return {"model": model, "scored": False}


class NativeRun:
    """One model decoded by every process into its shard file (JSON lines ``[row, beams]``, written as the
    beams come); rank 0 then merges the shards in test-row order straight into ``predictions.json``, scoring
    as it goes. Memory stays bounded by the decoder's chunk, not by the number of test rows."""

    def __init__(self, p: EvaluateParams, t: ScoredRows, model: str, lm, tokenizer, prompts: list, trie,
                 as_text, shard_dir: Path, processes: int, rendered: bool):
        self.p, self.t, self.model, self.lm, self.tokenizer = p, t, model, lm, tokenizer
        self.prompts, self.trie, self.as_text, self.rendered = prompts, trie, as_text, rendered
        self.shard_dir, self.processes = shard_dir, processes

    def merge(self, predictions: Path) -> tuple[dict, dict | None]:
        """Write predictions.json (upstream's format, test-split order); the scores and the unconstrained
        comparison. The shard files are removed afterwards."""
        import json
        import shutil

        from harness.decode.constrained import generation_config
        from harness.evaluate.score import Scorer
        from harness.io import JsonListWriter

        t, tok = self.t, self.tokenizer
        scorer = Scorer(t.info_sids, t.ks)
        n_free = len(t.rows) if self.p.unconstrained_rows is None else min(self.p.unconstrained_rows, len(t.rows))
        head: list[dict] = []  # the first rows' records, for the unconstrained comparison
        shards = [(self.shard_dir / f"rank-{r}.jsonl").open(encoding="utf-8") for r in range(self.processes)]
        try:
            with predictions.open("w", encoding="utf-8") as fh:
                out = JsonListWriter(fh, indent=4)
                for i in range(len(t.rows)):
                    line = shards[i % self.processes].readline()
                    row, beams = json.loads(line) if line else (None, None)
                    if row != i:
                        raise HarnessError(f"evaluate {self.model}: the {self.processes} shards do not hold test row "
                                           f"{i} where expected (of {len(t.rows)} rows)")
                    rec = t.record(i, beams, tok.decode(self.prompts[i]) if self.rendered else None)
                    out.add(rec)
                    scorer.add(rec)
                    if i < n_free:
                        head.append(rec)
                out.close()
            if any(f.readline() for f in shards):
                raise HarnessError(f"evaluate {self.model}: the shards hold more rows than the {len(t.rows)} test rows")
        finally:
            for f in shards:
                f.close()
        shutil.rmtree(self.shard_dir, ignore_errors=True)
        gc = generation_config(t.num_beams, self.trie.max_len, tok.eos_token_id, tok.pad_token_id).to_dict()
        generation = {k: gc.get(k) for k in ("num_beams", "num_return_sequences", "do_sample", "temperature",
                                              "top_k", "top_p", "repetition_penalty", "length_penalty",
                                              "max_new_tokens")}
        scores = {"model": self.model, "scored": True, "evaluator": "native", "metrics": scorer.result(),
                  "protocol": {**t.protocol, "generation": generation, "processes": self.processes,
                               "dtype": self.p.dtype, "prompts": "upstream" if self.rendered else "harness"}}
        free = _unconstrained(self.p, t, self.lm, tok, self.prompts, head, self.trie.max_len, self.as_text)
        self.lm = None  # the upstream run of backend both loads the model again, in its own processes
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return scores, free


def _native_decode(p: EvaluateParams, t: ScoredRows, model: str, model_dir: Path, shard_dir: Path,
                   prompt_source: PromptSource | None) -> NativeRun | None:
    """The native constrained decoder over this process's rows (every N-th), streamed to its shard file;
    rank 0 gets the run to merge, the other ranks None."""
    import json

    from accelerate import PartialState

    from harness.decode.constrained import catalogue_trie, iter_constrained_beam_search

    state = PartialState(cpu=not torch.cuda.is_available())
    lm, tokenizer = load_model(model_dir, state.device, getattr(torch, p.dtype))
    prompts: list = t.prompts
    if p.prompts == "upstream" and prompt_source is None:
        raise HarnessError("evaluate.prompts: upstream needs the upstream layer to render them (run the stage "
                           "through `harness evaluate`)")
    if prompt_source is not None:  # e.g. upstream's own prompt ids, and its answer format "SID\n" + EOS
        prompts = prompt_source(t, model_dir)
        trie = catalogue_trie(tokenizer, t.index, model_dir, tokenizer("\n", add_special_tokens=False).input_ids)
        as_text = lambda ids: tokenizer.decode(ids, skip_special_tokens=True).strip()  # noqa: E731
    else:
        trie = catalogue_trie(tokenizer, t.index, model_dir)
        as_text = lambda ids: "".join(tokenizer.convert_ids_to_tokens(ids))  # noqa: E731
    mine = list(range(state.process_index, len(t.rows), state.num_processes))  # this process's shard
    shard_dir.mkdir(parents=True, exist_ok=True)
    with progress(disable=not state.is_main_process) as bar, \
            (shard_dir / f"rank-{state.process_index}.jsonl").open("w", encoding="utf-8") as shard:
        task = bar.add_task(f"{model}: constrained beam search ({t.num_beams} beams)", total=len(mine))
        done = 0
        for chunk in iter_constrained_beam_search(lm, tokenizer, [prompts[i] for i in mine], trie, t.num_beams,
                                                  p.batch_size, progress=lambda n: bar.advance(task, n)):
            for res in chunk:
                shard.write(json.dumps([mine[done], [as_text(b) for b in res.sequences]], ensure_ascii=False) + "\n")
                done += 1
    state.wait_for_everyone()
    if not state.is_main_process:
        return None
    return NativeRun(p, t, model, lm, tokenizer, prompts, trie, as_text, shard_dir, state.num_processes,
                     prompt_source is not None)


def _unconstrained(p: EvaluateParams, t: ScoredRows, lm, tokenizer, prompts: list, records: list[dict],
                   max_new_tokens: int, as_text) -> dict | None:
    """The same beams without the constraint on the first rows: what the constraint buys (legality, H2) and
    costs, set against the constrained scores of exactly those rows."""
    from harness.decode.constrained import constrained_beam_search

    n = len(records)  # the first evaluate.unconstrained_rows rows
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
            agreement_path = upstream_path.with_name("agreement.json")
            if agreement_path.is_file():
                cross[model]["agreement"] = json.loads(read_utf8(agreement_path))
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
