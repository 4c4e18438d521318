"""RQ-VAE and RQ-Kmeans+ in torch: an autoencoder whose latent is quantised by a residual codebook stack.

- ``rqvae``: MLP encoder -> residual VQ (codebooks initialised by k-means on the initial latents) -> MLP
  decoder. The loss is reconstruction MSE plus, per level, codebook MSE + beta × commitment MSE, averaged over
  levels. Gradients reach the encoder through a straight-through estimator. Each level quantises what the
  levels above it left (``residual - code.detach()``). Collisions left after training can be spread apart by
  re-encoding each colliding group with Sinkhorn-balanced assignment at the last level, as upstream's
  generate_indices does.
- ``rqkmeans-plus``: the encoder is ``x + MLP(x)`` with the MLP's last layer at zero, so training starts
  from the identity. The codebooks start at the constrained k-means centroids, so training starts from the
  constrained codes. The dedup level then makes every SID unique.

Training evaluates the catalogue's collision rate and loss every ``eval_every`` epochs. By default it keeps
the state with the fewest collisions (ties: lower loss), the same choice as upstream's generate_indices
reading its best-collision checkpoint. ``keep: loss | last`` chooses otherwise. The kept state is written
as safetensors beside its training log.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from harness.io import write_json
from harness.params import RqTrainParams, RqvaeParams
from harness.sid.constrained import collision_groups


def mlp(dims: list[int], zero_last: bool = False) -> nn.Sequential:
    """Linear layers with ReLU between them (none after the last)."""
    mods: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        mods.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            mods.append(nn.ReLU())
    if zero_last:
        nn.init.zeros_(mods[-1].weight)
        nn.init.zeros_(mods[-1].bias)
    return nn.Sequential(*mods)


class ResidualMLP(nn.Module):
    """x + MLP(x): the RQ-Kmeans+ encoder, the identity at initialisation."""

    def __init__(self, dim: int, layers: list[int]):
        super().__init__()
        self.mlp = mlp([dim, *layers, dim], zero_last=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(x)


def sq_dist(x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    return (x * x).sum(1, keepdim=True) + (codebook * codebook).sum(1)[None] - 2 * x @ codebook.T


def sinkhorn_assign(dist: torch.Tensor, epsilon: float, iters: int) -> torch.Tensor:
    """Balanced assignment of B rows to K codes (log-domain Sinkhorn on min-max scaled distances)."""
    d = dist.double()
    mid = (d.max() + d.min()) / 2
    scaled = (d - mid) / ((d.max() - mid) + 1e-5)
    log_q = -scaled / epsilon
    b, k = log_q.shape
    for _ in range(iters):
        log_q = log_q - torch.logsumexp(log_q, 0, keepdim=True) - math.log(k)
        log_q = log_q - torch.logsumexp(log_q, 1, keepdim=True) - math.log(b)
    return log_q.argmax(1)


class ResidualQuantizer(nn.Module):
    def __init__(self, levels: int, k: int, dim: int, beta: float):
        super().__init__()
        self.codebooks = nn.Parameter(torch.zeros(levels, k, dim))
        self.beta = beta

    def forward(self, z: torch.Tensor, sinkhorn_last: tuple[float, int] | None = None):
        residual, z_q, losses, codes = z, torch.zeros_like(z), [], []
        levels = self.codebooks.shape[0]
        for level in range(levels):
            cb = self.codebooks[level]
            dist = sq_dist(residual, cb)
            if sinkhorn_last is not None and level == levels - 1:
                idx = sinkhorn_assign(dist, *sinkhorn_last)
            else:
                idx = dist.argmin(1)
            q = cb[idx]
            losses.append(F.mse_loss(q, residual.detach()) + self.beta * F.mse_loss(q.detach(), residual))
            z_q = z_q + residual + (q - residual).detach()
            residual = residual - q.detach()
            codes.append(idx)
        return z_q, torch.stack(losses).mean(), torch.stack(codes, 1)


class RQAutoencoder(nn.Module):
    def __init__(self, encoder: nn.Module, quantizer: ResidualQuantizer, decoder: nn.Module):
        super().__init__()
        self.encoder, self.quantizer, self.decoder = encoder, quantizer, decoder

    def forward(self, x: torch.Tensor):
        z_q, q_loss, codes = self.quantizer(self.encoder(x))
        return self.decoder(z_q), q_loss, codes

    @torch.no_grad()
    def codes(self, x: torch.Tensor, sinkhorn_last: tuple[float, int] | None = None) -> torch.Tensor:
        return self.quantizer(self.encoder(x), sinkhorn_last)[2]


def collision_rate(codes: torch.Tensor) -> float:
    return 1.0 - len(torch.unique(codes, dim=0)) / len(codes)


def train(model: RQAutoencoder, x: torch.Tensor, p: RqTrainParams, seed: int, label: str,
          show_progress: bool = True) -> tuple[list[dict], int]:
    """Fit the autoencoder; leave the kept state (``p.keep``) loaded; return the evaluation log and its epoch."""
    from harness.console import progress

    opt = torch.optim.AdamW(model.parameters(), lr=p.lr, weight_decay=p.weight_decay)
    gen = torch.Generator().manual_seed(seed)  # batch order on the CPU, whatever the device
    n = len(x)
    log: list[dict] = []
    best: tuple[float, float] | None = None
    best_epoch = 0
    best_state: dict[str, torch.Tensor] = {}
    with progress() as bar:
        task = bar.add_task(label, total=p.epochs, visible=show_progress)
        for epoch in range(1, p.epochs + 1):
            model.train()
            total = 0.0
            for batch in torch.randperm(n, generator=gen).to(x.device).split(p.batch_size):
                xb = x[batch]
                out, q_loss, _ = model(xb)
                loss = F.mse_loss(out, xb) + p.quant_loss_weight * q_loss
                opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                total += float(loss.detach()) * len(batch)
            if epoch % p.eval_every == 0 or epoch == p.epochs:
                model.eval()
                rate = collision_rate(model.codes(x))
                log.append({"epoch": epoch, "loss": round(total / n, 6), "collision_rate": round(rate, 6)})
                score = {"collision": (rate, total), "loss": (total, rate), "last": (-epoch, 0.0)}[p.keep]
                if best is None or score < best:
                    best, best_epoch = score, epoch
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            bar.advance(task)
    model.load_state_dict(best_state)
    model.eval()
    return log, best_epoch


@contextlib.contextmanager
def reproducible(device: str, seed: int) -> Iterator[None]:
    """Seed torch; on CPU also force deterministic kernels (the codebook gradient is a scatter-add whose
    default CPU kernel sums in a thread-dependent order, so two runs drifted apart after one epoch)."""
    torch.manual_seed(seed)
    prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(device == "cpu")
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev)


def pick_device(device: str) -> str:
    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


def _save(model: nn.Module, log: list[dict], out_dir: Path | None, name: str, meta: dict) -> None:
    if out_dir is None:
        return
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out_dir / f"{name}.safetensors"))
    write_json(out_dir / f"{name}_training.json", {**meta, "evaluations": log})


def rqvae_codes(x: np.ndarray, levels: int, k: int, kmeans_iters: int, seed: int, p: RqvaeParams,
                checkpoint_dir: Path | None = None, show_progress: bool = True) -> np.ndarray:
    """(N, levels) 0-based codes from a trained RQ-VAE, collisions spread by Sinkhorn rounds."""
    from harness.sid.rqkmeans import residual_kmeans

    dev = pick_device(p.device)
    with reproducible(dev, seed):
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(dev)
        dims = [xt.shape[1], *p.layers, p.e_dim]
        model = RQAutoencoder(mlp(dims), ResidualQuantizer(levels, k, p.e_dim, p.beta), mlp(dims[::-1])).to(dev)
        with torch.no_grad():  # k-means initialisation of every level on the initial latents
            _, centroids = residual_kmeans(model.encoder(xt).cpu().numpy(), levels, k, kmeans_iters, seed)
            model.quantizer.codebooks.copy_(torch.from_numpy(np.stack(centroids)))
        log, kept = train(model, xt, p, seed, "rqvae", show_progress)
        codes = model.codes(xt)
        rounds = 0
        for rounds in range(1, p.sinkhorn_rounds + 1):
            groups = collision_groups(codes.cpu())
            if not groups:
                rounds -= 1
                break
            for members in groups:
                idx = torch.tensor(members, device=dev)
                codes[idx] = model.codes(xt[idx], (p.sinkhorn_epsilon, p.sinkhorn_iters))
        _save(model.cpu(), log, checkpoint_dir, "rqvae", {
            "method": "rqvae", "keep": p.keep, "kept_epoch": kept, "sinkhorn_rounds_used": rounds,
            "collisions_after_sinkhorn": sum(map(len, collision_groups(codes.cpu())))})
    return codes.cpu().numpy()


def rqkmeans_plus_codes(x: np.ndarray, levels: int, k: int, kmeans_iters: int, seed: int, p: RqTrainParams,
                        checkpoint_dir: Path | None = None, show_progress: bool = True) -> np.ndarray:
    """(N, levels) 0-based codes from RQ-Kmeans+ (before the dedup level)."""
    from harness.sid.constrained import constrained_residual_kmeans

    dev = pick_device(p.device)
    _, centroids = constrained_residual_kmeans(x, levels, k, kmeans_iters, seed)
    with reproducible(dev, seed):
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(dev)
        dim = xt.shape[1]
        model = RQAutoencoder(ResidualMLP(dim, p.layers), ResidualQuantizer(levels, k, dim, p.beta),
                              mlp([dim, *p.layers[::-1], dim])).to(dev)
        with torch.no_grad():
            model.quantizer.codebooks.copy_(torch.from_numpy(np.stack(centroids).astype(np.float32)))
        log, kept = train(model, xt, p, seed, "rqkmeans-plus", show_progress)
        codes = model.codes(xt).cpu()
        _save(model.cpu(), log, checkpoint_dir, "rqkmeans_plus", {"method": "rqkmeans-plus", "keep": p.keep,
                                                                  "kept_epoch": kept})
    return codes.numpy()


def build_rqvae(emb: np.ndarray, p, checkpoint_dir: Path | None = None, show_progress: bool = True) -> list[list[int]]:
    """The registry's rqvae builder (its training knobs: ``sid.rqvae``)."""
    return rqvae_codes(emb, p.levels, p.codebook_size, p.kmeans_iters, p.seed, p.rqvae, checkpoint_dir,
                       show_progress).tolist()


def build_plus(emb: np.ndarray, p, checkpoint_dir: Path | None = None, show_progress: bool = True) -> list[list[int]]:
    """The registry's rqkmeans-plus builder (its training knobs: ``sid.rqkmeans_plus``), with a dedup level."""
    from harness.sid.constrained import dedup_level

    return dedup_level(rqkmeans_plus_codes(emb, p.levels, p.codebook_size, p.kmeans_iters, p.seed, p.rqkmeans_plus,
                                           checkpoint_dir, show_progress))
