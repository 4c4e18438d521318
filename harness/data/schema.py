"""The canonical dataset every later stage reads, whatever the source (synthetic or upstream files).

On disk (``data/dataset/``): ``items.jsonl`` (one item per line, ids 0..N-1 in order),
``interactions.jsonl`` (one sample per line), ``sid_index.json`` when the source shipped SIDs,
and ``summary.json``.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness.errors import DataFormatError
from harness.io import write_json, write_text

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class Item:
    id: int
    title: str
    description: str = ""
    brand: str = ""
    category: str = ""


@dataclass(frozen=True)
class Interaction:
    """One next-item sample: the history (oldest first, at most ``max_history``) and its target."""

    user: str
    history: tuple[int, ...]
    target: int
    split: str
    timestamp: int | None = None


@dataclass
class Dataset:
    name: str
    items: list[Item]
    interactions: list[Interaction]
    sid_index: dict[int, list[str]] | None = None
    meta: dict = field(default_factory=dict)

    def split(self, name: str) -> list[Interaction]:
        return [r for r in self.interactions if r.split == name]

    def summary(self) -> dict:
        counts = Counter(r.split for r in self.interactions)
        per_split = {}
        for s in SPLITS:
            rows = self.split(s)
            per_split[s] = {
                "rows": counts.get(s, 0),
                "users": len({r.user for r in rows}),
                "target_items": len({r.target for r in rows}),
                "mean_history": round(sum(len(r.history) for r in rows) / len(rows), 4) if rows else 0.0,
            }
        return {
            "name": self.name,
            "items": len(self.items),
            "interactions": len(self.interactions),
            "has_timestamps": any(r.timestamp is not None for r in self.interactions),
            "has_shipped_sids": self.sid_index is not None,
            "splits": per_split,
            **self.meta,
        }


# Keys Dataset.summary() computes itself; every other summary key is source metadata.
SUMMARY_KEYS = frozenset({"name", "items", "interactions", "has_timestamps", "has_shipped_sids", "splits"})
ITEMS_FILE = "items.jsonl"
INTERACTIONS_FILE = "interactions.jsonl"
SID_INDEX_FILE = "sid_index.json"
SUMMARY_FILE = "summary.json"


def write_dataset(ds: Dataset, out_dir: Path) -> None:
    """Write the canonical files into ``out_dir`` (the caller makes the directory atomic)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text(out_dir / ITEMS_FILE, "".join(json.dumps(asdict(it), ensure_ascii=False) + "\n" for it in ds.items))
    lines = []
    for r in ds.interactions:
        d = asdict(r)
        d["history"] = list(r.history)
        lines.append(json.dumps(d, ensure_ascii=False) + "\n")
    write_text(out_dir / INTERACTIONS_FILE, "".join(lines))
    if ds.sid_index is not None:
        write_json(out_dir / SID_INDEX_FILE, {str(k): v for k, v in sorted(ds.sid_index.items())}, indent=None)
    write_json(out_dir / SUMMARY_FILE, ds.summary())


def _jsonl(path: Path):
    try:
        fh = path.open(encoding="utf-8")
    except FileNotFoundError:
        raise DataFormatError(path, 1, "file not found") from None
    with fh:
        for n, line in enumerate(fh, 1):
            try:
                yield n, json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise DataFormatError(path, n, f"invalid JSON line: {e}") from None


def read_dataset(in_dir: Path) -> Dataset:
    """Read and check the canonical files written by :func:`write_dataset`."""
    in_dir = Path(in_dir)
    items: list[Item] = []
    path = in_dir / ITEMS_FILE
    for n, d in _jsonl(path):
        try:
            it = Item(**d)
        except TypeError as e:
            raise DataFormatError(path, n, f"bad item record: {e}") from None
        if not isinstance(it.id, int) or it.id != len(items) or not isinstance(it.title, str):
            raise DataFormatError(path, n, f"item ids must be 0..N-1 in order with a string title; got id {it.id!r}")
        items.append(it)
    n_items = len(items)
    rows: list[Interaction] = []
    path = in_dir / INTERACTIONS_FILE
    for n, d in _jsonl(path):
        try:
            r = Interaction(
                user=str(d["user"]),
                history=tuple(int(x) for x in d["history"]),
                target=int(d["target"]),
                split=d["split"],
                timestamp=d.get("timestamp"),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise DataFormatError(path, n, f"bad interaction record: {e}") from None
        if r.split not in SPLITS:
            raise DataFormatError(path, n, f"unknown split {r.split!r}")
        for i in (*r.history, r.target):
            if not 0 <= i < n_items:
                raise DataFormatError(path, n, f"unknown item id {i}")
        rows.append(r)
    sid_index = None
    sid_path = in_dir / SID_INDEX_FILE
    if sid_path.exists():
        from harness.sid.index import read_index_json

        sid_index = read_index_json(sid_path, n_items)
    summary = json.loads((in_dir / SUMMARY_FILE).read_text(encoding="utf-8")) if (in_dir / SUMMARY_FILE).exists() else {}
    meta = {k: v for k, v in summary.items() if k not in SUMMARY_KEYS}
    return Dataset(name=summary.get("name", in_dir.name), items=items, interactions=rows, sid_index=sid_index, meta=meta)
