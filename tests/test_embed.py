"""Item embeddings: the text users' items become, the encoder, the cache and the .npy route."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from harness.data.schema import Item
from harness.embed.encoder import pool, resolve_model
from harness.embed.stage import embed_items, load_npy
from harness.embed.text import MAX_DESCRIPTION_CHARS, item_text
from harness.errors import HarnessError
from harness.params import EmbedParams


def _item(i: int, title: str = "", description: str = "") -> Item:
    return Item(id=i, title=title, description=description)


def test_item_text_parses_list_descriptions_strips_html_and_cuts_long_fields():
    it = _item(0, "Digital &amp; Caliper", "['Stainless <b>steel</b>', '0-150 mm\\n range']")
    assert item_text(it) == "Digital & Caliper. Stainless steel 0-150 mm range"
    long = item_text(_item(1, "Tape", "x" * 5000))
    assert long == "Tape. " + "x" * MAX_DESCRIPTION_CHARS  # cut, never emptied (upstream blanks it, H16)
    assert item_text(_item(2, "", "")) == "unknown item"
    # a description that merely looks like a list is text, never evaluated
    assert item_text(_item(3, "T", "[__import__('os').system('echo hi')]")) == "T. [__import__('os').system('echo hi')]"


def test_last_token_pooling_respects_padding_side():
    hidden = torch.arange(2 * 4 * 1, dtype=torch.float32).reshape(2, 4, 1)
    right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    assert pool(hidden, right, "last", left_padded=False).flatten().tolist() == [1.0, 7.0]
    left = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert pool(hidden, left, "last", left_padded=True).flatten().tolist() == [3.0, 7.0]
    assert pool(hidden, right, "mean", left_padded=False).flatten().tolist() == [0.5, 5.5]


@pytest.fixture(scope="module")
def items(small_synthetic):
    return small_synthetic[0].items[:24]


def test_minilm_matches_sentence_transformers(items):
    from sentence_transformers import SentenceTransformer

    ours, meta = embed_items(items, EmbedParams(cache=False), show_progress=False)
    ref = SentenceTransformer(str(resolve_model("minilm")), device="cpu").encode(
        [item_text(it) for it in items], normalize_embeddings=True, convert_to_numpy=True)
    assert ours.shape == (24, 384) and ours.dtype == np.float32
    assert np.abs(ours - ref).max() < 1e-5
    assert meta["pooling"] == "mean" and len(meta["model_sha256"]) == 64


def test_cache_hits_on_same_model_settings_and_texts_only(items, monkeypatch):
    import harness.embed.encoder as encoder

    first, meta = embed_items(items, EmbedParams(), show_progress=False)
    calls = []
    real = encoder.encode
    monkeypatch.setattr(encoder, "encode", lambda *a, **k: calls.append(1) or real(*a, **k))
    again, meta2 = embed_items(items, EmbedParams(), show_progress=False)
    assert calls == [] and np.array_equal(first, again) and meta2["cache_key"] == meta["cache_key"]
    _, other = embed_items(items, EmbedParams(pooling="cls"), show_progress=False)  # another setting: a miss
    assert len(calls) == 1 and other["cache_key"] != meta["cache_key"]
    changed = [replace(items[0], title=items[0].title + " v2"), *items[1:]]
    _, third = embed_items(changed, EmbedParams(), show_progress=False)  # another text: a miss
    assert len(calls) == 2 and third["texts_sha256"] != meta["texts_sha256"]


def test_npy_route_checks_shape_values_and_never_unpickles(tmp_path, items):
    good = tmp_path / "Toy.emb-qwen-td.npy"
    np.save(good, np.ones((len(items), 8), dtype=np.float16))
    arr, meta = embed_items(items, EmbedParams(npy=str(good)), show_progress=False)
    assert arr.dtype == np.float32 and arr.shape == (24, 8) and meta["source"] == "npy"
    short = tmp_path / "short.npy"
    np.save(short, np.ones((3, 8)))
    with pytest.raises(HarnessError, match=r"short\.npy: 3 rows for 24 items"):
        load_npy(short, 24)
    nan = tmp_path / "nan.npy"
    bad = np.ones((24, 8))
    bad[5, 2] = np.nan
    np.save(nan, bad)
    with pytest.raises(HarnessError, match=r"nan\.npy: row 5"):
        load_npy(nan, 24)
    pickled = tmp_path / "obj.npy"
    np.save(pickled, np.array([{"a": 1}] * 24, dtype=object), allow_pickle=True)
    with pytest.raises(HarnessError, match=r"obj\.npy: holds pickled Python objects, which are never loaded"):
        load_npy(pickled, 24)


def test_unknown_model_is_refused_without_download(tmp_path, items):
    with pytest.raises(HarnessError, match="neither 'minilm' nor a local model directory"):
        embed_items(items, EmbedParams(model="Qwen/Qwen3-Embedding-4B"), show_progress=False)
