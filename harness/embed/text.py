"""Item text for the embedding model: title + cleaned description.

Upstream stores descriptions as the string form of a Python list (``"['...']"``). The harness parses that
string as a literal and never evaluates it, then joins the parts. HTML entities are decoded. Tags and runs of
whitespace are removed.

Descriptions are cut to ``MAX_DESCRIPTION_CHARS`` characters. Two reasons:
- MiniLM reads at most 256 word pieces, so a longer text changes nothing;
- the cut keeps the text of very long items, where upstream empties any field of 2000 characters or more
  (H16, docs/hazards.md).

An item with neither title nor description becomes ``unknown item``, as upstream.
"""

from __future__ import annotations

import ast
import html
import re

from harness.data.schema import Item

MAX_DESCRIPTION_CHARS = 1000
EMPTY_TEXT = "unknown item"
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
    text = f"{title}. {desc}" if title and desc else title or desc
    return text or EMPTY_TEXT
