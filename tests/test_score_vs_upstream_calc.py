"""`harness score` against the real upstream calc.py, whenever the submodule is checked out (`make upstream`)."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import random
import sys
import types

import numpy as np
import pytest

from harness.evaluate.score import read_info_sids, read_predictions, score_records
from tests.conftest import REPO

CALC = REPO / "upstream" / "calc.py"


def _upstream_calc():
    if not CALC.is_file():
        pytest.skip("upstream/calc.py not checked out (run `make upstream`, with UPSTREAM_URL=<mirror> off GitHub)")
    sys.modules.setdefault("fire", types.SimpleNamespace(Fire=lambda f: None))  # calc.py only needs fire.Fire
    spec = importlib.util.spec_from_file_location("upstream_calc", CALC)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_printed_hr_ndcg_and_cc_agree_to_the_last_digit(tmp_path):
    calc = _upstream_calc()
    rng = random.Random(0)
    sids = [f"<a_{i % 7}><b_{i}><c_{i % 3}>" for i in range(60)] + ["<a_0><b_0><c_0>"]  # one shared SID
    info = tmp_path / "Cat_5_2016-10-2018-11.txt"
    info.write_text("".join(f"{s}\tTitle {i}\t{i}\n" for i, s in enumerate(sids)))
    rows = []
    for _ in range(200):
        beams = rng.sample(sids, 20) + ["<zz_1>"] * rng.randrange(3)
        rng.shuffle(beams)
        beams = [f'"{b}"\n' if rng.random() < 0.2 else b for b in beams[:20]]
        rows.append({"input": "x", "output": rng.choice(sids) + "\n", "predict": beams})
    pred = tmp_path / "final_result_Cat.json"
    pred.write_text(json.dumps(rows, indent=4))

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        calc.gao(str(pred), str(info))
    printed = [line for line in buf.getvalue().split("\n") if line.startswith(("NDCG:", "HR\t"))]
    cc = int(buf.getvalue().strip().split("\n")[-1])

    m = score_records(read_predictions(pred), read_info_sids(info))
    ks = [k for k in (1, 3, 5, 10, 20, 50) if f"hr@{k}" in m]
    assert printed == [f"NDCG:\t{np.array([m[f'ndcg@{k}'] for k in ks])}", f"HR\t{np.array([m[f'hr@{k}'] for k in ks])}"]
    assert cc == m["illegal_count"]
    from harness.upstream.calc_output import disagreements, parse_calc_stdout

    assert disagreements(parse_calc_stdout(buf.getvalue()), m, ks) == []  # the parser reads the real output
