"""Upstream calc.py prints its metrics and writes no file (docs/hazards.md §1.7). This module parses what it printed
and checks it against ``harness score`` on the same result JSON, so a wrapped upstream evaluation reports
numbers computed once, by our scorer, and proven equal to what calc.py would have shown.

calc.py's stdout: the beam count, the cut-off list, ``NDCG:<TAB>[...]`` and ``HR<TAB>[...]`` (numpy array
prints, which may wrap over several lines), with every illegal beam printed along the way, then the CC
count as the last line.
"""

from __future__ import annotations

import re
from pathlib import Path

from harness.errors import DataFormatError
from harness.metrics import cutoffs
from harness.metrics import key as metric_key

NUMPY_PRECISION = 8  # numpy's default print precision, which calc.py's array prints use
_NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")


def parse_calc_stdout(text: str, source: str | Path = "<calc.py stdout>") -> dict:
    """``{"ndcg": [str...], "hr": [str...], "cc": int}``; numbers stay as printed, so precision is known."""
    lines = text.splitlines()
    out: dict = {}
    for key, label in (("ndcg", "NDCG:"), ("hr", "HR\t")):
        start = next((i for i, line in enumerate(lines) if line.startswith(label)), None)
        if start is None:
            raise DataFormatError(source, len(lines) or 1, f"no line starting with {label.strip()!r}")
        block = lines[start][len(label):]
        if "[" not in block:
            raise DataFormatError(source, start + 1, f"{label.strip()} is not a bracketed array")
        end = start
        while "]" not in block and end + 1 < len(lines):  # numpy wraps long arrays
            end += 1
            block += " " + lines[end]
        if "]" not in block:
            raise DataFormatError(source, start + 1, f"{label.strip()} is not a bracketed array")
        out[key] = _NUMBER.findall(block[block.index("[") + 1:block.index("]")])
    tail = [line.strip() for line in lines if line.strip()]
    if not tail or not re.fullmatch(r"\d+", tail[-1]):
        raise DataFormatError(source, len(lines) or 1, "the last line is not the CC count (an integer)")
    out["cc"] = int(tail[-1])
    if len(out["ndcg"]) != len(out["hr"]) or not out["hr"]:
        raise DataFormatError(source, 1, f"{len(out['ndcg'])} NDCG values but {len(out['hr'])} HR values")
    return out


def disagreements(printed: dict, metrics: dict, ks: list[int] | None = None) -> list[str]:
    """Where calc.py's printed figures differ from ``harness score``'s beyond the printed precision."""
    ks = ks or cutoffs(metrics)
    problems: list[str] = []
    if len(printed["hr"]) != len(ks):
        return [f"calc.py printed {len(printed['hr'])} cut-offs, harness score has {len(ks)} ({ks})"]
    for name in ("hr", "ndcg"):
        for k, shown in zip(ks, printed[name]):
            ours = metrics[metric_key(name, k)]
            if abs(float(shown) - ours) > _half_last_digit(shown) + 1e-12:
                problems.append(f"{name}@{k}: calc.py {shown}, harness score {ours!r}")
    if printed["cc"] != metrics["illegal_count"]:
        problems.append(f"CC: calc.py {printed['cc']}, harness score {metrics['illegal_count']}")
    return problems


def _half_last_digit(shown: str) -> float:
    """How far a printed number can be from the value: numpy's default print (precision 8, 'maxprec') rounds
    to 8 decimals and drops trailing zeros, so "0." is exactly 0 and "0.5" is 0.5 to 8 decimals."""
    _, _, exponent = shown.lower().partition("e")
    return 0.5 * 10 ** (int(exponent or 0) - NUMPY_PRECISION)
