"""Constrained beam search, four ways, on the same model, prompts and catalogue, in one run (ratios, not
absolute times, are what carry across machines).

    python benchmarks/constrained_decoding.py --out /tmp/b.json            # CPU default workload
    python benchmarks/constrained_decoding.py --device cuda --model qwen2.5-1.5b --dtype bfloat16 --vocab 151936 \
        --data upstream/data/Amazon --rows 0 --compare-rows 512 --skip upstream_style vectorised_hf unconstrained \
        --out b.json                     # every Industrial test row with (c), the first 512 with (e) as well

(a) upstream_style: transformers ``generate`` beam search with a per-beam Python prefix lookup, the way
    upstream's evaluate.py constrains (written here for the measurement, not copied);
(b) vectorised_hf:  ``generate`` with this project's vectorised logits processor;
(c) project:        the decoder the ``evaluate`` stage uses (``constrained_beam_search``);
(d) unconstrained:  plain ``generate`` beam search, for reference;
(e) upstream:       upstream's own ``ConstrainedLogitsProcessor``, imported from the checked-out ``upstream/``
    LogitProcessor.py at run time (never copied), keyed the way its evaluate.py builds the table: the prompt's
    last three tokens (a fixed three-token answer marker ends every prompt here), then the generated prefix.
    Skipped, with the reason, when ``upstream/`` is not checked out; the JSON names the commit that ran.
(a), (b) and (c) must return the same ranked beams on every row (scores tied within 1e-6 may swap); the
script fails otherwise. (e) fails open (an unknown prefix keeps every token, at -1e6), so its rows are
compared and counted rather than required to match. Default workload: a catalogue shaped like Industrial's (3,686 three-level SIDs, 48
first-level codes), 8 prompts x 50 beams per batch, prompts of ~60 tokens, a ~50k-token vocabulary, and a
config-initialised Llama (random weights: time does not depend on weight values).

``--data DIR`` replaces the synthetic workload with the real one: the ``evaluate`` stage's own test rows and
prompts (``TestProtocol``) and the shipped SID catalogue of ``--category`` in an upstream-layout data dir,
tokenised by a Qwen2-style BPE tokenizer (``harness.train.tokenizer``) trained on the catalogue, since Qwen's own
vocabulary cannot be downloaded; the model's embedding is widened to ``--vocab`` rows. ``--rows 0`` takes every
test row. ``--compare-rows N`` runs (a), (b), (d), (e), and (c) a second time, on the first N rows only, so
that a slow decoder can be compared without decoding the whole split with it; the ratios use those N rows.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch
from architectures import ARCHITECTURES, config_model  # beside this script
from transformers import LogitsProcessor, LogitsProcessorList

from harness.decode.constrained import (
    BeamResult,
    SidConstraint,
    SidTrie,
    constrained_beam_search,
    generation_config,
)
from harness.provenance import cpu_model, git_record


class PrefixLookup(LogitsProcessor):
    """Upstream's way (reimplemented for the measurement): for every beam, in Python, the generated prefix is
    turned into a key, its allowed tokens are looked up in a dict, and that row of the mask is opened; an
    unknown prefix keeps EOS only (as this project's constraint, so outputs are comparable)."""

    def __init__(self, sequences: list[list[int]], eos_id: int, prompt_len: int):
        self.prompt_len, self.eos_id = prompt_len, eos_id
        self.table: dict[str, list[int]] = {}
        for s in sequences:
            for i in range(len(s)):
                self.table.setdefault("-".join(map(str, s[:i])), []).append(s[i])
            self.table.setdefault("-".join(map(str, s)), []).append(eos_id)
        self.table = {k: sorted(set(v)) for k, v in self.table.items()}

    def __call__(self, input_ids, scores):
        mask = torch.full_like(scores, float("-inf"))
        for row, ids in enumerate(input_ids[:, self.prompt_len:]):
            allowed = self.table.get("-".join(str(t) for t in ids.tolist()), [self.eos_id])
            mask[row, allowed] = 0.0
        return scores + mask


MARKER_LEN = 3  # upstream's evaluate.py keys its first step on the prompt's last three tokens


def upstream_processor_factory(seqs: list[list[int]], eos: int, marker: list[int], beams: int, checkout: Path):
    """A fresh upstream ``ConstrainedLogitsProcessor`` per batch (it counts steps), from the checkout's own module,
    with the prefix table built as its evaluate.py builds it: the answer marker + SID + EOS, the first key the
    marker's three tokens, every later key the generated tokens so far."""
    import sys

    sys.path.insert(0, str(checkout))
    try:
        from LogitProcessor import (
            ConstrainedLogitsProcessor,  # upstream's module, imported at run time
        )
    finally:
        sys.path.remove(str(checkout))
    table: dict[str, set[int]] = {}
    for s in seqs:
        ids = marker + s + [eos]
        for i in range(MARKER_LEN, len(ids)):
            key = "-".join(map(str, ids[:i] if i == MARKER_LEN else ids[MARKER_LEN:i]))
            table.setdefault(key, set()).add(ids[i])
    allowed = {k: sorted(v) for k, v in table.items()}

    def make(_width: int):
        return ConstrainedLogitsProcessor(prefix_allowed_tokens_fn=lambda _b, ids: allowed.get(
            "-".join(map(str, ids)), []), num_beams=beams, base_model="qwen")
    return make


def upstream_agreement(ours: list[BeamResult], theirs: list[BeamResult], catalogue: set[tuple[int, ...]]) -> dict:
    """Rows where upstream's ranked beams equal the project's, and rows where upstream let a beam out (H2). In
    bf16 on random weights near-tied beams can swap between two decoders' kernels, so the same beams in any
    order, the same best beam, and the mean share of shared beams are counted too."""
    pairs = list(zip(ours, theirs, strict=True))
    sets = [({tuple(s) for s in a.sequences}, {tuple(s) for s in b.sequences}) for a, b in pairs]
    return {"rows": len(ours), "identical_rows": sum(1 for a, b in pairs if a.sequences == b.sequences),
            "same_beam_set_rows": sum(1 for x, y in sets if x == y),
            "same_top1_rows": sum(1 for a, b in pairs if a.sequences[:1] == b.sequences[:1]),
            "mean_shared_beams": sum(len(x & y) / max(len(x), 1) for x, y in sets) / max(len(sets), 1),
            "rows_with_illegal_beams": sum(1 for b in theirs if any(tuple(s) not in catalogue for s in b.sequences))}


def workload(items: int, first_codes: int, codes: int, vocab: int, rows: int, prompt_len: int, seed: int):
    """Industrial-shaped SIDs (3 levels, a small first level) over the last ids of the vocabulary, and
    prompts of ~prompt_len random ordinary tokens."""
    rng = random.Random(seed)
    sid_base = vocab - (first_codes + 2 * codes)
    tuples: set[tuple[int, int, int]] = set()
    while len(tuples) < items:
        tuples.add((rng.randrange(first_codes), rng.randrange(codes), rng.randrange(codes)))
    seqs = [[sid_base + a, sid_base + first_codes + b, sid_base + first_codes + codes + c]
            for a, b, c in sorted(tuples)]
    prompts = [[rng.randrange(3, sid_base) for _ in range(prompt_len + rng.randrange(-10, 11))] for _ in range(rows)]
    return seqs, prompts


def industrial_workload(data_dir: Path, category: str, rows: int, beams: int, tokenizer_vocab: int):
    """The evaluate stage's test rows, prompts and catalogue on a real data dir, as token ids: (catalogue
    sequences, prompts, eos, pad, tokenizer size, rows in the split)."""
    import tempfile

    from harness.data.schema import write_dataset
    from harness.data.upstream_format import read_upstream_dir
    from harness.evaluate.protocol import TestProtocol
    from harness.params import EvaluateParams
    from harness.sid.index import write_index_json
    from harness.sid.tokens import vocabulary
    from harness.train.sft import tokenizer_corpus
    from harness.train.tokenizer import train_tokenizer

    ds, _ = read_upstream_dir(data_dir, category)
    if not ds.sid_index:
        raise SystemExit(f"{data_dir}: no shipped SID index for {category}")
    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        write_dataset(ds, Path(tmp) / "dataset")
        write_index_json(Path(tmp) / "sid" / "index.json", ds.sid_index)
        t = TestProtocol(EvaluateParams(num_beams=beams, max_rows=rows or None), Path(tmp) / "dataset",
                         Path(tmp) / "sid")
    tok = train_tokenizer(tokenizer_corpus(ds), tokenizer_vocab, vocabulary(t.index), "qwen2")
    seqs = sorted({tuple(tok.convert_tokens_to_ids(t.index[i])) for i in t.index})
    prompts = [tok(p, add_special_tokens=False).input_ids for p in t.prompts]
    total = sum(1 for r in ds.split("test") if r.target in t.index)
    return [list(s) for s in seqs], prompts, tok.eos_token_id, tok.pad_token_id, len(tok), total


def common_marker(prompts: list[list[int]]) -> list[int] | None:
    """The last MARKER_LEN tokens when every prompt ends with the same ones (upstream keys its first step on
    them), else None."""
    tails = {tuple(p[-MARKER_LEN:]) for p in prompts}
    return list(tails.pop()) if len(tails) == 1 else None


def upstream_commit(checkout: Path) -> dict:
    """The upstream commit that ran (e): the submodule's record in a git checkout, else a ``COMMIT`` file beside
    the module (a copy carried without its .git: first line the commit, second the pinned one)."""
    stamp = checkout / "COMMIT"
    if stamp.is_file():
        lines = stamp.read_text().split()
        return {"upstream_commit": lines[0], "matches_pin": len(lines) > 1 and lines[0] == lines[1]}
    try:
        rec = git_record(checkout.parent)
    except Exception as e:  # noqa: BLE001 - provenance must not lose the measurement
        return {"upstream_commit": None, "matches_pin": None, "commit_error": str(e)}
    return {"upstream_commit": rec["upstream_checked_out"], "matches_pin": rec["upstream_matches_pin"]}


def run_generate(model, prompts, processor_for, beams, batch, eos, pad, max_new):
    out: list[BeamResult] = []
    device = next(model.parameters()).device
    for start in range(0, len(prompts), batch):
        chunk = prompts[start:start + batch]
        width = max(len(p) for p in chunk)
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in chunk], device=device)
        attn = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk], device=device)
        procs = LogitsProcessorList([processor_for(width)] if processor_for else [])
        with torch.inference_mode():
            res = model.generate(input_ids=ids, attention_mask=attn, generation_config=generation_config(
                beams, max_new, eos, pad), logits_processor=procs)
        seqs, scores = res.sequences[:, width:].tolist(), res.sequences_scores.tolist()
        for i in range(len(chunk)):
            got = [[t for t in s if t not in (eos, pad)] for s in seqs[i * beams:(i + 1) * beams]]
            out.append(BeamResult(got, scores[i * beams:(i + 1) * beams]))
    return out


