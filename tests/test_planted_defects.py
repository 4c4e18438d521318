"""Each defect class the generator can plant is flagged by the audit; the clean default is not."""

from __future__ import annotations

import pytest

from harness.audit.data import audit_data
from harness.audit.findings import findings_from
from harness.audit.sid import audit_sid
from harness.data.synthetic import generate
from harness.params import PlantParams, SyntheticParams

SPLIT = (0.8, 0.1, 0.1)


def run(**plant):
    ds = generate(SyntheticParams(plant=PlantParams(**plant)), 10, SPLIT)
    data, data_records = audit_data(ds, ds.sid_index)
    sid, sid_records = audit_sid(ds, ds.sid_index)
    return ds, data, sid, {f["id"]: f for f in findings_from(data_records + sid_records)}


@pytest.fixture(scope="module")
def clean():
    return run()


def test_clean_default_has_no_leakage_collision_or_codebook_findings(clean):
    ds, data, sid, findings = clean
    assert data["cross_split"]["identical_rows_across_splits"] == 0
    assert data["cross_split"]["temporal_order"] is True
    assert all(s["temporal_violation_rows"] == 0 for s in data["splits"].values())
    assert sid["colliding_items"] == 0 and sid["unique_sids"] == len(ds.items)
    # history -> target conflicts occur naturally (one-item histories), so only they may warn
    assert [k for k, f in findings.items() if f["severity"] in ("error", "warning") and "conflict" not in k] == []
    assert "colliding_items" not in findings and not any(k.startswith("codes_used") for k in findings)


def test_future_leakage_is_flagged(clean):
    _, data, _, findings = run(future_leakage=0.2)
    violations = data["splits"]["test"]["temporal_violation_rows"]
    assert violations > 0.1 * data["splits"]["test"]["rows"]
    assert data["cross_split"]["temporal_order"] is False
    assert findings["test.temporal_violation_rows"]["severity"] == "error"


def test_identical_rows_across_splits_are_flagged(clean):
    _, data, _, findings = run(cross_split_duplicates=0.1)
    assert data["splits"]["test"]["duplicate_of_earlier_split_rows"] > 0.05 * data["splits"]["test"]["rows"]
    assert findings["test.duplicate_of_earlier_split_rows"]["severity"] == "error"


def test_sid_collisions_are_flagged(clean):
    _, _, sid, findings = run(sid_collisions=12)
    assert sid["collision_groups"] == 12 and sid["colliding_items"] == 24 and sid["excess_items"] == 12
    assert findings["colliding_items"]["figure"] == 24
    assert sid["test_targets_with_colliding_sid"] > 0


def test_underused_codebook_level_is_flagged(clean):
    _, _, sid, findings = run(underused_level=True)
    assert sid["codebook_size_per_level"][0] == 256 and sid["codes_used_per_level"][0] == 8
    assert findings["codes_used_level_0"]["figure"] == 8
    assert sid["colliding_items"] == 0  # only the spread changed


def test_history_target_conflicts_are_flagged(clean):
    _, base, _, _ = clean
    _, data, _, findings = run(history_conflicts=0.1)
    planted = data["splits"]["train"]["rows"] - base["splits"]["train"]["rows"]
    assert planted > 0
    assert data["splits"]["train"]["history_target_conflicts"]["keys"] >= (
        base["splits"]["train"]["history_target_conflicts"]["keys"] + planted // 2)
    assert findings["train.history_target_conflict_rows"]["figure"] > base["splits"]["train"]["history_target_conflicts"]["rows"]


def test_target_in_history_inflation_is_flagged(clean):
    _, base, _, _ = clean
    _, data, _, findings = run(target_in_history=0.3)
    for split in ("train", "valid", "test"):
        assert data["splits"][split]["target_in_history_rows"] > base["splits"][split]["target_in_history_rows"] + (
            0.2 * data["splits"][split]["rows"])
    assert findings["test.target_in_history_rows"]["figure"] == data["splits"]["test"]["target_in_history_rows"]
