"""The ``harness`` command as a user meets it: stages on real data, clear errors, no partial output."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import harness
from harness.errors import ParamsError
from harness.params import load_section
from tests.conftest import TINY_MODEL, stage_args

HARNESS = [sys.executable, "-m", "harness.cli"]


def _run(args, cwd):
    return subprocess.run([*HARNESS, *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def _params(tmp_path: Path, doc: dict) -> Path:
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


def test_import_forces_offline_switches():
    for key, value in harness.OFFLINE_ENV.items():
        assert os.environ[key] == value


def test_unknown_params_key_is_named(tmp_path):
    p = _params(tmp_path, {"sft": {"epochs": 1, "learning_rat": 0.1}})
    with pytest.raises(ParamsError) as e:
        load_section("sft", p)
    assert e.value.key == "sft.learning_rat" and str(p) in str(e.value)


def test_ill_typed_params_value_is_named(tmp_path):
    p = _params(tmp_path, {"evaluate": {"num_beams": "many"}})
    r = _run([*stage_args("evaluate", "sft"), "--params", str(p)], tmp_path)
    assert r.returncode != 0
    assert "evaluate.num_beams" in r.stderr and str(p) in r.stderr
    assert not (tmp_path / "reports").exists()


def test_broken_yaml_names_line(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("data:\n  source: synthetic\n  split: [0.8, 0.1\n")
    r = _run([*stage_args("data"), "--params", str(p)], tmp_path)
    assert r.returncode != 0 and f"{p}:" in r.stderr and "invalid YAML" in r.stderr


def test_bad_upstream_csv_exits_nonzero_names_line_and_writes_nothing(tmp_path, upstream_dir):
    csv_path = upstream_dir / "test" / "Toy_5_2016-10-2018-11.csv"
    lines = csv_path.read_text().split("\n")
    lines[5] = lines[5][:-20]  # truncate a row mid-field
    csv_path.write_text("\n".join(lines))
    p = _params(tmp_path, {"data": {"source": "upstream", "upstream": {"dir": str(upstream_dir), "category": "Toy"}}})
    r = _run(["data", "--params", str(p), "--out", str(tmp_path / "out")], tmp_path)
    assert r.returncode == 2
    assert f"{csv_path}:6" in r.stderr.replace("\n", "")
    assert not (tmp_path / "out").exists()
    assert r.stderr.count("error:") == 1


def test_data_and_shipped_sid_on_real_industrial(tmp_path, shared_amazon):
    """source=upstream with valid_as_train, then sid.method=shipped, through the CLI as dvc runs it."""
    p = _params(tmp_path, {
        "data": {"source": "upstream", "upstream": {"dir": str(shared_amazon), "valid_as_train": True}},
        "sid": {"method": "shipped", "compare": []},  # no builders beside the shipped index: no embeddings
    })
    r = _run([*stage_args("data"), "--params", str(p)], tmp_path)
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "data/dataset/summary.json").read_text())
    assert summary["splits"]["train"]["rows"] == 4532 and summary["splits"]["valid"]["rows"] == 0
    assert summary["splits"]["test"]["rows"] == 4533 and summary["valid_as_train"] is True
    r = _run([*stage_args("sid"), "--params", str(p)], tmp_path)
    assert r.returncode == 0, r.stderr
    sid = json.loads((tmp_path / "data/sid/summary.json").read_text())
    assert sid["unique_sids"] == 3670 and sid["colliding_items"] == 31
    # the shipped index passes through unchanged, and the export is upstream's layout
    shipped = json.loads((shared_amazon / "index/Industrial_and_Scientific.index.json").read_text())
    assert json.loads((tmp_path / "data/sid/index.json").read_text()) == shipped
    export = tmp_path / "data/sid/upstream"
    assert (export / "test/Industrial_and_Scientific_5_2016-10-2018-11.csv").read_bytes() == (
        shared_amazon / "test/Industrial_and_Scientific_5_2016-10-2018-11.csv").read_bytes()


def test_upstream_source_without_train_csv_needs_the_protocol_option(tmp_path, shared_amazon):
    p = _params(tmp_path, {"data": {"source": "upstream", "upstream": {"dir": str(shared_amazon)}}})
    r = _run([*stage_args("data"), "--params", str(p)], tmp_path)
    assert r.returncode == 2 and "valid_as_train" in r.stderr
    assert not (tmp_path / "data").exists()


def test_shipped_sids_come_from_the_source_or_are_refused(tmp_path):
    p = _params(tmp_path, {"data": {"synthetic": {"n_items": 30, "n_users": 20}},
                           "sid": {"method": "shipped", "compare": []}})
    assert _run([*stage_args("data"), "--params", str(p)], tmp_path).returncode == 0
    r = _run([*stage_args("sid"), "--params", str(p)], tmp_path)
    assert r.returncode == 0, r.stderr  # the synthetic source ships its own hierarchical SIDs
    shipped = json.loads((tmp_path / "data/dataset/sid_index.json").read_text())
    assert json.loads((tmp_path / "data/sid/index.json").read_text()) == shipped
    (tmp_path / "data/dataset/sid_index.json").unlink()  # a dataset whose source shipped no SIDs
    r = _run([*stage_args("sid"), "--params", str(p)], tmp_path)
    assert r.returncode == 2 and "sid.method" in r.stderr
    assert json.loads((tmp_path / "data/sid/index.json").read_text()) == shipped  # old output untouched


def test_sid_stage_compares_builders_with_the_shipped_industrial_index(tmp_path, shared_amazon):
    """embed from an upstream-layout .npy, then one builder beside the shipped index, as the report shows them."""
    import numpy as np

    from harness.report.model_tables import sid_table

    vectors = tmp_path / "Industrial_and_Scientific.emb-test-td.npy"
    np.save(vectors, np.random.default_rng(0).normal(size=(3686, 16)).astype(np.float16))
    p = _params(tmp_path, {
        "data": {"source": "upstream", "upstream": {"dir": str(shared_amazon), "valid_as_train": True}},
        "embed": {"npy": str(vectors)},
        "sid": {"method": "rqkmeans", "codebook_size": 256, "compare": ["rqkmeans-constrained"]},
    })
    for stage in ("data", "embed", "sid"):
        r = _run([*stage_args(stage), "--params", str(p)], tmp_path)
        assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "data/sid/summary.json").read_text())
    rows = {r["method"]: r for r in summary["comparison"]}
    assert list(rows) == ["rqkmeans", "rqkmeans-constrained", "shipped"]
    assert rows["shipped"]["unique_sids"] == 3670 and rows["shipped"]["codes_used_per_level"] == [48, 256, 256]
    assert rows["rqkmeans-constrained"]["unique_share"] == 1.0 and rows["rqkmeans"]["selected"]
    header, table = sid_table(summary)
    assert [r[0] for r in table] == ["rqkmeans (used)", "rqkmeans-constrained", "shipped"]
    assert "NMI level-1 vs category" in header


def _kill_after_first_checkpoint(stage: str, params: Path, cwd: Path) -> list[Path]:
    """Start ``harness <stage>``, SIGKILL it once its first complete checkpoint exists; the checkpoints left."""
    import signal
    import time

    proc = subprocess.Popen([*HARNESS, *stage_args(stage), "--params", str(params)], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    ckpts = cwd / "models" / f".{stage}.checkpoints"
    deadline = time.time() + 300
    while not list(ckpts.glob("*/checkpoint-*/trainer_state.json")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, f"{stage} ended before its first checkpoint: make the run longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = sorted(ckpts.glob("*/checkpoint-*"))
    assert saved and not (cwd / "models" / stage).exists()  # nothing half-written where the output goes
    return saved


def test_killed_sft_resumes_from_its_last_checkpoint_and_ends_as_an_uninterrupted_run(tiny_workdir):
    """SIGKILL mid-training, run again: training continues from the last epoch checkpoint, cleans up, and on
    CPU the final weights are byte-identical to those of a run that was never interrupted."""
    tmp_path = tiny_workdir
    p = _params(tmp_path, {"sft": {"epochs": 2, "batch_size": 4, "model": TINY_MODEL}})
    assert _run([*stage_args("sft"), "--params", str(p)], tmp_path).returncode == 0
    uninterrupted = (tmp_path / "models/sft/model.safetensors").read_bytes()
    shutil.rmtree(tmp_path / "models/sft")

    saved = _kill_after_first_checkpoint("sft", p, tmp_path)
    r = _run([*stage_args("sft"), "--params", str(p)], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "resuming from" in r.stderr and saved[0].name in r.stderr
    log = json.loads((tmp_path / "models/sft/training_log.json").read_text())
    steps_per_epoch = int(saved[0].name.split("-")[1])
    assert log["global_steps"] == 2 * steps_per_epoch
    assert not saved[0].parent.parent.exists()  # cleaned up after success
    assert (tmp_path / "models/sft/model.safetensors").read_bytes() == uninterrupted


def test_killed_rl_resumes_and_ends_where_an_uninterrupted_run_ends(tiny_workdir):
    """SIGKILL of the rl stage after its first checkpoint, run again: it resumes there, and on CPU the final
    weights are byte-identical to those of a run that was never interrupted."""
    tmp_path = tiny_workdir
    p = _params(tmp_path, {
        "sft": {"epochs": 1, "batch_size": 8, "model": TINY_MODEL},
        "rl": {"max_prompts": 24, "num_generations": 4, "prompts_per_step": 2, "save_steps": 3,
               "learning_rate": 0.01}})
    assert _run([*stage_args("sft"), "--params", str(p)], tmp_path).returncode == 0
    r = _run([*stage_args("rl"), "--params", str(p)], tmp_path)
    assert r.returncode == 0, r.stderr
    uninterrupted = (tmp_path / "models/rl/model.safetensors").read_bytes()
    shutil.rmtree(tmp_path / "models/rl")

    saved = _kill_after_first_checkpoint("rl", p, tmp_path)
    r = _run([*stage_args("rl"), "--params", str(p)], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "rl: resuming from" in r.stderr and saved[-1].name in r.stderr
    log = json.loads((tmp_path / "models/rl/training_log.json").read_text())
    assert log["global_steps"] == 12 and not saved[0].parent.parent.exists()
    assert (tmp_path / "models/rl/model.safetensors").read_bytes() == uninterrupted


def test_killed_evaluation_resumes_after_its_last_chunk_and_ends_byte_identical(tiny_workdir):
    """SIGKILL of evaluate@sft mid-decoding, run again: it keeps the complete chunks of the first run, decodes the
    rest, and predictions.json and scores.json are byte-identical to a run that was never interrupted. Shards
    another run left are discarded instead."""
    import signal
    import time

    tmp_path = tiny_workdir
    p = _params(tmp_path, {"sft": {"epochs": 1, "batch_size": 8, "model": TINY_MODEL},
                           "evaluate": {"chunk_rows": 8, "batch_size": 2, "unconstrained_rows": 0, "max_rows": 80}})
    assert _run([*stage_args("sft"), "--params", str(p)], tmp_path).returncode == 0
    evaluate = [*stage_args("evaluate", "sft"), "--params", str(p)]
    r = _run(evaluate, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "rows/s" in r.stderr  # stderr is no terminal here: progress comes as plain lines, with the rate
    out = tmp_path / "reports/eval/sft"
    uninterrupted = {f: (out / f).read_bytes() for f in ("predictions.json", "scores.json")}
    rows = json.loads(uninterrupted["scores.json"])["protocol"]["rows"]
    shutil.rmtree(out)

    proc = subprocess.Popen([*HARNESS, *evaluate], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    shard = tmp_path / "reports/eval/.sft.shards/rank-0.jsonl"
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline and \
            (not shard.is_file() or shard.read_bytes().count(b"\n") < 16):
        time.sleep(0.01)
    assert proc.poll() is None, "evaluation ended before two chunks were written: make the run longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = shard.read_bytes().count(b"\n")
    assert 16 <= written < rows and not out.exists()  # nothing half-written where the output goes
    with shard.open("ab") as f:
        f.write(b'[9999, ["a half-written li')  # a kill in the middle of a line: that chunk is dropped

    r = _run(evaluate, tmp_path)
    assert r.returncode == 0, r.stderr
    kept = written - written % 8
    assert f"resuming evaluation at row {kept} of {rows}" in " ".join(r.stderr.split())
    assert {f: (out / f).read_bytes() for f in uninterrupted} == uninterrupted
    assert not shard.parent.exists()  # cleaned up after the merge

    # shards of another run (another model, prompts or settings) are thrown away, never merged
    from harness.evaluate.resume import open_shard

    f, _ = open_shard(shard.parent, 0, list(range(rows)), "another-run", 8)
    with f:
        f.write("".join(json.dumps([i, ["<a_0><b_0><c_0>"]]) + "\n" for i in range(16)))
    r = _run(evaluate, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "was not used (it was made by another model, prompts or settings)" in " ".join(r.stderr.split())
    assert {f: (out / f).read_bytes() for f in uninterrupted} == uninterrupted

