"""Constrained beam search, four ways, on the same model, prompts and catalogue, in one run (ratios, not
absolute times, are what carry across machines).

    python benchmarks/constrained_decoding.py --out /tmp/b.json            # CPU default workload
    python benchmarks/constrained_decoding.py --device cuda --model qwen2.5-1.5b --rows 4533 --out b.json

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
    """Rows where upstream's ranked beams equal the project's, and rows where upstream let a beam out (H2)."""
    same = sum(1 for a, b in zip(ours, theirs) if a.sequences == b.sequences)
    leaked = sum(1 for b in theirs if any(tuple(s) not in catalogue for s in b.sequences))
    return {"rows": len(ours), "identical_rows": same, "rows_with_illegal_beams": leaked}


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default="tiny", choices=sorted(ARCHITECTURES))
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--vocab", type=int, default=50_000)
    ap.add_argument("--items", type=int, default=3686)
    ap.add_argument("--first-codes", type=int, default=48)
    ap.add_argument("--codes", type=int, default=256)
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--beams", type=int, default=50)
    ap.add_argument("--prompt-len", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip", nargs="*", default=[],
                    choices=["upstream_style", "vectorised_hf", "unconstrained", "upstream"])
    ap.add_argument("--upstream-dir", type=Path, default=Path(__file__).resolve().parents[1] / "upstream")
    args = ap.parse_args()
    eos, pad = 2, 0
    model = config_model(args.model, args.vocab, eos, pad, 512, args.seed).to(args.device, getattr(torch, args.dtype))
    model.eval()
    seqs, prompts = workload(args.items, args.first_codes, args.codes, args.vocab, args.rows, args.prompt_len,
                             args.seed)
    marker = [3, 4, 5]  # every prompt ends with the same answer marker, as upstream's "### Response:\n"
    prompts = [p + marker for p in prompts]
    upstream_note = None
    if "upstream" not in args.skip and not (args.upstream_dir / "LogitProcessor.py").is_file():
        upstream_note = f"skipped: {args.upstream_dir}/LogitProcessor.py not found (make upstream)"
        args.skip.append("upstream")
    trie = SidTrie(seqs, eos, args.vocab)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)

    def timed(fn):
        sync()
        t0 = time.perf_counter()
        res = fn()
        sync()
        return res, time.perf_counter() - t0

    results, seconds = {}, {}
    # warm-up (kernels, allocator) on two rows, not timed
    constrained_beam_search(model, _Tok(eos, pad), prompts[:2], trie, args.beams, args.batch)
    runs = {
        "project": lambda: constrained_beam_search(model, _Tok(eos, pad), prompts, trie, args.beams, args.batch),
        "upstream_style": lambda: run_generate(model, prompts, lambda plen: PrefixLookup(seqs, eos, plen),
                                               args.beams, args.batch, eos, pad, trie.max_len),
        "vectorised_hf": lambda: run_generate(model, prompts, lambda plen: SidConstraint(trie, plen), args.beams,
                                              args.batch, eos, pad, trie.max_len),
        "unconstrained": lambda: run_generate(model, prompts, None, args.beams, args.batch, eos, pad, trie.max_len),
    }
    if "upstream" not in args.skip:
        make = upstream_processor_factory(seqs, eos, marker, args.beams, args.upstream_dir)
        runs["upstream"] = lambda: run_generate(model, prompts, make, args.beams, args.batch, eos, pad, trie.max_len)
    for name, fn in runs.items():
        if name in args.skip:
            continue
        results[name], seconds[name] = timed(fn)
        print(f"{name:15s} {seconds[name]:8.2f} s", flush=True)
    # the project decoder batches by prompt length; compare row by row in input order
    checks = {name: same_ranking(results["upstream_style" if "upstream_style" in results else "vectorised_hf"],
                                 results[name])
              for name in ("vectorised_hf", "project") if name in results}
    identical = all(ok for ok, _ in checks.values())
    upstream = None
    if "upstream" in results:
        rec = git_record(args.upstream_dir.parent)
        upstream = {**upstream_agreement(results["project"], results["upstream"], {tuple(s) for s in seqs}),
                    "seconds": seconds["upstream"], "speedup_of_project": seconds["upstream"] / seconds["project"],
                    "upstream_commit": rec["upstream_checked_out"], "matches_pin": rec["upstream_matches_pin"]}
    doc = {
        "upstream_style_s": seconds.get("upstream_style"), "vectorised_hf_s": seconds.get("vectorised_hf"),
        "project_s": seconds["project"], "unconstrained_s": seconds.get("unconstrained"),
        "speedup_vs_upstream_style": (seconds["upstream_style"] / seconds["project"]
                                      if "upstream_style" in seconds else None),
        "speedup_vs_vectorised_hf": (seconds["vectorised_hf"] / seconds["project"]
                                     if "vectorised_hf" in seconds else None),
        "identical_outputs": identical, "mismatch": {k: why for k, (ok, why) in checks.items() if not ok},
        "device": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else cpu_model(),
        "model": args.model, "dtype": args.dtype,
        "model_parameters": sum(p.numel() for p in model.parameters()), "vocab_size": args.vocab,
        "rows": args.rows, "batch": args.batch, "beams": args.beams, "catalogue_size": len(seqs),
        "first_level_codes": args.first_codes, "prompt_tokens_mean": sum(map(len, prompts)) / len(prompts),
        "users_per_second_project": args.rows / seconds["project"], "torch": torch.__version__,
        "upstream": upstream or upstream_note,
    }
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps({k: doc[k] for k in ("speedup_vs_upstream_style", "identical_outputs", "upstream")}))
    if not identical:
        raise SystemExit(f"decoders disagree: {doc['mismatch']}")


if __name__ == "__main__":
    main()
