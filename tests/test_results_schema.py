"""harness/results.py is the contract of the result files: the committed outputs of the default run satisfy it,
and it refuses what a writer might add without documenting it (the pipeline's fresh outputs are validated
in tests/test_pipeline_e2e.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from harness.results import FINDINGS, METRICS_JSON, SCHEMAS

REPO = Path(__file__).resolve().parents[1]


def test_committed_metrics_and_findings_follow_the_contract():
    metrics = json.loads((REPO / "reports/metrics.json").read_text())
    SCHEMAS[METRICS_JSON].validate_python(metrics)
    SCHEMAS[FINDINGS].validate_python(json.loads((REPO / "reports/audit/findings.json").read_text()))
    from harness.evaluate.baselines import BASELINES

    assert set(metrics["baselines"]) == set(BASELINES)  # one block per registered baseline


def test_an_undocumented_key_or_metric_is_refused():
    metrics = json.loads((REPO / "reports/metrics.json").read_text())
    with pytest.raises(ValidationError, match="new_field"):
        SCHEMAS[METRICS_JSON].validate_python({**metrics, "new_field": 1})
    with pytest.raises(ValidationError, match="mrr@10"):
        SCHEMAS[METRICS_JSON].validate_python({**metrics, "sft": {**metrics["sft"], "mrr@10": 0.1}})
    with pytest.raises(ValidationError, match="generation"):
        bad = {**metrics["protocol"], "generation": {**metrics["protocol"]["generation"], "typical_p": 0.9}}
        SCHEMAS[METRICS_JSON].validate_python({**metrics, "protocol": bad})
