"""The report's paper comparison, paired significance test, experiments/seed aggregation, and the targets file."""

from __future__ import annotations

import pytest
import yaml

from harness.errors import ParamsError
from harness.report.experiments import experiment_rows, parse_exp_show, seed_groups
from harness.report.paper import load_targets, paper_comparison
from harness.report.significance import paired_test, ranks
from tests.conftest import REPO


def test_targets_file_holds_the_papers_main_table_and_marks_reproductions():
    t = load_targets(REPO / "paper_targets.yaml")
    ind, off = t.paper.categories["Industrial_and_Scientific"], t.paper.categories["Office_Products"]
    assert len(ind) == len(off) == 10
    assert ind["MiniOneRec"] == {"hr@3": 0.1143, "ndcg@3": 0.1011, "hr@5": 0.1321, "ndcg@5": 0.1084,
                                 "hr@10": 0.1586, "ndcg@10": 0.1167}
    assert off["S-DPO"]["ndcg@10"] == 0.1255 and t.stages.variants["MiniOneRec"] == {"sft": 0.134, "rl": 0.155}
    assert {r.source for r in t.reproductions} >= {"upstream issue #35", "upstream issue #71"}


def test_a_broken_targets_file_names_the_key(tmp_path):
    doc = yaml.safe_load((REPO / "paper_targets.yaml").read_text())
    del doc["paper"]["categories"]["Office_Products"]["TIGER"]["hr@5"]
    bad = tmp_path / "t.yaml"
    bad.write_text(yaml.safe_dump(doc))
    with pytest.raises(ParamsError, match=r"t.yaml: key 'paper.categories.Office_Products.TIGER': missing hr@5"):
        load_targets(bad)
    doc = yaml.safe_load((REPO / "paper_targets.yaml").read_text())
    doc["paper"]["protocl"] = {}
    bad.write_text(yaml.safe_dump(doc))
    with pytest.raises(ParamsError, match="key 'paper.protocl'"):
        load_targets(bad)


def _metrics(hr10: float, rl: bool = True) -> dict:
    block = {"hr@3": 0.09, "ndcg@3": 0.08, "hr@5": 0.11, "ndcg@5": 0.09, "hr@10": hr10, "ndcg@10": 0.1}
    return {"sft": block, "rl": block if rl else None, "protocol": {"num_beams": 50}}


def test_industrial_run_is_set_beside_the_paper_with_delta_tolerance_and_protocol_notes():
    t = load_targets(REPO / "paper_targets.yaml")
    cmp = paper_comparison(t, "Industrial_and_Scientific", _metrics(0.1500), {"valid_as_train": True},
                           {"base_model": "scratch", "mode": "full"}, tolerance=0.01)
    row = next(r for r in cmp["rows"] if r["metric"] == "hr@10")
    assert row["paper"] == 0.1586 and row["delta"] == pytest.approx(-0.0086)
    assert row["delta_pct"] == pytest.approx(-5.42, abs=0.01) and row["within"] is True
    assert not cmp["within_all"]  # ndcg@10 0.1 vs 0.1167 is 0.0167 off
    assert any("valid split" in d for d in cmp["differences"]) and any("scratch" in d for d in cmp["differences"])
    assert [r["source"] for r in cmp["reproductions"]][0] == "upstream issue #35"
    sft_only = paper_comparison(t, "Office_Products", _metrics(0.2, rl=False), {}, {"base_model":
                                "Qwen2.5-1.5B-Instruct"}, 0.01)
    assert sft_only["model"] == "sft" and sft_only["differences"] == ["SFT only: the paper's row is SFT followed by RL"]
    none = paper_comparison(t, "synthetic", _metrics(0.3), {}, {}, 0.01)
    assert not none["available"] and "no figures for 'synthetic'" in none["reason"]


def test_paired_test_counts_discordant_rows_exactly():
    a = [0] * 10 + [None] * 10
    b = [0] * 10 + [1] * 5 + [None] * 5  # 5 rows only B hits, none only A
    r = paired_test(a, b, k=10, n_boot=500, seed=0)
    assert (r["only_a"], r["only_b"], r["hits_a"], r["hits_b"]) == (0, 5, 10, 15)
    assert r["sign_test_p"] == pytest.approx(2 * 0.5 ** 5)
    assert r["ndcg_diff"] == pytest.approx(5 * (1 / 1.584962500721156) / 20)
    assert r["ndcg_diff_ci95"][0] > 0 and r["bootstrap_p"] < 0.05
    same = paired_test(a, a, k=10, n_boot=100)
    assert same["sign_test_p"] == 1.0 and same["ndcg_diff"] == 0.0
    assert paired_test(a, b, 10, 500, 0) == r  # seeded: the report is reproducible
    recs = [{"output": "<a_1><b_1>\n", "predict": ["<a_2><b_2>", '"<a_1><b_1>"\n']}, {"output": "x", "predict": []}]
    assert ranks(recs) == [1, None]


SHOW = [
    {"rev": "workspace", "name": None, "data": {
        "params": {"params.yaml": {"data": {"sft": {"seed": 0, "lr": 1}, "rl": {"seed": 0}}}},
        "metrics": {"reports/metrics.json": {"data": {"sft": {"hr@10": 0.30, "ndcg@10": 0.2}, "rl": None}}}}},
    {"rev": "abc123", "name": "main", "data": {}, "experiments": [
        {"name": "seed1", "revs": [{"rev": "e1", "name": "seed1", "data": {
            "params": {"params.yaml": {"data": {"sft": {"seed": 1, "lr": 1}, "rl": {"seed": 1}}}},
            "metrics": {"reports/metrics.json": {"data": {"sft": {"hr@10": 0.34, "ndcg@10": 0.22}}}}}}]},
        {"name": "lr2", "revs": [{"rev": "e2", "name": "lr2", "data": {
            "params": {"params.yaml": {"data": {"sft": {"seed": 0, "lr": 2}, "rl": {"seed": 0}}}},
            "metrics": {"reports/metrics.json": {"data": {"sft": {"hr@10": 0.1, "ndcg@10": 0.05}}}}}}]},
    ]},
]


def test_experiments_table_and_mean_std_over_runs_that_differ_only_in_seeds():
    runs = parse_exp_show(SHOW)
    assert [r["name"] for r in runs] == ["workspace", "seed1", "lr2"]
    header, rows = experiment_rows(runs)
    assert rows[1][1] == "rl.seed=1, sft.seed=1" and rows[2][1] == "sft.lr=2" and rows[2][2] == "0.1000"
    groups = seed_groups(runs)
    assert len(groups) == 1 and groups[0]["runs"] == ["workspace", "seed1"] and groups[0]["includes_workspace"]
    s = groups[0]["stats"]["sft hr@10"]
    assert s["mean"] == pytest.approx(0.32) and s["std"] == pytest.approx(0.0282843, abs=1e-6) and s["n"] == 2
    assert "rl hr@10" not in groups[0]["stats"]  # no RL numbers: nothing to average
