"""The registries are the one place each extension point is named: what they list is what the stages, the CLI,
the benchmarks, the docs and the report use."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness import metrics as registry
from harness.params import SidParams
from harness.sid.registry import SID_METHODS

REPO = Path(__file__).resolve().parents[1]


def _small_params() -> SidParams:
    trained = {"epochs": 3, "eval_every": 1, "layers": [16]}
    return SidParams(levels=3, codebook_size=8, kmeans_iters=5, seed=0, rqvae=trained, rqkmeans_plus=trained)


@pytest.mark.parametrize("name", list(SID_METHODS))
def test_every_registered_sid_method_builds_deterministic_codes(name, tmp_path):
    emb = np.random.default_rng(0).standard_normal((96, 24)).astype(np.float32)
    build = SID_METHODS[name].builder()
    a = build(emb, _small_params(), tmp_path / "a", False)
    b = build(emb, _small_params(), tmp_path / "b", False)
    assert a == b, f"{name}: two builds with the same seed differ"
    assert len(a) == len(emb) and all(3 <= len(c) <= 4 for c in a)
    assert all(0 <= x < 96 for c in a for x in c[:3])
    own = SID_METHODS[name].params
    assert own is None or own in SidParams.model_fields, f"{name}: params sub-section {own!r} is not in SidParams"


def test_params_accept_exactly_the_registered_methods():
    for name in SID_METHODS:
        assert SidParams(method=name, compare=[name]).method == name
    assert SidParams(method="shipped").method == "shipped"
    with pytest.raises(ValueError, match="registered in harness/sid/registry.py"):
        SidParams(method="pq")
    with pytest.raises(ValueError, match="registered in harness/sid/registry.py"):
        SidParams(compare=["shipped"])  # compare builds indexes: shipped is no builder


def test_cli_help_benchmark_and_docs_list_every_method():
    out = subprocess.run([sys.executable, "-m", "harness.cli", "build-sids", "--help"], capture_output=True,
                         text=True, cwd=REPO,
                         env={"COLUMNS": "200", "PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"}).stdout
    from benchmarks.sid_builders import METHODS

    docs = (REPO / "docs/sid-builders.md").read_text()
    for name in SID_METHODS:
        assert name in out, f"build-sids --help does not list {name}"
        assert name in METHODS
        assert f"| {name}" in docs, f"docs/sid-builders.md has no row for {name}"


def test_every_key_the_scorer_writes_is_registered_and_parses_back():
    from harness.evaluate.score import score_records

    block = score_records([{"output": "<a_1><b_2>\n", "predict": ["<a_1><b_2>", "<a_3><b_4>", "x"]}],
                          ["<a_1><b_2>", "<a_3><b_4>"])
    for key in block:
        metric, k = registry.parse(key)
        assert registry.key(metric.name, k) == key
    assert registry.cutoffs(block) == [1, 3]  # calc.py's cut-offs up to the 3 beams
    with pytest.raises(ValueError, match="not a registered metric key"):
        registry.parse("mrr@10")


def test_a_registered_table_metric_becomes_a_report_column(monkeypatch):
    """What docs/extending.md promises for a new metric: one registry line gives it a column."""
    from harness.report.model_tables import block_tables

    block = {"hr@1": 0.5, "ndcg@1": 0.5, "mrr@1": 0.25, "legality_rate": 1.0, "illegal_count": 0}
    monkeypatch.setitem(registry.METRICS, "mrr", registry.Metric("mrr", "MRR", True, "mean reciprocal rank", "NDCG"))
    tables = block_tables([("SFT", block)])
    assert tables["NDCG"][0] == ["model", "NDCG@1", "MRR@1"] and tables["NDCG"][1] == [["SFT", "0.5000", "0.2500"]]
    assert tables["Hit rate"][0] == ["model", "HR@1", "legality", "illegal"]
