"""Where each audited row and item sits on disk, as ``"path:line"`` (1-based, the line an editor shows).

A row-level finding names the locations of its first rows (``findings.json``: ``locations``). For the
pipeline's canonical dataset a row is line i + 1 of ``interactions.jsonl`` (``write_dataset`` writes one
interaction per line, in order) and an item is line id + 1 of ``items.jsonl``. For an upstream-format dir a row
is the line its record starts on in its split CSV (header = line 1, as the readers' errors count) and an item is
the line of its key in ``item.json``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from harness.data.schema import INTERACTIONS_FILE, ITEMS_FILE, SPLITS, Dataset
from harness.io import _TOP_KEY_RE, read_utf8

FIRST = 5  # locations kept per finding


@dataclass(frozen=True)
class Locations:
    rows: dict[str, list[str]]  # split -> one location per row of ``ds.split(split)``, in order
    items: dict[int, str]  # item id -> location


def first(locations: list[str], n: int = FIRST) -> list[str]:
    """The first ``n`` distinct locations, in order."""
    return list(dict.fromkeys(locations))[:n]


def canonical(ds: Dataset, dataset_dir: str | Path | None) -> Locations:
    """The canonical files' lines; without a directory (an in-memory dataset) the bare file names, i.e. where
    ``write_dataset`` puts each row."""
    base = Path(dataset_dir) if dataset_dir is not None else None
    inter = str(base / INTERACTIONS_FILE) if base is not None else INTERACTIONS_FILE
    items = str(base / ITEMS_FILE) if base is not None else ITEMS_FILE
    rows: dict[str, list[str]] = {s: [] for s in SPLITS}
    for n, r in enumerate(ds.interactions, 1):
        rows[r.split].append(f"{inter}:{n}")
    return Locations(rows, {it.id: f"{items}:{it.id + 1}" for it in ds.items})


def _record_lines(path: Path) -> list[int]:
    """The 1-based line each data record of a CSV starts on (read_split_csv's numbering)."""
    out = []
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        next(reader, None)
        last = reader.line_num
        for _ in reader:
            out.append(last + 1)
            last = reader.line_num
    return out


def _key_lines(path: Path) -> dict[str, int]:
    """Each top-level key's line, as ``harness.io.load_json_object`` finds it (same pattern), in one pass."""
    text = read_utf8(path)
    lines: dict[str, int] = {}
    if "\n" not in text.strip():
        return lines
    pos, line = 0, 1
    for m in _TOP_KEY_RE.finditer(text):
        line += text.count("\n", pos, m.start())
        pos = m.start()
        lines.setdefault(m.group(1), line)
    return lines


def upstream(ds: Dataset, data_dir: str | Path, category: str) -> Locations:
    """Lines in the upstream files ``read_upstream_dir`` read ``ds`` from (``ds.meta['upstream_files']``)."""
    d = Path(data_dir)
    rows: dict[str, list[str]] = {}
    for split, name in ds.meta.get("upstream_files", {}).items():
        path = d / split / name
        lines = _record_lines(path)
        if len(lines) != len(ds.split(split)):  # read_split_csv keeps one row per record; never expected
            raise RuntimeError(f"{path}: {len(lines)} CSV records but {len(ds.split(split))} rows were read")
        rows[split] = [f"{path}:{n}" for n in lines]
    item_json = next((d / "index").glob(f"{category}.item.json"))
    key_lines = _key_lines(item_json)
    return Locations(rows, {it.id: f"{item_json}:{key_lines.get(str(it.id), 1)}" for it in ds.items})
