"""The bad-input corpus (``tests/data/bad/``): every case is a small defect laid over the good workspace in
``tests/data/good/``. Each one must end in exit 2 and one clear error line that names the file and the line or
key, and must leave the workspace exactly as it was: no partial output, and nothing run from the data."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from harness.cli import app
from tests.conftest import REPO

GOOD = REPO / "tests" / "data" / "good"
BAD = REPO / "tests" / "data" / "bad"
CASES = sorted(p.name for p in BAD.iterdir() if (p / "case.yaml").is_file())
INFO = "data/info/Toy_5_2016-10-2018-11.txt"
ENTRIES = {  # how each entry point is called in the workspace (cwd)
    "audit": ["audit", "--upstream-data", "data", "--category", "Toy", "--out", "out"],
    "data": ["data", "--params", "params.yaml", "--out", "out"],
    "score": ["score", "--predictions", "predictions.json", "--info", INFO, "--out", "out/metrics.json"],
    "build-sids": ["build-sids", "--item-json", "data/index/Toy.item.json", "--method", "rqkmeans", "--levels", "2",
                   "--codebook", "2", "--iters", "5", "--embeddings", "embeddings.npy", "--out", "out"],
    "recommend": ["recommend", "--model", "model", "--history", "<a_0><b_0><c_0>", "--dataset", "dataset",
                  "--sids", "sid"],
    "audit-model": ["audit", "--model", "model", "--out", "out"],
}


@pytest.fixture(scope="module")
def canonical(tmp_path_factory) -> Path:
    """The good data as the pipeline's canonical dataset and SID folder (what `recommend` reads)."""
    from harness.data.schema import write_dataset
    from harness.data.upstream_format import read_upstream_dir
    from harness.sid.index import write_index_json

    root = tmp_path_factory.mktemp("canonical")
    ds, _ = read_upstream_dir(GOOD / "Amazon", "Toy")
    write_dataset(ds, root / "dataset")
    (root / "sid").mkdir()
    write_index_json(root / "sid" / "index.json", ds.sid_index)
    return root


def workspace(tmp_path: Path, canonical: Path) -> Path:
    ws = tmp_path / "ws"
    shutil.copytree(GOOD / "Amazon", ws / "data")
    for name in ("params.yaml", "predictions.json", "embeddings.npy"):
        shutil.copy(GOOD / name, ws / name)
    shutil.copytree(canonical, ws, dirs_exist_ok=True)
    (ws / "model").mkdir()
    return ws


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def invoke(ws: Path, args: list[str], monkeypatch):
    monkeypatch.chdir(ws)
    return CliRunner().invoke(app, args, catch_exceptions=True)


def test_the_corpus_covers_every_reader_with_thirty_cases_or_more():
    entries = {yaml.safe_load((BAD / c / "case.yaml").read_text())["entry"] for c in CASES}
    assert len(CASES) >= 30 and entries == set(ENTRIES)


@pytest.mark.parametrize("entry", ["audit", "data", "score", "build-sids"])
def test_the_good_workspace_passes_every_entry_point(entry, tmp_path, canonical, monkeypatch):
    """The corpus means something only if the same command succeeds without the defect."""
    ws = workspace(tmp_path, canonical)
    r = invoke(ws, ENTRIES[entry], monkeypatch)
    assert r.exit_code == 0, r.output + r.stderr
    assert (ws / "out").exists()


@pytest.mark.parametrize("name", CASES)
def test_bad_input_fails_with_one_located_message_and_writes_nothing(name, tmp_path, canonical, monkeypatch):
    case = yaml.safe_load((BAD / name / "case.yaml").read_text())
    ws = workspace(tmp_path, canonical)
    for rel in case.get("delete", []):
        (ws / rel).unlink()
    for src in (BAD / name).rglob("*"):
        if src.is_file() and src.name != "case.yaml":
            dst = ws / src.relative_to(BAD / name)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dst)
    before = snapshot(ws)
    r = invoke(ws, ENTRIES[case["entry"]], monkeypatch)
    message = " ".join(r.stderr.split())  # rich may wrap a long line
    assert r.exit_code == 2, f"{name}: exit {r.exit_code}\n{r.output}\n{r.exception!r}"
    assert r.exception is None or isinstance(r.exception, SystemExit), f"{name}: {r.exception!r}"
    assert message.startswith("error:") and message.count("error:") == 1, f"{name}: {r.stderr}"
    for fragment in case["expect"]:
        assert fragment in message, f"{name}: {fragment!r} not in {message!r}"
    assert snapshot(ws) == before, f"{name}: the workspace changed (partial output?)"
    assert not (ws / "pwned").exists() and not (tmp_path / "pwned").exists()
