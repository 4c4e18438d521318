"""SID builders: balanced constrained levels, a dedup level that makes SIDs unique, the RQ-VAE family,
determinism, build-sids."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from harness.params import SidParams
from harness.sid.constrained import constrained_residual_kmeans, dedup_level
from harness.sid.stage import build_codes, codebook_sizes


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
    codes, _ = constrained_residual_kmeans(embeddings, 2, k, 30, seed=1)
    for level in range(2):
        sizes = Counter(codes[:, level].tolist())
        assert len(sizes) == k and all(n // k - 1 <= s <= n // k + 1 for s in sizes.values())
    sids = dedup_level(codes)
    assert len({tuple(s) for s in sids}) == n
    assert {len(s) for s in sids} <= {2, 3}


FAST = SidParams(levels=3, codebook_size=8, kmeans_iters=20, seed=4, rqvae={"epochs": 30, "eval_every": 10,
                 "layers": [32], "e_dim": 8}, rqkmeans_plus={"epochs": 30, "eval_every": 10, "layers": [32]})


@pytest.mark.parametrize("method", ["rqkmeans", "rqkmeans-constrained", "rqvae", "rqkmeans-plus"])
def test_same_seed_same_codes(embeddings, method, tmp_path):
    a = build_codes(embeddings, method, FAST, tmp_path / "a", show_progress=False)
    b = build_codes(embeddings, method, FAST, tmp_path / "b", show_progress=False)
    assert a == b and len(a) == len(embeddings)
    assert all(0 <= c < 8 for row in a for c in row[:3])  # 0-based codes within the codebook
    if method in ("rqkmeans-constrained", "rqkmeans-plus"):  # dedup level: unique SIDs
        assert len({tuple(r) for r in a}) == len(a)
    if method in ("rqvae", "rqkmeans-plus"):
        name = method.replace("-", "_")
        assert (tmp_path / "a" / f"{name}.safetensors").read_bytes() == (tmp_path / "b" / f"{name}.safetensors").read_bytes()


@pytest.mark.parametrize("method", ["rqkmeans", "rqkmeans-constrained", "rqvae", "rqkmeans-plus"])
def test_build_sids_is_byte_identical_across_processes(tmp_path, upstream_dir, method):
    """Two separate runs with the same seed: the same index.json, byte for byte (on CPU)."""
    item_json = upstream_dir / "index" / "Toy.item.json"
    outs = []
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "keep.txt").write_text("a user's file")
    for name in ("a", "b"):
        out = tmp_path / name
        r = subprocess.run([sys.executable, "-m", "harness.cli", "build-sids", "--item-json", str(item_json),
                            "--method", method, "--out", str(out), "--levels", "2", "--codebook", "4",
                            "--seed", "3", "--epochs", "20"], capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr
        outs.append(out)
    a, b = ((o / "index.json").read_bytes() for o in outs)
    assert a == b  # byte for byte
    stats = json.loads((outs[0] / "sid_stats.json").read_text())
    assert stats["items"] == 40 and stats["method"] == method
    assert (outs[0] / "keep.txt").read_text() == "a user's file"  # only our files in OUT are replaced
    if method in ("rqvae", "rqkmeans-plus"):
        assert stats["training"]["epochs"] == 20
        name = method.replace("-", "_")
        assert (outs[0] / "checkpoints" / f"{name}.safetensors").read_bytes() == \
            (outs[1] / "checkpoints" / f"{name}.safetensors").read_bytes()
    info = (outs[0] / "Toy_5_2016-10-2018-11.txt").read_text().splitlines()
    assert len(info) == 40 and all(line.count("\t") == 2 for line in info)
    if method in ("rqkmeans-constrained", "rqkmeans-plus"):  # the dedup level makes every SID unique
        assert stats["unique_sids"] == 40 and stats["colliding_items"] == 0
    if method == "rqkmeans-constrained":
        assert stats["codes_used_per_level"][:2] == [4, 4]


def test_build_sids_refuses_unknown_method(tmp_path, upstream_dir):
    r = subprocess.run([sys.executable, "-m", "harness.cli", "build-sids", "--item-json",
                        str(upstream_dir / "index" / "Toy.item.json"), "--method", "magic", "--out", str(tmp_path / "o")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "magic" in r.stderr and not (tmp_path / "o").exists()


def test_sinkhorn_spreads_items_that_all_prefer_one_code():
    import torch

    from harness.sid.rqvae import sinkhorn_assign

    dist = torch.rand(5, 8, generator=torch.Generator().manual_seed(0)) + 1.0
    dist[:, 3] = 0.0  # every row's nearest code is 3
    assert dist.argmin(1).tolist() == [3] * 5
    assert len(set(sinkhorn_assign(dist, 0.003, 50).tolist())) == 5


def test_rqkmeans_plus_starts_at_the_identity_and_the_constrained_codebooks():
    import torch

    from harness.sid.rqvae import ResidualMLP

    enc = ResidualMLP(16, [32])
    x = torch.randn(10, 16)
    assert torch.equal(enc(x), x)  # zero-initialised last layer: x + 0


def test_rqvae_keeps_its_best_collision_state_and_reloads_to_the_same_codes(embeddings, tmp_path):
    import torch
    from safetensors.torch import load_file

    from harness.sid.rqvae import ResidualQuantizer, RQAutoencoder, mlp

    p = FAST.model_copy(update={"rqvae": FAST.rqvae.model_copy(update={"sinkhorn_rounds": 0})})
    codes = build_codes(embeddings, "rqvae", p, tmp_path, show_progress=False)
    log = json.loads((tmp_path / "rqvae_training.json").read_text())
    kept = min(log["evaluations"], key=lambda r: (r["collision_rate"], r["loss"]))
    assert log["kept_epoch"] == kept["epoch"]
    assert kept["collision_rate"] == pytest.approx(1 - len({tuple(c) for c in codes}) / len(codes), abs=1e-6)
    dims = [16, 32, 8]
    model = RQAutoencoder(mlp(dims), ResidualQuantizer(3, 8, 8, 0.25), mlp(dims[::-1]))
    model.load_state_dict(load_file(str(tmp_path / "rqvae.safetensors")))
    assert model.codes(torch.from_numpy(embeddings)).tolist() == codes
    for keep, expected in (("last", 30), ("loss", min(log["evaluations"], key=lambda r: r["loss"])["epoch"])):
        other = p.model_copy(update={"rqvae": p.rqvae.model_copy(update={"keep": keep})})
        build_codes(embeddings, "rqvae", other, tmp_path / keep, show_progress=False)
        assert json.loads((tmp_path / keep / "rqvae_training.json").read_text())["kept_epoch"] == expected


def test_sinkhorn_rounds_reduce_rqvae_collisions(embeddings, tmp_path):
    def colliding(p):
        codes = build_codes(embeddings, "rqvae", p, tmp_path, show_progress=False)
        return sum(c for c in Counter(map(tuple, codes)).values() if c > 1)

    off = FAST.model_copy(update={"rqvae": FAST.rqvae.model_copy(update={"sinkhorn_rounds": 0})})
    before, after = colliding(off), colliding(FAST)
    assert before > 0 and after < before
