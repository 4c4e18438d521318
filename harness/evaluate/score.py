"""The upstream-compatible scorer: HR/NDCG exactly as upstream's calc.py prints them, plus what it hides.

calc.py semantics (docs/hazards.md §1.7), reproduced operation for operation so the printed digits agree:
info SIDs are the first tab field, stripped; each beam is stripped of '"' and newlines, then whitespace;
the target of ``"output"`` loses spaces, newlines and quotes (or is the first element of a list);
the rank is the first beam equal to the target; NDCG accumulates 1/ln(rank+2) and is rescaled by ln 2;
the cut-offs are 1, 3, 5, 10, 20, 50 up to the first row's beam count; CC counts beams outside the info
SIDs up to and including the hit (all beams of a miss).

Added here: collision-aware HR/NDCG (a hit on a SID shared by g catalogue items counts 1/g: the model
cannot tell those items apart), legality over all beams, and rows with repeated beams.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from harness.errors import DataFormatError
from harness.io import read_utf8
from harness.metrics import TOPK, key


def clean_beam(text: str) -> str:
    return text.strip('"\n').strip()


def clean_target(output) -> str:
    if isinstance(output, list):
        return str(output[0]).strip('"').strip(" ")
    return str(output).strip(' \n"')


class Scorer:
    """HR/NDCG@K as calc.py computes them, plus collision-aware and legality figures, accumulated one record
    at a time (results can stream from the decoder to disk without being held in memory)."""

    def __init__(self, info_sids: Sequence[str], ks: Sequence[int] | None = None):
        self.group = Counter(info_sids)
        self.ks = list(ks) if ks is not None else None
        self.beams = 0
        self.n = self.cc = self.legal = self.total = self.dup_rows = 0

    def add(self, rec: dict) -> None:
        preds = [clean_beam(p) for p in rec["predict"]]
        if self.n == 0:
            self.beams = len(rec["predict"])
            if self.ks is None:
                self.ks = [k for k in TOPK if k <= self.beams]
            self.hr, self.ndcg = [0.0] * len(self.ks), [0.0] * len(self.ks)
            self.ca_hr, self.ca_ndcg = [0.0] * len(self.ks), [0.0] * len(self.ks)
        self.n += 1
        target = clean_target(rec["output"])
        self.total += len(preds)
        self.legal += sum(1 for p in preds if p in self.group)
        self.dup_rows += len(set(preds)) < len(preds)
        rank = None
        for i, p in enumerate(preds):
            if p not in self.group:
                self.cc += 1
            if p == target:
                rank = i
                break
        if rank is None:
            return
        share = 1.0 / self.group.get(target, 1)
        for j, k in enumerate(self.ks):
            if rank < k:
                self.hr[j] += 1
                self.ndcg[j] += 1 / math.log(rank + 2)
                self.ca_hr[j] += share
                self.ca_ndcg[j] += share / math.log(rank + 2)

    def result(self) -> dict:
        if not self.n:
            raise ValueError("no rows to score")
        n, out = self.n, {}
        for j, k in enumerate(self.ks):
            out[key("hr", k)] = self.hr[j] / n
            out[key("ndcg", k)] = self.ndcg[j] / n / (1.0 / math.log(2))
        for j, k in enumerate(self.ks):
            out[key("collision_aware_hr", k)] = self.ca_hr[j] / n
            out[key("collision_aware_ndcg", k)] = self.ca_ndcg[j] / n / (1.0 / math.log(2))
        out.update({"illegal_count": self.cc, "legality_rate": self.legal / self.total if self.total else 1.0,
                    "duplicate_rows": self.dup_rows, "rows": n, "beams": self.beams})
        return out


def score_records(records: Iterable[dict], info_sids: Sequence[str], ks: Sequence[int] | None = None) -> dict:
    """Score upstream-format records against the info file's SID column (one entry per catalogue item)."""
    scorer = Scorer(info_sids, ks)
    for rec in records:
        scorer.add(rec)
    return scorer.result()


# ------------------------------------------------------------------ readers
def _iter_json_array(path: Path, text: str) -> Iterator[tuple[int, object]]:
    """Yield (1-based line, element) for each element of a top-level JSON array."""
    dec = json.JSONDecoder()
    i = len(text) - len(text.lstrip())
    if not text[i : i + 1] == "[":
        raise DataFormatError(path, text.count("\n", 0, i) + 1, "expected a JSON list of result rows")
    i += 1
    while True:
        while i < len(text) and text[i] in " \t\r\n,":
            i += 1
        if i >= len(text):
            raise DataFormatError(path, text.count("\n") + 1, "broken JSON: unterminated list")
        if text[i] == "]":
            return
        try:
            obj, end = dec.raw_decode(text, i)
        except json.JSONDecodeError as e:
            raise DataFormatError(path, e.lineno, f"broken JSON: {e.msg}") from None
        yield text.count("\n", 0, i) + 1, obj
        i = end


def read_predictions(path: str | Path) -> list[dict]:
    path = Path(path)
    text = read_utf8(path)
    rows = []
    for line, obj in _iter_json_array(path, text):
        if not isinstance(obj, dict) or not {"output", "predict"} <= obj.keys():
            raise DataFormatError(path, line, "each row must be an object with 'output' and 'predict'")
        pred, out = obj["predict"], obj["output"]
        if not isinstance(pred, list) or not pred or not all(isinstance(p, str) for p in pred):
            raise DataFormatError(path, line, "'predict' must be a non-empty list of strings")
        if not (isinstance(out, str) or (isinstance(out, list) and out and isinstance(out[0], str))):
            raise DataFormatError(path, line, "'output' must be a string (or a list of strings)")
        rows.append(obj)
    if not rows:
        raise DataFormatError(path, 1, "no result rows")
    return rows


def read_info_sids(path: str | Path) -> list[str]:
    """The SID column of an upstream info file (one entry per line, so shared SIDs repeat)."""
    path = Path(path)
    lines = read_utf8(path).split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise DataFormatError(path, 1, "empty file")
    sids = []
    for n, line in enumerate(lines, 1):
        fields = line.split("\t")
        if len(fields) < 2 or not fields[0].strip():
            raise DataFormatError(path, n, "expected SID<TAB>title<TAB>item_id")
        sids.append(fields[0].strip())
    return sids
