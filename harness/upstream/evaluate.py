"""The ``evaluate@<model>`` stage's upstream adapter.

- ``evaluate.backend: upstream``: the pinned evaluate.py once per shard (one per GPU, as evaluate.sh runs
  it), the shards merged in test-row order, calc.py on the merge. calc.py only prints; what it printed must
  equal ``harness score`` on the same JSON (within numpy's print precision), and ``harness score``'s figures
  are what gets recorded.
- ``evaluate.prompts: upstream``: the native decoder on upstream's own prompts, rendered by the pinned
  data.py's ``EvalSidDataset`` in upstream's environment (harness/upstream/export_prompts.py), constrained to
  upstream's answer format (SID, newline, EOS).
- ``evaluate.backend: both`` (cross-scoring): the native run in the stage's folder, upstream's in
  ``upstream/`` beside it, and ``upstream/agreement.json``: the two decoders' Top-K compared row by row,
  every differing row put in one class with its cause (see ``agreement``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from harness.data.upstream_format import write_info_txt, write_split_csv
from harness.errors import DataFormatError, HarnessError, ParamsError
from harness.evaluate.protocol import TestProtocol
from harness.evaluate.stage import model_present, record_not_scored, run_evaluate
from harness.io import atomic_dir, read_utf8, write_json
from harness.params import EvaluateParams
from harness.results import PREDICTIONS, SCORES, UPSTREAM
from harness.upstream import source
from harness.upstream.calc_output import disagreements, parse_calc_stdout
from harness.upstream.runner import (
    Command,
    begin,
    finish,
    run_command,
    run_parallel,
    workdir,
)

PARAMS = "params.yaml"
SCRIPT = "evaluate.py"
AGREEMENT = "agreement.json"
MAX_NEW_TOKENS = 256  # evaluate.sh's --max_new_tokens
TIE = 1e-5  # |Δ log p| under which two beams are tied (fp32 rescoring)
SAMPLING_KEYS = ("do_sample", "top_k", "top_p", "temperature", "repetition_penalty")


def shard_command(p: EvaluateParams, num_beams: int, python: str, model_dir: Path, info: Path, category: str,
                  shard_csv: Path, result_json: Path, gpu: int | None) -> Command:
    """One evaluate.py shard as evaluate.sh runs it, minus the two flags it does not take (H6). An exit
    code of 2 is still tolerated, but only once the caller has found the result JSON."""
    return Command([python, "-u", "evaluate.py", "--base_model", str(model_dir.resolve()),
                    "--info_file", str(info.resolve()), "--category", category,
                    "--test_data_path", str(shard_csv.resolve()), "--result_json_data", str(result_json.resolve()),
                    "--batch_size", str(p.batch_size), "--num_beams", str(num_beams),
                    "--max_new_tokens", str(MAX_NEW_TOKENS), "--length_penalty", "0.0"],
                   env={"CUDA_VISIBLE_DEVICES": str(gpu)} if gpu is not None else {}, accept_exit=(0, 2))


def calc_command(python: str, result_json: Path, info: Path) -> Command:
    """calc.py prints HR/NDCG and CC to stdout only: the log is what gets parsed."""
    return Command([python, "calc.py", "--path", str(result_json.resolve()), "--item_path", str(info.resolve())])


def export_command(python: str, model_dir: Path, test_csv: Path, category: str, out: Path) -> Command:
    """This project's exporter, run by upstream's interpreter from the checkout root: upstream's own
    EvalSidDataset renders the evaluation prompts (token ids)."""
    script = Path(__file__).with_name("export_prompts.py")
    return Command([python, str(script.resolve()), "--model", str(model_dir.resolve()), "--test-csv",
                    str(test_csv.resolve()), "--category", category, "--out", str(out.resolve())])


def generation_inherited(model_dir: Path) -> dict:
    """Sampling settings in the model's generation_config.json that evaluate.py, which leaves them unset,
    inherits (H1): non-empty means its beam search may be beam sampling."""
    path = Path(model_dir) / "generation_config.json"
    if not path.is_file():
        return {}
    cfg = json.loads(read_utf8(path))
    return {k: cfg[k] for k in SAMPLING_KEYS if k in cfg}


def _refuse(p: EvaluateParams, category: str) -> None:
    import torch

    source.need_category(SCRIPT, category, "evaluate.backend")
    gpus = torch.cuda.device_count()
    if gpus and p.num_processes > gpus:
        raise ParamsError(PARAMS, "evaluate.num_processes", f"{p.num_processes} shards but {gpus} GPUs")


def _read_shard(result: Path, code: int, log: Path) -> list[dict]:
    if not result.is_file():
        raise HarnessError(f"evaluate.py exited {code} without writing {result.name} (log: {log.name})")
    try:
        part = json.loads(read_utf8(result))
    except json.JSONDecodeError as e:
        raise DataFormatError(result, e.lineno, f"not JSON: {e.msg}") from None
    if not isinstance(part, list) or not all(isinstance(r, dict) and "predict" in r for r in part):
        raise DataFormatError(result, 1, "expected a list of objects with 'predict'")
    return part


def upstream_scores(p: EvaluateParams, t: TestProtocol, model: str, model_dir: Path, out: Path,
                    allow_unpinned: bool) -> dict:
    """evaluate.py per shard, merged, calc.py checked against ``harness score``; writes predictions.json,
    scores.json, upstream_run.json and the logs into ``out``."""
    import torch

    from harness.evaluate.score import score_records

    record, python, started = begin("evaluate", allow_unpinned)
    shards = p.num_processes
    gpus = torch.cuda.device_count()
    cat = t.dataset.name
    with workdir("evaluate") as work:
        info = work / "info.txt"
        write_info_txt(info, t.dataset.items, t.index)
        bounds = np.linspace(0, len(t.rows), shards + 1).astype(int)  # contiguous shards, like split.py
        cmds, logs, results = [], [], []
        for i in range(shards):
            csv_path, result = work / f"{i}.csv", work / f"{i}.json"
            write_split_csv(csv_path, t.rows[bounds[i]:bounds[i + 1]], t.dataset.items, t.index)
            cmds.append(shard_command(p, t.num_beams, python, model_dir, info, cat, csv_path, result,
                                      i if gpus else None))
            source.check_flags(cmds[-1].argv, SCRIPT, "main")
            logs.append(work / f"evaluate-{i}.log")
            results.append(result)
        codes = run_parallel(cmds, logs)
        records: list[dict] = []
        for code, result, log in zip(codes, results, logs):
            records += _read_shard(result, code, log)
        got = [str(r.get("output", "")).strip() for r in records]
        if got != t.targets:
            raise HarnessError(f"the merged upstream results hold {len(records)} rows that do not line up with the "
                               f"{len(t.targets)} test rows in order")
        merged = work / "final_result.json"
        write_json(merged, records, indent=4)
        cmds.append(calc_command(python, merged, info))
        logs.append(work / "calc.log")
        codes.append(run_command(cmds[-1], logs[-1]))
        metrics = score_records(records, t.info_sids, t.ks)
        problems = disagreements(parse_calc_stdout(read_utf8(logs[-1]), "calc.py stdout"), metrics, t.ks)
        if problems:
            raise HarnessError("calc.py's printed figures disagree with harness score on the same result JSON: "
                               + "; ".join(problems))
        write_json(out / PREDICTIONS, records, indent=4)
        run_info = finish(out, record, cmds, codes, started, logs)
    generation = {"num_beams": t.num_beams, "length_penalty": 0.0, "max_new_tokens": MAX_NEW_TOKENS,
                  "inherited_from_model": generation_inherited(model_dir)}
    scores = {"model": model, "scored": True, "evaluator": "upstream", "metrics": {**metrics, "calc_py_agrees": True},
              "upstream_commit": run_info["upstream_commit"],
              "protocol": {**t.protocol, "generation": generation, "processes": shards, "dtype": "bfloat16",
                           "prompts": "upstream"}}
    write_json(out / SCORES, scores)
    return scores


def export_prompts(t: TestProtocol, model_dir: Path, allow_unpinned: bool) -> list[list[int]]:
    """Upstream's evaluation prompts (token ids), rendered by its own EvalSidDataset in its environment."""
    python = begin("evaluate (upstream prompts)", allow_unpinned)[1]
    with workdir("prompts") as work:
        csv_path = work / "test.csv"
        write_split_csv(csv_path, t.rows, t.dataset.items, t.index)
        cmd = export_command(python, model_dir, csv_path, t.dataset.name, work / "prompts.json")
        run_command(cmd, work / "export.log")
        doc = json.loads(read_utf8(work / "prompts.json"))
    prompts = doc.get("prompts") if isinstance(doc, dict) else None
    if not isinstance(prompts, list) or len(prompts) != len(t.rows):
        raise HarnessError(f"upstream's EvalSidDataset rendered {len(prompts or [])} prompts for "
                           f"{len(t.rows)} test rows")
    return prompts


