"""SID builders: balanced constrained levels, a dedup level that makes SIDs unique, determinism, build-sids."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from harness.sid import codebook_sizes, codes_from_embeddings
from harness.sid.constrained import constrained_residual_kmeans, dedup_level


def test_dedup_level_ranks_colliding_items_by_id():
    codes = np.array([[1, 2], [3, 4], [1, 2], [1, 2], [3, 5]])
    assert dedup_level(codes) == [[1, 2, 0], [3, 4], [1, 2, 1], [1, 2, 2], [3, 5]]
    assert codebook_sizes(dedup_level(codes), 2, 8) == [8, 8, 3]
    assert codebook_sizes(codes.tolist(), 2, 8) == [8, 8]  # no dedup level


@pytest.fixture(scope="module")
def embeddings():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(6, 16))
    return (centres[rng.integers(6, size=300)] + 0.3 * rng.normal(size=(300, 16))).astype(np.float32)


def test_constrained_levels_are_balanced_and_sids_unique(embeddings):
    n, k = len(embeddings), 8
    codes = constrained_residual_kmeans(embeddings, 2, k, 30, seed=1)
    for level in range(2):
        sizes = Counter(codes[:, level].tolist())
        assert len(sizes) == k and all(n // k - 1 <= s <= n // k + 1 for s in sizes.values())
    sids = dedup_level(codes)
    assert len({tuple(s) for s in sids}) == n
    assert {len(s) for s in sids} <= {2, 3}


@pytest.mark.parametrize("method", ["rqkmeans", "rqkmeans-constrained"])
def test_same_seed_same_codes(embeddings, method):
    a = codes_from_embeddings(embeddings, method, 3, 8, 20, seed=4)
    b = codes_from_embeddings(embeddings, method, 3, 8, 20, seed=4)
    assert a == b and len(a) == len(embeddings)


def test_build_sids_command_is_deterministic_and_unique(tmp_path, upstream_dir):
    item_json = upstream_dir / "index" / "Toy.item.json"
    outs = []
    for name in ("a", "b"):
        out = tmp_path / name
        r = subprocess.run([sys.executable, "-m", "harness.cli", "build-sids", "--item-json", str(item_json),
                            "--method", "rqkmeans-constrained", "--out", str(out), "--levels", "2", "--codebook", "4",
                            "--seed", "3"], capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr
        outs.append(out)
    a, b = ((o / "index.json").read_bytes() for o in outs)
    assert a == b  # byte for byte
    stats = json.loads((outs[0] / "sid_stats.json").read_text())
    assert stats["unique_sids"] == stats["items"] == 40 and stats["colliding_items"] == 0
    assert stats["codes_used_per_level"][:2] == [4, 4]
    info = (outs[0] / "Toy_5_2016-10-2018-11.txt").read_text().splitlines()
    assert len(info) == 40 and all(line.count("\t") == 2 for line in info)


def test_build_sids_refuses_unknown_method(tmp_path, upstream_dir):
    r = subprocess.run([sys.executable, "-m", "harness.cli", "build-sids", "--item-json",
                        str(upstream_dir / "index" / "Toy.item.json"), "--method", "magic", "--out", str(tmp_path / "o")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "magic" in r.stderr and not (tmp_path / "o").exists()
