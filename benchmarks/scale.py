"""Memory and time at scale: the evaluate stage on many test rows, and the audits on many interactions.

    python benchmarks/scale.py --out /tmp/s.json                          # 5k and 50k rows, 1M interactions
    python benchmarks/scale.py --eval-rows 500 5000 --audit-interactions 100000 --out /tmp/s.json

Evaluation: for each row count, a synthetic catalogue with Industrial's shape (3,686 three-level SIDs), that
many test rows with histories of 1-10 items, and a config-initialised model (the embedded default's size,
with a tokenizer that knows the SID tokens) are written to disk. ``run_evaluate`` then runs in a fresh
process, the stage's own code with 50 beams. The record gives that process's resident set before
``run_evaluate``, its peak, and the growth between them. If outputs stream, the growth depends on the model
and the batch, not on the row count.

Audits: ``run_audit`` in a fresh process on a synthetic canonical dataset of that many interactions:
wall time and peak resident set.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LEVELS, CODES, FIRST_CODES, ITEMS = 3, 256, 48, 3686


def rss_mib() -> tuple[float, float]:
    """(current, peak) resident set of this process in MiB, from /proc (Linux)."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    kib = lambda k: int(fields[k].split()[0]) / 1024  # noqa: E731
    return kib("VmRSS"), kib("VmHWM")


def write_workspace(root: Path, test_rows: int, other_rows: int, seed: int) -> None:
    """A canonical dataset (``test_rows`` test samples plus ``other_rows`` train/valid ones) and a SID index."""
    from harness.data.schema import Dataset, Interaction, Item, write_dataset
    from harness.sid.index import write_index_json
    from harness.sid.tokens import codes_to_tokens

    rng = random.Random(seed)
    codes: set[tuple[int, ...]] = set()
    while len(codes) < ITEMS:
        codes.add((rng.randrange(FIRST_CODES), rng.randrange(CODES), rng.randrange(CODES)))
    index = {i: codes_to_tokens(c) for i, c in enumerate(sorted(codes))}
    items = [Item(id=i, title=f"item {i}") for i in range(ITEMS)]
    rows = []
    for n in range(test_rows + other_rows):
        split = "test" if n < test_rows else ("train" if n % 10 else "valid")
        hist = tuple(rng.randrange(ITEMS) for _ in range(rng.randint(1, 10)))
        rows.append(Interaction(user=f"U{n}", history=hist, target=rng.randrange(ITEMS), split=split))
    write_dataset(Dataset(name="scale", items=items, interactions=rows), root / "data" / "dataset")
    (root / "data" / "sid").mkdir(parents=True, exist_ok=True)
    write_index_json(root / "data" / "sid" / "index.json", index)
    (root / "data" / "sid" / "summary.json").write_text(json.dumps({"codebook_size_per_level": [CODES] * LEVELS}))


def write_model(root: Path, seed: int) -> None:
    """The embedded default's model size, config-initialised, with a tokenizer holding every SID token."""
    from harness.params import ModelParams
    from harness.prompts import TEMPLATES
    from harness.sid.index import read_index_json
    from harness.sid.tokens import vocabulary
    from harness.train.model import scratch_model
    from harness.train.tokenizer import train_tokenizer

    index = read_index_json(root / "data" / "sid" / "index.json")
    tok = train_tokenizer(list(TEMPLATES) * 50, 1000, vocabulary(index))
    model = scratch_model(ModelParams(), len(tok), tok.eos_token_id, tok.pad_token_id, 512, seed)
    model.save_pretrained(root / "models" / "sft")
    tok.save_pretrained(root / "models" / "sft")


def child_evaluate(root: Path, beams: int, batch: int) -> dict:
    import importlib

    from harness.evaluate.stage import run_evaluate

    for module in ("torch", "transformers", "accelerate", "harness.decode.constrained", "harness.train.model"):
        importlib.import_module(module)  # libraries loaded before the baseline: the growth is the work's
    from harness.params import EvaluateParams

    before, _ = rss_mib()
    t0 = time.perf_counter()
    p = EvaluateParams(num_beams=beams, batch_size=batch, unconstrained_rows=0)
    s = run_evaluate(p, "sft", root / "data/dataset", root / "data/sid", root / "models/sft",
                     root / "reports/eval/sft")
    seconds = time.perf_counter() - t0
    _, peak = rss_mib()
    return {"rows": s["metrics"]["rows"], "seconds": seconds, "rows_per_second": s["metrics"]["rows"] / seconds,
            "rss_before_mib": before, "peak_rss_mib": peak, "growth_mib": peak - before,
            "predictions_mib": (root / "reports/eval/sft/predictions.json").stat().st_size / 2**20}


def child_audit(root: Path) -> dict:
    from harness.audit.stage import run_audit

    before, _ = rss_mib()
    t0 = time.perf_counter()
    run_audit(root / "data/dataset", root / "data/sid", root / "models/none", root / "reports/audit")
    seconds = time.perf_counter() - t0
    _, peak = rss_mib()
    return {"seconds": seconds, "rss_before_mib": before, "peak_rss_mib": peak, "growth_mib": peak - before}


def in_child(*args: str) -> dict:
    r = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True)
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if r.returncode != 0 or line is None:
        raise SystemExit(f"{' '.join(args)}: failed (exit {r.returncode})\n{r.stderr[-4000:]}")
    return json.loads(line[len("RESULT "):])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--eval-rows", type=int, nargs="*", default=[5000, 50000])
    ap.add_argument("--beams", type=int, default=50)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--audit-interactions", type=int, nargs="*", default=[1_000_000])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)  # internal: one measurement in this process
    a = ap.parse_args()
    if a.child:
        kind, root = a.child[0], Path(a.child[1])
        res = child_evaluate(root, int(a.child[2]), int(a.child[3])) if kind == "evaluate" else child_audit(root)
        print("RESULT " + json.dumps(res), flush=True)
        return
    if a.out is None:
        ap.error("--out is required")
    from harness.provenance import cpu_model

    doc: dict = {"device": cpu_model(), "beams": a.beams, "batch": a.batch, "catalogue_size": ITEMS,
                 "evaluate": [], "audit": []}
    with tempfile.TemporaryDirectory(prefix="scale-") as tmp:
        for n in a.eval_rows:
            root = Path(tmp) / f"eval-{n}"
            write_workspace(root, n, 100, a.seed)
            write_model(root, a.seed)
            res = in_child("evaluate", str(root), str(a.beams), str(a.batch))
            doc["evaluate"].append(res)
            print(f"evaluate {n:>9,} rows  {res['seconds']:8.1f} s  peak {res['peak_rss_mib']:7.0f} MiB  "
                  f"growth {res['growth_mib']:6.0f} MiB", flush=True)
        for n in a.audit_interactions:
            root = Path(tmp) / f"audit-{n}"
            write_workspace(root, n // 10, n - n // 10, a.seed)
            res = {"interactions": n, **in_child("audit", str(root))}
            doc["audit"].append(res)
            print(f"audit    {n:>9,} samples {res['seconds']:8.1f} s  peak {res['peak_rss_mib']:7.0f} MiB", flush=True)
    if len(doc["evaluate"]) >= 2:
        lo, hi = doc["evaluate"][0], doc["evaluate"][-1]
        doc["growth_ratio"] = hi["growth_mib"] / max(lo["growth_mib"], 1.0)
        doc["rows_ratio"] = hi["rows"] / lo["rows"]
    a.out.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