# ---------------------------------------------------------------- row-by-row agreement of the two decoders
def agreement(native: list[list[str]], upstream: list[list[str]], catalogue: set[str], inherited: dict,
              native_dtype: str, rescore) -> dict:
    """Compare the native and upstream Top-K lists row by row. A differing row gets the first class that holds,
    judged at its first differing rank r (native item a, upstream item b), with both rescored exactly in fp32
    (``rescore(row, [a, b])`` -> log p of each "SID + newline + EOS" given the row's prompt):

    - ``fail_open`` (H2): upstream's list holds a SID outside the catalogue (its constraint lets a beam out);
    - ``inherited_sampling`` (H1): the model's generation_config asks for sampling, which evaluate.py inherits;
    - ``tie``: a and b score within 1e-5 in fp32, so either order is right;
    - ``precision``: a scores higher in fp32, and upstream decoded in bf16 while the native decoder did not;
    - ``native_search``: b scores higher in fp32, so the native beam search pruned the better item;
    - ``upstream_search``: a scores higher and both decoded in the same precision: upstream's beams pruned it.

    Beam search is approximate either way; at bf16 the two decoders' different batching and padding round
    differently, so at the same precision the search classes come in pairs. ``gap`` per class is the median
    |Δ log p| (fp32) of the two items at the first differing rank.
    """
    classes = {k: 0 for k in ("identical", "fail_open", "inherited_sampling", "tie", "precision", "native_search",
                              "upstream_search")}
    first_rank: list[int] = []
    gaps: dict[str, list[float]] = {}
    examples: dict[str, list[dict]] = {}
    sampled = bool(inherited.get("do_sample"))
    for row, (n, u) in enumerate(zip(native, upstream, strict=True)):
        if n == u:
            classes["identical"] += 1
            continue
        r = next((i for i, (a, b) in enumerate(zip(n, u)) if a != b), min(len(n), len(u)))
        first_rank.append(r)
        a, b = (n[r] if r < len(n) else None), (u[r] if r < len(u) else None)
        if any(x not in catalogue for x in u):
            cls, detail = "fail_open", {"illegal": [x for x in u if x not in catalogue][:3]}
        elif sampled:
            cls, detail = "inherited_sampling", {"inherited": inherited}
        elif a is None or b is None:
            cls, detail = "upstream_search", {"lengths": [len(n), len(u)]}
        else:
            sa, sb = rescore(row, [a, b])
            detail = {"native_logp": round(sa, 6), "upstream_logp": round(sb, 6)}
            gap = abs(sa - sb)
            if abs(sa - sb) <= TIE:
                cls = "tie"
            elif sb > sa:
                cls = "native_search"
            else:
                cls = "precision" if native_dtype != "bfloat16" else "upstream_search"
            gaps.setdefault(cls, []).append(gap)
        classes[cls] += 1
        if len(examples.setdefault(cls, [])) < 3:
            examples[cls].append({"row": row, "rank": r, "native": a, "upstream": b, **detail})
    rows = len(native)
    top1 = sum(1 for n, u in zip(native, upstream) if n[:1] == u[:1])
    return {"rows": rows, "identical_share": classes["identical"] / rows if rows else None,
            "top1_agreement": top1 / rows if rows else None, "classes": classes,
            "first_differing_rank": {"min": min(first_rank), "median": float(np.median(first_rank)),
                                     "max": max(first_rank)} if first_rank else None,
            "gap": {k: float(np.median(v)) for k, v in sorted(gaps.items())},
            "examples": examples, "native_dtype": native_dtype, "upstream_dtype": "bfloat16",
            "tie_tolerance": TIE, "inherited_from_model": inherited}


