"""SASRec (Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018) as a learned baseline.

A compact CPU implementation: item embedding + learned positional embedding, ``num_blocks`` pre-LN causal
self-attention blocks with a position-wise feed-forward layer (dropout on the embeddings, the attention weights
and the feed-forward layer, as the paper's model), and item scores as the dot product of a position's output
with the shared item embeddings. Training: each train row is the sequence ``history + [target]``, left-padded
(positions are counted from the right, so the last item always has the same position); every position t
predicts item t+1 with a cross-entropy over the whole catalogue (padding positions carry no loss). Scoring: the
last position's output over a test row's history.

Deterministic on one machine: the initialisation, the shuffling and the dropout draw from ``seed`` (the global
torch RNG is forked, so the caller's random state is left as it was), training and scoring run on one CPU
thread (the same float operations whatever the core count; and a tiny model on a shared 2-core machine is
several times slower with two contending threads), and scoring runs in eval mode.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import nn
from torch.nn import functional as F

from harness.console import console
from harness.data.schema import Interaction
from harness.params import SasrecParams

IGNORE = -100  # label of a padding position (no loss)
BUCKET = 32  # batches per length-sorted chunk of a shuffled epoch (see _batches)
R = TypeVar("R")


class _Block(nn.Module):
    """Pre-LN transformer block: x + attn(LN(x)), then x + ffn(LN(x)); ``allowed`` masks the attention."""

    def __init__(self, d: int, heads: int, dropout: float):
        super().__init__()
        if d % heads:
            raise ValueError(f"sasrec: hidden_size {d} is not a multiple of num_heads {heads}")
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.out = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.attn_drop = nn.Dropout(dropout)
        self.ffn = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Dropout(dropout), nn.Linear(d, d),
                                 nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        w = (q @ k.transpose(-2, -1)) * (d // self.heads) ** -0.5
        w = self.attn_drop(w.masked_fill(~allowed, float("-inf")).softmax(-1))
        x = x + self.out((w @ v).transpose(1, 2).reshape(b, t, d))
        return x + self.ffn(self.ln2(x))


class SASRec(nn.Module):
    """Items are 0..n_items-1; ``n_items`` is the padding index. Sequences are at most ``max_len`` long."""

    def __init__(self, n_items: int, max_len: int, p: SasrecParams):
        super().__init__()
        self.n_items, self.max_len = n_items, max_len
        self.item = nn.Embedding(n_items + 1, p.hidden_size, padding_idx=n_items)
        self.pos = nn.Embedding(max_len, p.hidden_size)
        self.drop = nn.Dropout(p.dropout)
        self.blocks = nn.ModuleList(_Block(p.hidden_size, p.num_heads, p.dropout) for _ in range(p.num_blocks))
        self.ln = nn.LayerNorm(p.hidden_size)
        for emb in (self.item, self.pos):
            nn.init.normal_(emb.weight, std=0.02)
        with torch.no_grad():
            self.item.weight[n_items].zero_()

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """(batch, t <= max_len) left-padded item ids -> (batch, t, hidden) outputs."""
        real = (seq != self.n_items).unsqueeze(-1)
        t = seq.shape[1]
        x = self.item(seq) * self.item.embedding_dim ** 0.5 + self.pos.weight[self.max_len - t:]
        x = self.drop(x) * real
        # a query sees the real items up to itself; a padding query sees only itself (no all-masked row)
        allowed = torch.ones(t, t, dtype=torch.bool).tril() & (real.transpose(1, 2) | torch.eye(t, dtype=torch.bool))
        for block in self.blocks:
            x = block(x, allowed.unsqueeze(1)) * real
        return self.ln(x)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Outputs (..., hidden) -> a score per catalogue item (..., n_items)."""
        return h @ self.item.weight[: self.n_items].T


def _pad(seqs: list[list[int]], length: int, pad: int) -> torch.Tensor:
    return torch.tensor([[pad] * (length - len(s)) + s[-length:] for s in seqs], dtype=torch.long)


def _batches(lengths: torch.Tensor, batch_size: int, g: torch.Generator) -> list[torch.Tensor]:
    """One epoch's batches of row indices: a random permutation cut into chunks of ``BUCKET`` batches, each
    chunk sorted by sequence length and cut into batches (rows of similar length: little padding to compute),
    and the batches in random order."""
    batches = []
    for chunk in torch.randperm(len(lengths), generator=g).split(batch_size * BUCKET):
        batches += chunk[torch.sort(lengths[chunk], stable=True).indices].split(batch_size)
    return [batches[i] for i in torch.randperm(len(batches), generator=g)]


def _train(model: SASRec, opt: torch.optim.Optimizer, inputs: torch.Tensor, labels: torch.Tensor,
           p: SasrecParams) -> None:
    lengths = (inputs != model.n_items).sum(1)
    shuffle = torch.Generator().manual_seed(p.seed)
    model.train()
    for _ in range(p.epochs):
        for batch in _batches(lengths, p.batch_size, shuffle):
            t = int(lengths[batch].max())
            y = labels[batch, -t:]
            real = y != IGNORE  # the loss (and the item scores) only where there is a next item
            loss = F.cross_entropy(model.logits(model(inputs[batch, -t:])[real]), y[real])
            opt.zero_grad()
            loss.backward()
            opt.step()


def rank(train: list[Interaction], rows: list[Interaction], n_items: int, p: SasrecParams,
         keep: Callable[[torch.Tensor], R], batch_rows: int = 256) -> list[R]:
    """Train SASRec on ``train``, then rank every item for each of ``rows`` by its score from the row's history
    (best first; ties: lower item id first, by a stable sort) and return ``keep(ranking)`` for each row."""
    seqs = [[*r.history, r.target] for r in train if r.history]
    max_len = max([len(s) - 1 for s in seqs] + [len(r.history) for r in rows] + [1])
    pad = n_items
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):  # the caller's global RNG state is restored afterwards
            torch.manual_seed(p.seed)  # initialisation and dropout
            model = SASRec(n_items, max_len, p)
            opt = torch.optim.Adam(model.parameters(), lr=p.learning_rate, foreach=True)  # (imports torch._dynamo)
            started = time.perf_counter()
            if seqs:
                inputs = _pad([s[:-1] for s in seqs], max_len, pad)  # position t predicts labels[t]
                _train(model, opt, inputs, _pad([s[1:] for s in seqs], max_len, IGNORE), p)
            console.print(f"sasrec: trained {p.epochs} epochs on {len(seqs)} rows in "
                          f"{time.perf_counter() - started:.1f} s")
        model.eval()
        out = []
        with torch.no_grad():
            for start in range(0, len(rows), batch_rows):
                histories = _pad([list(r.history) for r in rows[start:start + batch_rows]], max_len, pad)
                scores = model.logits(model(histories)[:, -1])
                out += [keep(ranking) for ranking in torch.sort(scores, dim=1, descending=True, stable=True).indices]
        return out
    finally:
        torch.set_num_threads(threads)
