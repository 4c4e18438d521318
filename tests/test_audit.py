"""`harness audit`: the figures of docs/hazards.md (H4, H9, H12-H14) recomputed on the real Industrial files, and the command's contract."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import CATEGORY

TEST_CSV = f"test/{CATEGORY}_5_2016-10-2018-11.csv"


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
    r = audit("--upstream-data", str(upstream_dir), "--category", "Toy", "--out", str(out), "--fail-on", "never")
    assert r.returncode == 0, r.stderr
    data = json.loads((out / "data.json").read_text())
    assert data["consistency"] == {"sid_mismatches": 0, "title_mismatches": 1}
    findings = json.loads((out / "findings.json").read_text())
    f = next(f for f in findings if f["id"] == "consistency.title_mismatches")
    assert (f["severity"], f["figure"], f["locations"]) == ("error", 1, [f"{info}:1"])  # the info file's line


def test_generation_config_audit(tmp_path):
    leaky = tmp_path / "instruct_ckpt"
    leaky.mkdir()
    (leaky / "generation_config.json").write_text(json.dumps({
        "bos_token_id": 1, "do_sample": True, "temperature": 0.7, "top_k": 20, "top_p": 0.8,
        "repetition_penalty": 1.05}))
    out = tmp_path / "out"
    r = audit("--model", str(leaky), "--out", str(out))
    assert r.returncode == 1, r.stderr  # error findings: written, then failed
    assert f"error: generation_config.do_sample = True at {leaky / 'generation_config.json'}:1" in r.stderr
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
    assert r.returncode == 0, r.stderr  # an info finding never fails
    gen = json.loads((tmp_path / "out2" / "generation.json").read_text())
    assert gen["injected"] == {"top_k": 20}
    assert [f["severity"] for f in gen["findings"]] == ["info"]  # inert without sampling

    (clean / "generation_config.json").write_text("{\n  \"do_sample\": true,\n  oops\n}")
    r = audit("--model", str(clean), "--out", str(tmp_path / "out3"))
    assert r.returncode == 2 and "generation_config.json:3:" in r.stderr.replace("\n", "")
    assert not (tmp_path / "out3").exists()


# ------------------------------------------------------------------ --fail-on and locations
def invoke(*args: str):
    """`harness audit ARGS` in-process (the fixture's subprocess already paid for the imports once)."""
    from typer.testing import CliRunner

    from harness.cli import app

    return CliRunner().invoke(app, ["audit", *args], catch_exceptions=False)


@pytest.fixture(scope="module")
def industrial_bad_sid(shared_amazon, tmp_path_factory) -> tuple[Path, int]:
    """The real Industrial files (test split, item/index/info; not the other category), with one SID of one test
    CSV row changed. Returns the copy and that row's 1-based line (header = 1)."""
    import shutil

    d = tmp_path_factory.mktemp("industrial_bad") / "Amazon"
    for rel in (f"index/{CATEGORY}.index.json", f"index/{CATEGORY}.item.json",
                f"info/{CATEGORY}_5_2016-10-2018-11.txt", TEST_CSV):
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shared_amazon / rel, d / rel)
    lines = (d / TEST_CSV).read_text(encoding="utf-8").split("\n")
    line = 8
    assert lines[line - 1].endswith("<a_104><b_60><c_152>")  # the target SID column ends the record
    lines[line - 1] = lines[line - 1][: -len("<c_152>")] + "<c_153>"
    (d / TEST_CSV).write_text("\n".join(lines), encoding="utf-8")
    return d, line


def test_an_error_finding_fails_the_audit_and_names_file_and_line(industrial_bad_sid, tmp_path):
    d, line = industrial_bad_sid
    out = tmp_path / "out"
    r = invoke("--upstream-data", str(d), "--category", CATEGORY, "--out", str(out))
    where = f"{d / TEST_CSV}:{line}"
    assert r.exit_code == 1, r.output
    assert f"error: consistency.sid_mismatches = 1 at {where}" in r.stderr.splitlines()
    assert [x for x in r.stderr.splitlines() if x.startswith(("error:", "warning:", "info:"))] == [
        f"error: consistency.sid_mismatches = 1 at {where}"]  # only findings at the threshold
    findings = json.loads((out / "findings.json").read_text())  # everything was written before failing
    assert findings[0]["id"] == "consistency.sid_mismatches" and findings[0]["locations"] == [where]
    assert where in (out / "summary.md").read_text()
    assert json.loads((out / "data.json").read_text())["consistency"] == {"sid_mismatches": 1, "title_mismatches": 0}


def test_fail_on_never_reports_the_same_and_exits_0(industrial_bad_sid, tmp_path):
    d, line = industrial_bad_sid
    r = invoke("--upstream-data", str(d), "--category", CATEGORY, "--out", str(tmp_path / "out"), "--fail-on", "never")
    assert r.exit_code == 0, r.output
    assert r.stderr == ""
    findings = json.loads((tmp_path / "out" / "findings.json").read_text())
    assert findings[0]["locations"] == [f"{d / TEST_CSV}:{line}"]


