"""The benchmark scripts run and check their own correctness claims (times are measured there, never here)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO


def test_constrained_decoding_benchmark_finds_identical_beams_and_writes_its_record(tmp_path):
    out = tmp_path / "b.json"
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "constrained_decoding.py"), "--out", str(out),
                        "--rows", "3", "--items", "300", "--vocab", "3000", "--batch", "2", "--beams", "20"],
                       cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads(out.read_text())
    for key in ("upstream_style_s", "vectorised_hf_s", "project_s", "unconstrained_s", "speedup_vs_upstream_style",
                "identical_outputs", "device", "model_parameters", "vocab_size", "batch", "beams",
                "catalogue_size"):
        assert key in doc, key
    assert doc["identical_outputs"] is True and doc["catalogue_size"] == 300 and doc["vocab_size"] == 3000
