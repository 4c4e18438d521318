"""`harness audit`: the figures of docs/hazards.md (H4, H9, H12-H14) recomputed on the real Industrial files, and the command's contract."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import CATEGORY


def audit(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", "audit", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def industrial(shared_amazon, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("audit") / "out"
    r = audit("--upstream-data", str(shared_amazon), "--category", CATEGORY, "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "## Findings" in r.stdout
    return {name: json.loads((out / f"{name}.json").read_text()) for name in ("data", "sid", "findings")}


def test_sid_figures_match_hazards_h9_h4(industrial):
    sid = industrial["sid"]
    assert (sid["items"], sid["unique_sids"], sid["collision_groups"], sid["colliding_items"],
            sid["largest_group"]) == (3686, 3670, 15, 31, 3)
    assert sid["collision_group_sizes"] == {"2": 14, "3": 1}
    assert sid["codes_used_per_level"] == [48, 256, 256]
    assert sid["codebook_size_per_level"] == [256, 256, 256]
    assert sid["test_targets_with_colliding_sid"] == 317  # H4: 7.0% of 4,533
    assert (sid["duplicate_title_groups"], sid["duplicate_title_items"]) == (15, 55)
    assert sid["items_without_sid"] == 0 and sid["sid_length_distribution"] == {"3": 3686}
    assert sid["perplexity_per_level"][0] < 48 < sid["perplexity_per_level"][1]


def test_data_figures_match_hazards_h12_h13_h14(industrial):
    valid, test = industrial["data"]["splits"]["valid"], industrial["data"]["splits"]["test"]
    assert (valid["rows"], test["rows"]) == (4532, 4533)
    # H12
    assert (valid["target_in_history_rows"], valid["target_is_last_history_rows"],
            valid["target_sid_in_history_rows"], valid["repeated_item_in_history_rows"]) == (236, 205, 307, 814)
    assert (test["target_in_history_rows"], test["target_is_last_history_rows"],
            test["target_sid_in_history_rows"], test["repeated_item_in_history_rows"]) == (128, 122, 215, 747)
    # H13 (relative to valid, the only earlier split shipped)
    assert (test["users"], test["users_first_seen"]) == (1987, 1274)
    assert (test["cold_start_target_rows"], test["cold_start_target_items"]) == (293, 154)
    # H14
    assert valid["history_target_conflicts"] == {"keys": 53, "rows": 157}
    assert test["history_target_conflicts"] == {"keys": 40, "rows": 137}
    assert test["duplicate_rows"] == 0 and test["duplicate_of_earlier_split_rows"] == 0
    assert industrial["data"]["consistency"] == {"sid_mismatches": 0, "title_mismatches": 0}


def test_findings_carry_severity_and_figures(industrial):
    by_id = {f["id"]: f for f in industrial["findings"]}
    assert by_id["colliding_items"]["figure"] == 31 and by_id["colliding_items"]["severity"] == "warning"
    assert by_id["codes_used_level_0"]["figure"] == 48
    assert by_id["test.history_target_conflict_rows"]["figure"] == 137
    assert all(f["severity"] in {"error", "warning", "info"} and f["effect"] for f in industrial["findings"])


def test_unseen_category_works_and_clean_synthetic_has_no_leakage(upstream_dir, tmp_path):
    out = tmp_path / "out"
    r = audit("--upstream-data", str(upstream_dir), "--category", "Toy", "--out", str(out))
    assert r.returncode == 0, r.stderr
    data = json.loads((out / "data.json").read_text())
    assert set(data["splits"]) == {"train", "valid", "test"}
    assert data["cross_split"]["identical_rows_across_splits"] == 0
    assert data["cross_split"]["train_valid_conflict_keys"] is not None


def test_malformed_input_is_refused_with_file_and_line_and_nothing_written(upstream_dir, tmp_path):
    csv_path = upstream_dir / "valid" / "Toy_5_2016-10-2018-11.csv"
    lines = csv_path.read_text().split("\n")
    lines[2] = lines[2].replace("[", "(", 1)  # a history list turned into something else
    csv_path.write_text("\n".join(lines))
    out = tmp_path / "out"
    r = audit("--upstream-data", str(upstream_dir), "--category", "Toy", "--out", str(out))
    assert r.returncode == 2
    assert f"{csv_path}:3:" in r.stderr.replace("\n", "")
    assert not out.exists()


def test_title_and_sid_disagreements_are_counted_findings_not_errors(upstream_dir, tmp_path):
    info = upstream_dir / "info" / "Toy_5_2016-10-2018-11.txt"
    lines = info.read_text().split("\n")
    sid, _, iid = lines[0].split("\t")
    lines[0] = "\t".join([sid, "A title nobody wrote", iid])
    info.write_text("\n".join(lines))
    out = tmp_path / "out"
    r = audit("--upstream-data", str(upstream_dir), "--category", "Toy", "--out", str(out))
    assert r.returncode == 0, r.stderr
    data = json.loads((out / "data.json").read_text())
    assert data["consistency"] == {"sid_mismatches": 0, "title_mismatches": 1}
    findings = json.loads((out / "findings.json").read_text())
    assert any(f["id"] == "consistency.title_mismatches" and f["severity"] == "error" for f in findings)


def test_generation_config_audit(tmp_path):
    leaky = tmp_path / "instruct_ckpt"
    leaky.mkdir()
    (leaky / "generation_config.json").write_text(json.dumps({
        "bos_token_id": 1, "do_sample": True, "temperature": 0.7, "top_k": 20, "top_p": 0.8,
        "repetition_penalty": 1.05}))
    out = tmp_path / "out"
    r = audit("--model", str(leaky), "--out", str(out))
    assert r.returncode == 0, r.stderr
    gen = json.loads((out / "generation.json").read_text())
    assert gen["injected"] == {"do_sample": True, "temperature": 0.7, "top_k": 20, "top_p": 0.8,
                               "repetition_penalty": 1.05}
    sev = {f["id"]: f["severity"] for f in gen["findings"]}
    assert sev["generation_config.do_sample"] == "error" and sev["generation_config.repetition_penalty"] == "error"
    assert sev["generation_config.top_k"] == "error"  # active because sampling is on

    clean = tmp_path / "base_ckpt"
    clean.mkdir()
    (clean / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2, "top_k": 20}))
    r = audit("--model", str(clean), "--out", str(tmp_path / "out2"))
    gen = json.loads((tmp_path / "out2" / "generation.json").read_text())
    assert gen["injected"] == {"top_k": 20}
    assert [f["severity"] for f in gen["findings"]] == ["info"]  # inert without sampling

    (clean / "generation_config.json").write_text("{\n  \"do_sample\": true,\n  oops\n}")
    r = audit("--model", str(clean), "--out", str(tmp_path / "out3"))
    assert r.returncode == 2 and "generation_config.json:3:" in r.stderr.replace("\n", "")
    assert not (tmp_path / "out3").exists()