def test_clean_industrial_passes_on_errors_but_not_on_warnings(industrial):
    """The clean files have warnings and infos only: exit 0 under the default (the fixture ran it), exit 1 under
    --fail-on warning, listing the warnings and no info."""
    from harness.audit.findings import failing, finding_line

    findings = industrial["findings"]
    assert failing(findings, "error") == [] and failing(findings, "never") == []
    warned = failing(findings, "warning")
    assert {f["severity"] for f in warned} == {"warning"} and len(warned) == sum(
        f["severity"] == "warning" for f in findings)
    conflicts = next(f for f in warned if f["id"] == "test.history_target_conflict_rows")
    assert finding_line(conflicts).startswith("warning: test.history_target_conflict_rows = 137 at ")
    assert next(f for f in warned if f["id"] == "codes_used_level_0").get("locations") is None  # a whole-index figure
    # every row-level finding names its first rows in the real CSVs (header = line 1)
    row_findings = [f for f in findings if f["id"].startswith(("valid.", "test."))]
    assert conflicts in row_findings  # the loop below checks at least this one
    for f in row_findings:
        split = f["id"].split(".")[0]
        assert 1 <= len(f["locations"]) <= 5 and all(
            loc.rsplit(":", 1)[0].endswith(f"{split}/{CATEGORY}_5_2016-10-2018-11.csv") for loc in f["locations"])
    lines = [int(loc.rsplit(":", 1)[1]) for loc in conflicts["locations"]]
    assert lines == sorted(lines) and lines[0] >= 2


def test_fail_on_warning_via_the_cli(upstream_dir, tmp_path):
    """Clean synthetic files: history -> target conflicts are warnings, there is no error."""
    ok = invoke("--upstream-data", str(upstream_dir), "--category", "Toy", "--out", str(tmp_path / "a"))
    assert ok.exit_code == 0, ok.output
    findings = json.loads((tmp_path / "a" / "findings.json").read_text())
    warnings = [f for f in findings if f["severity"] == "warning"]
    assert warnings and not any(f["severity"] == "error" for f in findings)
    r = invoke("--upstream-data", str(upstream_dir), "--category", "Toy", "--out", str(tmp_path / "b"),
               "--fail-on", "warning")
    assert r.exit_code == 1
    listed = [x for x in r.stderr.splitlines() if x.startswith(("error:", "warning:", "info:"))]
    assert listed == [f"warning: {f['id']} = {f['figure']} at {', '.join(f['locations'])}" if f.get("locations")
                      else f"warning: {f['id']} = {f['figure']} at (a figure over the whole input, no row)"
                      for f in warnings]
    bad = invoke("--upstream-data", str(upstream_dir), "--category", "Toy", "--out", str(tmp_path / "c"),
                 "--fail-on", "info")
    assert bad.exit_code == 2 and "--fail-on 'info'" in bad.stderr and not (tmp_path / "c").exists()


def test_pipeline_audit_locates_a_planted_defect_in_interactions_jsonl(tmp_path):
    """run_audit (the dvc stage's entry) on a canonical dataset with planted train -> test copies: the finding
    names interactions.jsonl lines, and those lines are test rows identical to an earlier split's row."""
    from harness.audit.stage import run_audit
    from harness.data.schema import write_dataset
    from harness.data.synthetic import generate
    from harness.io import write_json
    from harness.params import PlantParams, SyntheticParams
    from harness.sid.index import write_index_json

    ds = generate(SyntheticParams(n_items=60, n_users=150, seed=1, plant=PlantParams(cross_split_duplicates=0.3)),
                  10, (0.8, 0.1, 0.1))
    write_dataset(ds, tmp_path / "dataset")
    (tmp_path / "sid").mkdir()
    write_index_json(tmp_path / "sid" / "index.json", ds.sid_index)
    write_json(tmp_path / "sid" / "summary.json", {})
    res = run_audit(tmp_path / "dataset", tmp_path / "sid", tmp_path / "no_model", tmp_path / "audit")
    f = next(f for f in res["findings"] if f["id"] == "test.duplicate_of_earlier_split_rows")
    assert f["severity"] == "error" and f["figure"] > 0 and len(f["locations"]) == min(5, f["figure"])
    assert json.loads((tmp_path / "audit" / "findings.json").read_text()) == res["findings"]
    lines = (tmp_path / "dataset" / "interactions.jsonl").read_text().splitlines()
    earlier = {(r["user"], tuple(r["history"]), r["target"]) for r in map(json.loads, lines) if r["split"] != "test"}
    for loc in f["locations"]:
        path, n = loc.rsplit(":", 1)
        assert path == str(tmp_path / "dataset" / "interactions.jsonl")
        row = json.loads(lines[int(n) - 1])
        assert row["split"] == "test" and (row["user"], tuple(row["history"]), row["target"]) in earlier
    assert f"{tmp_path / 'dataset' / 'interactions.jsonl'}:" in res["summary"]
