"""Parsing what upstream calc.py prints, and checking it against `harness score` on the same result JSON.

The fixtures print our own scores the way calc.py prints (numpy arrays after NDCG:/HR, illegal beams along
the way, CC last), so the parser and the agreement check are tested without the upstream checkout;
tests/test_score_vs_upstream_calc.py runs the real calc.py when it is there."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harness.errors import DataFormatError
from harness.evaluate.score import score_records
from harness.upstream.calc_output import disagreements, parse_calc_stdout

INFO = ["<a_1><b_1><c_1>", "<a_1><b_2><c_1>", "<a_2><b_1><c_3>", "<a_3><b_3><c_3>"]
ROWS = [
    {"input": "x", "output": "<a_1><b_2><c_1>\n", "predict": ["<a_1><b_1><c_1>", "<a_1><b_2><c_1>", "<a_9><b_9><c_9>"]},
    {"input": "x", "output": "<a_3><b_3><c_3>\n", "predict": ["<a_9><b_9><c_9>", "<a_2><b_1><c_3>", "<a_1><b_1><c_1>"]},
    {"input": "x", "output": "<a_2><b_1><c_3>\n", "predict": ["<a_2><b_1><c_3>", "<a_1><b_1><c_1>", "<a_3><b_3><c_3>"]},
]


def _printed(m: dict, ks: list[int], wrap: bool = False) -> str:
    ndcg, hr = np.array([m[f"ndcg@{k}"] for k in ks]), np.array([m[f"hr@{k}"] for k in ks])
    ndcg_text = str(ndcg).replace(" ", "\n ", 1) if wrap else str(ndcg)  # numpy wraps long arrays like this
    return "\n".join([str(3), str(ks), "<a_9><b_9><c_9>", "<a_9><b_9><c_9>", f"NDCG:\t{ndcg_text}", f"HR\t{hr}",
                      str(m["illegal_count"])]) + "\n"


@pytest.fixture()
def scored():
    return score_records(ROWS, INFO), [1, 3]


@pytest.mark.parametrize("wrap", [False, True])
def test_calc_stdout_parses_and_agrees_with_harness_score(scored, wrap):
    m, ks = scored
    printed = parse_calc_stdout(_printed(m, ks, wrap))
    assert printed["cc"] == m["illegal_count"] == 1 and len(printed["hr"]) == 2
    assert disagreements(printed, m, ks) == []


def test_a_different_printed_figure_is_reported(scored):
    m, ks = scored
    other = {**m, "hr@3": m["hr@3"] - 0.01, "illegal_count": 5}
    problems = disagreements(parse_calc_stdout(_printed(other, ks)), m, ks)
    assert any(p.startswith("hr@3: calc.py") for p in problems) and any(p.startswith("CC: calc.py 5") for p in problems)


def test_printed_rounding_is_not_a_disagreement(scored):
    m, ks = scored
    hr = str(np.array([m["hr@1"], m["hr@3"]]))
    assert hr == "[0.33333333 0.66666667]"  # numpy's 8-decimal print, as calc.py shows it
    assert disagreements(parse_calc_stdout(_printed(m, ks)), m, ks) == []
    text = _printed(m, ks).replace(hr, "[0.33333333 0.66666668]")
    assert disagreements(parse_calc_stdout(text), m, ks) == ["hr@3: calc.py 0.66666668, harness score 0.6666666666666666"]


@pytest.mark.parametrize("text, line, message", [
    ("3\n[1, 3]\nHR\t[0.1 0.2]\n2\n", 4, "no line starting with 'NDCG:'"),
    ("NDCG:\t0.1 0.2\nHR\t[0.1 0.2]\n2\n", 1, "not a bracketed array"),
    ("NDCG:\t[0.1 0.2]\nHR\t[0.1 0.2]\n", 2, "not the CC count"),
    ("NDCG:\t[0.1]\nHR\t[0.1 0.2]\n2\n", 1, "1 NDCG values but 2 HR values"),
])
def test_malformed_calc_stdout_names_the_line(text, line, message):
    with pytest.raises(DataFormatError) as e:
        parse_calc_stdout(text, "calc.out")
    assert e.value.line == line and message in str(e.value) and "calc.out" in str(e.value)


def test_score_command_checks_calc_stdout_and_writes_nothing_on_disagreement(scored, tmp_path):
    import json
    import subprocess
    import sys

    m, ks = scored
    pred = tmp_path / "final_result_Cat.json"
    pred.write_text(json.dumps(ROWS, indent=4))
    info = tmp_path / "Cat_5_2016-10-2018-11.txt"
    info.write_text("".join(f"{s}\tTitle {i}\t{i}\n" for i, s in enumerate(INFO)))
    good, bad = tmp_path / "calc.out", tmp_path / "calc-bad.out"
    good.write_text(_printed(m, ks))
    bad.write_text(_printed({**m, "ndcg@1": 0.0}, ks))

    def score(calc: Path, out: Path):
        return subprocess.run([sys.executable, "-m", "harness.cli", "score", "--predictions", str(pred), "--info",
                               str(info), "--out", str(out), "--calc-stdout", str(calc)],
                              capture_output=True, text=True, timeout=120)

    r = score(good, tmp_path / "m.json")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "m.json").read_text())["calc_py_agrees"] is True
    r = score(bad, tmp_path / "m2.json")
    assert r.returncode == 2 and "ndcg@1: calc.py 0." in r.stderr and str(bad) in r.stderr
    assert not (tmp_path / "m2.json").exists()
