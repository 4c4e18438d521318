"""The upstream-compatible scorer against hand-computed cases (calc.py semantics, docs/hazards.md §1.7)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from harness import metrics as registry
from harness.data.schema import Interaction
from harness.evaluate.baselines import most_popular, repeat_last
from harness.evaluate.score import read_predictions, score_records

INFO = ["<a_1>", "<a_2>", "<a_3>", "<a_4>", "<a_5>", "<a_5>"]  # <a_5> is shared by two items


def rec(target: str, *beams: str) -> dict:
    return {"input": "x", "output": target + "\n", "predict": list(beams)}


def calc_ndcg(ranks, k, n):
    """NDCG as calc.py accumulates it: sum of 1/ln(r+2), then / n / (1/ln 2)."""
    acc = 0.0
    for r in ranks:
        if r is not None and r < k:
            acc += 1 / math.log(r + 2)
    return acc / n / (1.0 / math.log(2))


def test_three_rows_hand_computed():
    rows = [rec("<a_1>", "<a_1>", "<a_2>", "<a_3>"),   # hit at rank 0
            rec("<a_1>", "<a_2>", "<a_3>", "<a_1>"),   # hit at rank 2
            rec("<a_4>", "<a_2>", "<zz>", "<a_3>")]    # miss, one illegal beam
    m = score_records(rows, INFO)
    assert [k for k in m if k.startswith("hr@")] == ["hr@1", "hr@3"]  # cut-offs up to the beam count (3)
    assert m["hr@1"] == 1 / 3 and m["hr@3"] == 2 / 3
    assert m["ndcg@3"] == calc_ndcg([0, 2, None], 3, 3)
    assert m["ndcg@3"] == pytest.approx((1 + 0.5) / 3, abs=1e-15)
    assert m["illegal_count"] == 1 and m["legality_rate"] == pytest.approx(8 / 9)
    assert m["rows"] == 3 and m["beams"] == 3 and m["duplicate_rows"] == 0


def test_cc_counts_beams_before_and_at_the_hit_and_all_beams_of_a_miss():
    rows = [rec("<a_1>", "<x>", "<a_1>", "<y>", "<z>"),  # 1 illegal before the hit; after it nothing counts
            rec("<a_2>", "<x>", "<y>", "<a_3>", "<z>")]  # miss: 3 illegal
    m = score_records(rows, INFO)
    assert m["illegal_count"] == 4
    assert m["legality_rate"] == pytest.approx(2 / 8)  # legality looks at every beam


def test_strings_are_cleaned_like_calc_py():
    rows = [{"input": "", "output": ' "<a_2>"\n', "predict": ['"<a_1>"', '  <a_2>\n']},
            {"input": "", "output": ["<a_3>", "ignored"], "predict": ["<a_3>\n", "<a_1>"]}]
    m = score_records(rows, INFO)
    assert m["hr@1"] == 0.5 and m["illegal_count"] == 0


def test_collision_aware_metrics_split_a_shared_sid():
    rows = [rec("<a_5>", "<a_5>", "<a_1>"), rec("<a_1>", "<a_2>", "<a_1>")]
    m = score_records(rows, INFO)
    assert m["hr@1"] == 0.5 and m["collision_aware_hr@1"] == 0.25
    assert m["collision_aware_ndcg@1"] == pytest.approx(0.25)
    assert m["ndcg@1"] == pytest.approx(0.5)


def test_duplicate_beams_and_fixed_cutoffs():
    rows = [rec("<a_1>", "<a_2>", "<a_2>"), rec("<a_1>", "<a_1>", "<a_3>")]
    m = score_records(rows, INFO, ks=[1, 3, 5])
    assert m["duplicate_rows"] == 1
    assert m["hr@5"] == m["hr@3"] == m["hr@1"] == 0.5


def test_rank_equal_to_k_is_a_miss():
    m = score_records([rec("<a_4>", "<a_1>", "<a_2>", "<a_3>", "<a_4>")], INFO, ks=[3, 5])
    assert m["hr@3"] == 0.0 and m["ndcg@3"] == 0.0 and m["hr@5"] == 1.0


def test_empty_input_is_refused():
    with pytest.raises(ValueError):
        score_records([], INFO)


def test_score_command(tmp_path):
    preds = tmp_path / "final_result_Toy.json"
    preds.write_text(json.dumps([rec("<a_1>", "<a_2>", "<a_1>"), rec("<a_5>", "<a_5>", "<q>")], indent=4))
    info = tmp_path / "Toy.txt"
    info.write_text("".join(f"{s}\tTitle {i}\t{i}\n" for i, s in enumerate(INFO)))
    out = tmp_path / "m.json"
    r = subprocess.run([sys.executable, "-m", "harness.cli", "score", "--predictions", str(preds), "--info", str(info),
                        "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    m = json.loads(out.read_text())
    assert m["hr@1"] == 0.5
    assert list(k for k in m if k.startswith("hr@")) == ["hr@1"]  # two beams: only @1
    assert m["collision_aware_hr@1"] == 0.25 and m["illegal_count"] == 0 and m["beams"] == 2


def test_score_command_refuses_a_broken_file_with_its_line(tmp_path):
    preds = tmp_path / "p.json"
    rows = [rec("<a_1>", "<a_1>"), {"input": "", "output": "<a_1>\n"}]  # second row lacks predict
    preds.write_text(json.dumps(rows, indent=4))
    info = tmp_path / "i.txt"
    info.write_text("<a_1>\tT\t0\n")
    out = tmp_path / "m.json"
    r = subprocess.run([sys.executable, "-m", "harness.cli", "score", "--predictions", str(preds), "--info", str(info),
                        "--out", str(out)], capture_output=True, text=True)
    line = next(i for i, t in enumerate(preds.read_text().split("\n"), 1) if t.strip() == "{" and i > 2)
    assert r.returncode == 2 and f"{preds}:{line}:" in r.stderr.replace("\n", "")
    assert not out.exists()
    with pytest.raises(Exception):
        read_predictions(tmp_path / "missing.json")


def test_baselines():
    index = {0: ["<a_0>", "<b_0>"], 1: ["<a_1>", "<b_0>"], 2: ["<a_0>", "<b_0>"], 3: ["<a_2>", "<b_1>"]}
    train = [Interaction("u", (0,), t, "train") for t in (1, 1, 3, 2, 0, 3, 1)]
    # counts: 1->3, 3->2, 0->1, 2->1 ; items 0 and 2 share a SID, which appears once
    assert most_popular(train, index, 10) == ["<a_1><b_0>", "<a_2><b_1>", "<a_0><b_0>"]
    assert most_popular(train, index, 2) == ["<a_1><b_0>", "<a_2><b_1>"]
    assert repeat_last(Interaction("u", (3, 1), 0, "test"), index) == ["<a_1><b_0>"]


def test_metrics_stage_refuses_scores_from_another_protocol(tiny_workdir):
    """reports/metrics.json puts models side by side only when they were scored on the same rows and beams."""
    from harness.errors import HarnessError
    from harness.evaluate.metrics_stage import run_metrics
    from harness.evaluate.protocol import TestProtocol
    from harness.params import EvaluateParams

    d = tiny_workdir
    p = EvaluateParams(num_beams=10)
    t = TestProtocol(p, d / "data/dataset", d / "data/sid")
    (d / "eval/sft").mkdir(parents=True)
    (d / "eval/rl").mkdir()
    sft = {"model": "sft", "scored": True, "metrics": {"hr@10": 0.5}, "protocol": {**t.protocol, "num_beams": 20}}
    (d / "eval/sft/scores.json").write_text(json.dumps(sft))
    (d / "eval/rl/scores.json").write_text(json.dumps({"model": "rl", "scored": False, "metrics": None,
                                                         "protocol": t.protocol}))
    out = d / "metrics.json"
    with pytest.raises(HarnessError, match=r"another protocol.*num_beams: 20 vs 10"):
        run_metrics(p, d / "data/dataset", d / "data/sid", d / "eval", out)
    (d / "eval/sft/scores.json").write_text("{")
    with pytest.raises(HarnessError, match=r"eval/sft/scores.json: not an evaluate scores file"):
        run_metrics(p, d / "data/dataset", d / "data/sid", d / "eval", out)
    sft["protocol"] = t.protocol
    (d / "eval/sft/scores.json").write_text(json.dumps(sft))
    with pytest.raises(HarnessError, match=r"eval/sft/predictions.json:1: file not found"):
        run_metrics(p, d / "data/dataset", d / "data/sid", d / "eval", out)  # a scored model has its beams
    (d / "eval/sft/predictions.json").write_text(json.dumps(t.records([[s] for s in t.targets])))
    m = run_metrics(p, d / "data/dataset", d / "data/sid", d / "eval", out)
    assert m["sft"] == {"hr@10": 0.5} and m["rl"] is None and "most_popular" in m["baselines"]
    assert set(m["beyond_accuracy"]) == {"sft", *m["baselines"]}  # the RL model was not scored
    assert m["popularity"]["curves"]["sft"] == m["popularity"]["curves"]["targets"]  # it recommends the targets
    assert json.loads(out.read_text())["protocol"]["rows"] == t.protocol["rows"]


@pytest.mark.parametrize("indent", [None, 2, 4])
@pytest.mark.parametrize("rows", [0, 1, 3])
def test_streamed_json_list_is_byte_identical_to_the_whole_list_dumped(tmp_path, indent, rows):
    """predictions.json is written row by row; the file must be the one json.dumps of the whole list gives."""
    import io

    from harness.io import JsonListWriter, dumps_json

    records = [{"input": f"history {i}\nwith «text»", "output": "<a_1><b_2>\n", "predict": ["<a_1>", "x"] * i}
               for i in range(rows)]
    buf = io.StringIO()
    w = JsonListWriter(buf, indent=indent)
    for r in records:
        w.add(r)
    w.close()
    assert buf.getvalue() == dumps_json(records, indent=indent)


def test_beyond_accuracy_figures_by_hand():
    """Coverage, Gini, entropy, popularity, long tail and novelty on a four-SID catalogue worked out on paper:
    a repeated beam counts once per row, a beam outside the catalogue not at all."""
    import math

    from harness.evaluate.beyond import Popularity, beyond_accuracy, gini, popularity_curve

    pop = Popularity(["A"] * 6 + ["B"] * 3 + ["C"], ["A", "B", "C", "D"])
    assert pop.head == {"A"} and pop.total == 10  # A alone holds >= 20% of the train targets
    b = beyond_accuracy(pop, [["A", "B"], ["A", "A", "C"], ["X", "B"]], ["B", "C", "Z"], [2])
    assert b["coverage@2"] == 0.5 and b["gini@2"] == 0.5 and b["entropy@2"] == 1.0
    assert b["avg_popularity@2"] == 4.5 and b["long_tail_share@2"] == 0.5
    assert math.isclose(b["novelty@2"], (1.0 * 2 + -math.log2(4 / 14) * 2) / 4)
    assert b["target_popularity"] == 2.0 and b["target_long_tail_share"] == 1.0
    assert popularity_curve(pop, [["A", "B"], ["A", "A", "C"], ["X", "B"]], 2) == [0, 0, 0, 0, 0, .5, 0, .5, 0, 0]
    assert gini([5, 5, 5]) == 0.0 and math.isclose(gini([0, 0, 0, 9]), 0.75)


def test_every_beyond_accuracy_and_exact_key_is_registered():
    from harness.evaluate.beyond import Popularity, beyond_accuracy

    pop = Popularity(["A", "B"], ["A", "B", "C"])
    for k in beyond_accuracy(pop, [["A"], ["C"]], ["A", "B"], [1]):
        registry.parse(k)
    for k in ("mrr", "beam_recall@10", "hr@1000"):
        registry.parse(k)
