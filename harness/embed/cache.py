"""Embedding cache keyed by what decides the vectors: the model's files, the pooling settings and the texts.

Encoding Industrial's 3,686 items with MiniLM takes about a minute on two CPU cores, and much longer with a
4B encoder. Every SID ablation starts from the same vectors, so they are stored once under
``$HARNESS_CACHE_DIR`` (default ``~/.cache/minionerec-audit``)/embeddings/<key>.npy. The key hashes the
content of every model file, not only its path: a re-trained model in the same folder misses the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from harness.io import write_json, write_npy


def cache_root() -> Path:
    return Path(os.environ.get("HARNESS_CACHE_DIR", "~/.cache/minionerec-audit")).expanduser() / "embeddings"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def model_fingerprint(model_dir: Path) -> str:
    """sha256 over (relative path, content sha256) of every file; memoised by (size, mtime) per file."""
    files = sorted(p for p in model_dir.rglob("*") if p.is_file() and ".git" not in p.parts)
    stat_sig = hashlib.sha256(json.dumps(
        [[str(p.relative_to(model_dir)), p.stat().st_size, p.stat().st_mtime_ns] for p in files]).encode()).hexdigest()
    memo_path = cache_root() / "model_fingerprints.json"
    memo = {}
    if memo_path.is_file():
        try:
            memo = json.loads(memo_path.read_text(encoding="utf-8"))
        except (ValueError, OSError):
            memo = {}  # a damaged memo only costs a re-hash
    entry = memo.get(str(model_dir.resolve()))
    if isinstance(entry, dict) and entry.get("stat") == stat_sig:
        return entry["sha256"]
    h = hashlib.sha256()
    for p in files:
        h.update(f"{p.relative_to(model_dir)}\0{file_sha256(p)}\n".encode())
    fp = h.hexdigest()
    memo[str(model_dir.resolve())] = {"stat": stat_sig, "sha256": fp}
    memo_path.parent.mkdir(parents=True, exist_ok=True)
    write_json(memo_path, memo)
    return fp


def texts_sha256(texts: list[str]) -> str:
    return hashlib.sha256(json.dumps(texts, ensure_ascii=False).encode("utf-8")).hexdigest()


def cache_key(**parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def load(key: str, n_rows: int) -> np.ndarray | None:
    path = cache_root() / f"{key}.npy"
    if not path.is_file():
        return None
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError):
        return None  # a damaged entry is recomputed
    return arr if arr.ndim == 2 and len(arr) == n_rows else None


def store(key: str, arr: np.ndarray) -> None:
    write_npy(cache_root() / f"{key}.npy", arr)
