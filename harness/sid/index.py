"""The SID index contract: ``index.json`` maps each item id to its SID tokens (upstream's format,
``{"0": ["<a_1>", "<b_2>", "<c_3>"], ...}``). Every stage reads and writes it through this module; the token
spelling itself is in :mod:`harness.sid.tokens`."""

from __future__ import annotations

import json
from pathlib import Path

from harness.errors import DataFormatError
from harness.io import int_key, load_json_object, write_text
from harness.sid.tokens import TOKEN_RE, level_letter


def check_sid_tokens(tokens, where: str, path: Path, line: int) -> list[str]:
    if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) for t in tokens):
        raise DataFormatError(path, line, f"{where}: SID must be a non-empty list of token strings")
    for level, tok in enumerate(tokens):
        m = TOKEN_RE.match(tok)
        if not m or m.group(1) != level_letter(level):
            raise DataFormatError(
                path, line, f"{where}: token {tok!r} at level {level} is not of the form <{level_letter(level)}_N>"
            )
    return tokens


def read_index_json(path: Path, n_items: int | None = None) -> dict[int, list[str]]:
    obj, lines = load_json_object(path)
    index: dict[int, list[str]] = {}
    for key, tokens in obj.items():
        line = lines.get(key, 1)
        iid = int_key(key, path, line)
        if n_items is not None and iid >= n_items:
            raise DataFormatError(path, line, f"item id {iid} is not in the catalogue (N={n_items})")
        index[iid] = check_sid_tokens(tokens, f"item {key}", path, line)
    return index


def write_index_json(path: Path, index: dict[int, list[str]]) -> None:
    write_text(path, json.dumps({str(k): v for k, v in sorted(index.items())}))
