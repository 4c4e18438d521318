"""Atomic writers: an output is either complete or absent, never half written."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

_TOP_KEY_RE = re.compile(r'^\s*"((?:[^"\\]|\\.)*)"\s*:\s*[\[{]', re.MULTILINE)


def read_utf8(path: str | Path) -> str:
    """A text file's content; a missing file or a bad byte is a DataFormatError naming file and line."""
    from harness.errors import DataFormatError

    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataFormatError(path, 1, "file not found") from None
    except IsADirectoryError:
        raise DataFormatError(path, 1, "is a directory, not a file") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataFormatError(path, raw[: e.start].count(b"\n") + 1, "not valid UTF-8") from None


def read_json(path: str | Path) -> Any:
    """A JSON file's value; broken JSON is a DataFormatError naming file and line (never a traceback)."""
    from harness.errors import DataFormatError

    try:
        return json.loads(read_utf8(path))
    except json.JSONDecodeError as e:
        raise DataFormatError(path, e.lineno, f"broken JSON: {e.msg}") from None


def load_json_object(path: Path) -> tuple[dict, dict[str, int]]:
    """Load a JSON object, rejecting duplicate keys; return it with each top-level key's line."""
    from harness.errors import DataFormatError

    text = read_utf8(path)
    if not text.strip():
        raise DataFormatError(path, 1, "empty file")

    def no_dupes(pairs):
        seen = {}
        for k, v in pairs:
            if k in seen:
                raise ValueError(f"duplicate key {k!r}")
            seen[k] = v
        return seen

    try:
        obj = json.loads(text, object_pairs_hook=no_dupes)
    except json.JSONDecodeError as e:
        raise DataFormatError(path, e.lineno, f"broken JSON: {e.msg}") from None
    except ValueError as e:
        key = str(e).split("duplicate key ", 1)[-1].strip("'\"")
        return _raise_at_key(path, text, key, str(e))
    if not isinstance(obj, dict):
        raise DataFormatError(path, 1, "top level must be a JSON object")
    lines: dict[str, int] = {}
    if "\n" in text.strip():
        line, at = 1, 0  # one pass: each key's line counted on from the previous key's
        for m in _TOP_KEY_RE.finditer(text):
            line += text.count("\n", at, m.start())
            at = m.start()
            lines.setdefault(m.group(1), line)
    return obj, lines


def _raise_at_key(path: Path, text: str, key: str, message: str) -> NoReturn:
    from harness.errors import DataFormatError

    m = re.search(r'"' + re.escape(key) + r'"\s*:', text)
    line = text.count("\n", 0, m.start()) + 1 if m else 1
    raise DataFormatError(path, line, message)


def int_key(key: str, path: Path, line: int) -> int:
    """An item-id key of a JSON object: a non-negative integer written without leading zeros."""
    from harness.errors import DataFormatError

    if not re.fullmatch(r"0|[1-9]\d*", key):
        raise DataFormatError(path, line, f"item id key {key!r} is not a non-negative integer")
    return int(key)


def _tmp_sibling(path: Path, is_dir: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if is_dir:
        return Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(name)


def write_text(path: str | Path, text: str) -> None:
    """Write text via a temporary sibling file and an atomic rename."""
    path = Path(path)
    tmp = _tmp_sibling(path, is_dir=False)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def dumps_json(obj: Any, indent: int | None = 2) -> str:
    """Deterministic JSON text (sorted keys only where the caller sorts; no NaN allowed)."""
    return json.dumps(obj, indent=indent, ensure_ascii=False, allow_nan=False) + "\n"


class JsonListWriter:
    """A JSON list written element by element, byte-identical to ``dumps_json(the_list, indent)``: a long list
    of results goes to disk as it is produced instead of being held in memory. Write into a temporary
    location (``atomic_dir``); the file is complete only after ``close``."""

    def __init__(self, fh, indent: int | None = 2):
        self.fh, self.indent, self.count = fh, indent, 0

    def add(self, obj: Any) -> None:
        text = json.dumps(obj, indent=self.indent, ensure_ascii=False, allow_nan=False)
        if self.indent is None:
            self.fh.write(("[" if self.count == 0 else ", ") + text)
        else:  # JSON strings hold no raw newline, so every newline is a line of the element's layout
            pad = " " * self.indent
            self.fh.write(("[\n" if self.count == 0 else ",\n") + pad + text.replace("\n", "\n" + pad))
        self.count += 1

    def close(self) -> None:
        end = "[]" if self.count == 0 else ("]" if self.indent is None else "\n]")
        self.fh.write(end + "\n")


def write_json(path: str | Path, obj: Any, indent: int | None = 2) -> None:
    write_text(path, dumps_json(obj, indent=indent))


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``path`` only if the block succeeds."""
    path = Path(path)
    tmp = _tmp_sibling(path, is_dir=True)
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def merge_into(src: Path, dest: Path) -> None:
    """Move every entry of ``src`` into ``dest`` (created if needed), replacing same-named entries only."""
    dest.mkdir(parents=True, exist_ok=True)
    for entry in sorted(src.iterdir()):
        target = dest / entry.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(entry, target)


def write_npy(path: str | Path, arr: Any) -> None:
    """np.save via a temporary sibling and an atomic rename (no pickles)."""
    import numpy as np

    path = Path(path)
    tmp = _tmp_sibling(path, is_dir=False)
    try:
        with tmp.open("wb") as f:
            np.save(f, arr, allow_pickle=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