def same_ranking(a: list[BeamResult], b: list[BeamResult], tol: float = 1e-6) -> tuple[bool, str]:
    """Equal ranked beams on every row; beams whose scores tie within ``tol`` may swap places."""
    for row, (x, y) in enumerate(zip(a, b, strict=True)):
        if len(x.sequences) != len(y.sequences):
            return False, f"row {row}: {len(x.sequences)} vs {len(y.sequences)} beams"
        for j, (sx, sy) in enumerate(zip(x.sequences, y.sequences)):
            if sx == sy:
                continue
            if abs(x.scores[j] - y.scores[j]) > 1e-4 or not any(
                    sy == x.sequences[m] and abs(x.scores[m] - x.scores[j]) <= tol for m in range(len(x.sequences))):
                return False, f"row {row}, beam {j}: {sx} ({x.scores[j]:.6f}) vs {sy} ({y.scores[j]:.6f})"
    return True, ""


class _Tok:  # the decoder needs only these attributes of a tokenizer when prompts are token ids
    def __init__(self, eos, pad):
        self.eos_token_id, self.pad_token_id = eos, pad


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default="tiny", choices=sorted(ARCHITECTURES))
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--vocab", type=int, default=50_000, help="embedding rows (with --data: at least the tokenizer's)")
    ap.add_argument("--data", type=Path, help="an upstream-layout data dir: its real test rows and SIDs")
    ap.add_argument("--category", default="Industrial_and_Scientific")
    ap.add_argument("--tokenizer-vocab", type=int, default=1000, help="with --data: BPE vocabulary before the SID tokens")
    ap.add_argument("--items", type=int, default=3686)
    ap.add_argument("--first-codes", type=int, default=48)
    ap.add_argument("--codes", type=int, default=256)
    ap.add_argument("--rows", type=int, default=16, help="prompts (with --data: the first N test rows, 0 = all)")
    ap.add_argument("--compare-rows", type=int, default=0,
                    help="run the other decoders (and (c) again) on the first N rows only (0 = every row)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--beams", type=int, default=50)
    ap.add_argument("--prompt-len", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip", nargs="*", default=[],
                    choices=["upstream_style", "vectorised_hf", "unconstrained", "upstream"])
    ap.add_argument("--upstream-dir", type=Path, default=Path(__file__).resolve().parents[1] / "upstream")
    return ap.parse_args()


def load_workload(args: argparse.Namespace) -> dict:
    """Catalogue sequences, prompt ids, special ids and the answer marker of the synthetic or the real workload."""
    if args.data is not None:
        seqs, prompts, eos, pad, tok_size, in_split = industrial_workload(args.data, args.category, args.rows,
                                                                          args.beams, args.tokenizer_vocab)
        return {"seqs": seqs, "prompts": prompts, "eos": eos, "pad": pad, "vocab": max(args.vocab, tok_size),
                "marker": common_marker(prompts), "source": f"{args.category} test split ({args.data})",
                "tokenizer_size": tok_size, "rows_in_split": in_split}
    if args.rows < 1:
        raise SystemExit("--rows 0 (every row) needs --data")
    seqs, prompts = workload(args.items, args.first_codes, args.codes, args.vocab, args.rows, args.prompt_len,
                             args.seed)
    marker = [3, 4, 5]  # every prompt ends with the same answer marker, as upstream's "### Response:\n"
    return {"seqs": seqs, "prompts": [p + marker for p in prompts], "eos": 2, "pad": 0, "vocab": args.vocab,
            "marker": marker, "source": "synthetic, Industrial's shape", "tokenizer_size": None,
            "rows_in_split": None}


def upstream_skip_reason(args: argparse.Namespace, marker: list[int] | None) -> str | None:
    if "upstream" in args.skip:
        return None
    if not (args.upstream_dir / "LogitProcessor.py").is_file():
        return f"skipped: {args.upstream_dir}/LogitProcessor.py not found (make upstream)"
    if marker is None:
        return f"skipped: the prompts do not all end with the same {MARKER_LEN} tokens, which upstream keys on"
    return None


def main() -> None:
    args = parse_args()
    w = load_workload(args)
    seqs, prompts, eos, pad, vocab = w["seqs"], w["prompts"], w["eos"], w["pad"], w["vocab"]
    positions = max(512, max(map(len, prompts)) + 8)
    with torch.device(args.device):  # initialised where it runs: a 1.5B model in seconds on a GPU
        model = config_model(args.model, vocab, eos, pad, positions, args.seed)
    model.to(getattr(torch, args.dtype)).eval()
    upstream_note = upstream_skip_reason(args, w["marker"])
    if upstream_note:
        args.skip.append("upstream")
    n = min(args.compare_rows or len(prompts), len(prompts))
    subset = prompts[:n]
    trie = SidTrie(seqs, eos, vocab)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)

    def timed(fn):
        sync()
        t0 = time.perf_counter()
        res = fn()
        sync()
        return res, time.perf_counter() - t0

    def project(rows):
        return lambda: constrained_beam_search(model, _Tok(eos, pad), rows, trie, args.beams, args.batch)

    results, seconds = {}, {}
    project(prompts[:2])()  # warm-up (kernels, allocator) on two rows, not timed
    runs = {
        "project": project(prompts),
        "project_compare": project(subset) if n < len(prompts) else None,
        "upstream_style": lambda: run_generate(model, subset, lambda plen: PrefixLookup(seqs, eos, plen),
                                               args.beams, args.batch, eos, pad, trie.max_len),
        "vectorised_hf": lambda: run_generate(model, subset, lambda plen: SidConstraint(trie, plen), args.beams,
                                              args.batch, eos, pad, trie.max_len),
        "unconstrained": lambda: run_generate(model, subset, None, args.beams, args.batch, eos, pad, trie.max_len),
    }
    if "upstream" not in args.skip:
        make = upstream_processor_factory(seqs, eos, w["marker"], args.beams, args.upstream_dir)
        runs["upstream"] = lambda: run_generate(model, subset, make, args.beams, args.batch, eos, pad, trie.max_len)
    for name, fn in runs.items():
        if name in args.skip or fn is None:
            continue
        results[name], seconds[name] = timed(fn)
        print(f"{name:15s} {seconds[name]:8.2f} s", flush=True)
    ours = results.get("project_compare", results["project"][:n])
    base_s = seconds.get("project_compare", seconds["project"])
    # the project decoder batches by prompt length; compare row by row in input order
    ref = next((name for name in ("upstream_style", "vectorised_hf") if name in results), None)
    checks = {} if ref is None else {
        name: same_ranking(results[ref], got) for name, got in (("vectorised_hf", results.get("vectorised_hf")),
                                                                 ("project", ours)) if got is not None and name != ref}
    identical = all(ok for ok, _ in checks.values()) if checks else None
    upstream = None
    if "upstream" in results:
        upstream = {**upstream_agreement(ours, results["upstream"], {tuple(s) for s in seqs}),
                    "seconds": seconds["upstream"], "speedup_of_project": seconds["upstream"] / base_s,
                    **upstream_commit(args.upstream_dir)}
    doc = {
        "upstream_style_s": seconds.get("upstream_style"), "vectorised_hf_s": seconds.get("vectorised_hf"),
        "project_s": seconds["project"], "unconstrained_s": seconds.get("unconstrained"),
        "project_compare_s": base_s, "compare_rows": n,
        "speedup_vs_upstream_style": (seconds["upstream_style"] / base_s if "upstream_style" in seconds else None),
        "speedup_vs_vectorised_hf": (seconds["vectorised_hf"] / base_s if "vectorised_hf" in seconds else None),
        "identical_outputs": identical, "mismatch": {k: why for k, (ok, why) in checks.items() if not ok},
        "device": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else cpu_model(),
        "model": args.model, "dtype": args.dtype,
        "model_parameters": sum(p.numel() for p in model.parameters()), "vocab_size": vocab,
        "workload": w["source"], "tokenizer_size": w["tokenizer_size"], "rows_in_split": w["rows_in_split"],
        "rows": len(prompts), "batch": args.batch, "beams": args.beams, "catalogue_size": len(seqs),
        "first_level_codes": len({s[0] for s in seqs}), "prompt_tokens_mean": sum(map(len, prompts)) / len(prompts),
        "users_per_second_project": len(prompts) / seconds["project"], "torch": torch.__version__,
        "upstream": upstream or upstream_note,
    }
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps({k: doc[k] for k in ("speedup_vs_upstream_style", "identical_outputs", "upstream")}))
    if identical is False:
        raise SystemExit(f"decoders disagree: {doc['mismatch']}")


if __name__ == "__main__":
    main()