class Rescorer:
    """Exact log p(SID + newline + EOS | prompt) in fp32 for a row's prompt ids (teacher forcing)."""

    def __init__(self, model_dir: Path, prompts: list[list[int]]):
        import torch

        from harness.train.model import load_pretrained

        self.torch = torch
        self.model, self.tok = load_pretrained(model_dir, torch.float32)
        self.model.eval()
        self.prompts = prompts
        self.newline = self.tok("\n", add_special_tokens=False).input_ids

    def ids(self, sid: str) -> list[int]:
        return self.tok.convert_tokens_to_ids(self.tok.tokenize(sid)) + self.newline + [self.tok.eos_token_id]

    def __call__(self, row: int, sids: list[str]) -> list[float]:
        torch = self.torch
        prompt = self.prompts[row]
        out = []
        with torch.no_grad():
            for sid in sids:
                cont = self.ids(sid)
                ids = torch.tensor([prompt + cont])
                logp = torch.log_softmax(self.model(ids).logits[0, len(prompt) - 1:-1].float(), dim=-1)
                out.append(float(logp[torch.arange(len(cont)), torch.tensor(cont)].sum()))
        return out


def run(p: EvaluateParams, model: str, dataset_dir: str | Path, sid_dir: str | Path,
        model_dir: str | Path, out_dir: str | Path,
        allow_unpinned: bool = False) -> dict | None:
    """Adapter of ``harness.evaluate.run_evaluate`` for ``backend: upstream | both`` and ``prompts: upstream``."""
    model_dir = Path(model_dir)
    out_dir = Path(out_dir)
    t = TestProtocol(p, Path(dataset_dir), Path(sid_dir))
    if not model_present(model, model_dir):
        return record_not_scored(t, model, model_dir, out_dir)
    if p.backend != "native":
        _refuse(p, t.dataset.name)
    if p.backend == "upstream":
        with atomic_dir(out_dir) as tmp:
            return upstream_scores(p, t, model, model_dir, tmp, allow_unpinned)
    rendered: list[list[list[int]]] = []

    def prompt_source(rows: TestProtocol, model_dir: Path) -> list[list[int]]:
        rendered.append(export_prompts(rows, model_dir, allow_unpinned))
        return rendered[-1]

    def cross_score(tmp: Path, rows: TestProtocol, model_dir: Path, native: dict) -> dict:
        (tmp / UPSTREAM).mkdir()
        up = upstream_scores(p, rows, model, model_dir, tmp / UPSTREAM, allow_unpinned)
        if rendered:  # same prompts on both sides: a comparison of the decoders alone
            ours = [r["predict"] for r in json.loads(read_utf8(tmp / PREDICTIONS))]
            theirs = [r["predict"] for r in json.loads(read_utf8(tmp / UPSTREAM / PREDICTIONS))]
            rescore = Rescorer(model_dir, rendered[-1])
            agree = agreement(ours, theirs, set(rows.info_sids), generation_inherited(model_dir), p.dtype, rescore)
        else:
            agree = {"skipped": "the native decoder read this project's prompts (evaluate.prompts: harness), "
                                "upstream's its own: set evaluate.prompts: upstream to compare the decoders"}
        write_json(tmp / UPSTREAM / AGREEMENT, agree)
        return {**up, "agreement": {k: agree.get(k) for k in ("rows", "identical_share", "top1_agreement", "classes",
                                                              "gap")} if "skipped" not in agree else agree}

    return run_evaluate(p, model, dataset_dir, sid_dir, model_dir, out_dir,
                        prompt_source=prompt_source if p.prompts == "upstream" else None,
                        after_scoring=cross_score if p.backend == "both" else None)

