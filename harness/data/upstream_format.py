"""Readers and writers for upstream MiniOneRec's file formats (docs/hazards.md §2).

Layout under a data dir ``DIR`` for a category ``CAT``::

    DIR/{train,valid,test}/CAT*.csv     # any may be absent
    DIR/info/CAT*.txt                   # SID<TAB>title<TAB>item_id, one line per item
    DIR/index/CAT.index.json            # {"<id>": ["<a_i>", "<b_j>", ...]}
    DIR/index/CAT.item.json             # {"<id>": {title, description, brand, categories}}

Every inconsistency is a :class:`DataFormatError` naming the file and the 1-based physical line
(CSV header = line 1; a single-line JSON file is line 1). List columns are parsed with
``ast.literal_eval`` and type-checked, so a field holding code is rejected, never run.
"""

from __future__ import annotations

import ast
import csv
import json
import re
from collections import Counter
from pathlib import Path

from harness.data.schema import SPLITS, Dataset, Interaction, Item
from harness.errors import DataFormatError
from harness.io import int_key, load_json_object, read_utf8, write_text
from harness.sid.index import read_index_json, write_index_json

CSV_COLUMNS = (
    "user_id",
    "history_item_title",
    "item_title",
    "history_item_id",
    "item_id",
    "history_item_sid",
    "item_sid",
)
# Upstream's convert_dataset.py hard-codes this suffix whatever the real window was (docs/hazards.md §1.4).
UPSTREAM_SUFFIX = "_5_2016-10-2018-11"

csv.field_size_limit(10_000_000)


class ConsistencyCounter:
    """Counts the inconsistency classes a user chose to treat as findings instead of errors, and keeps where
    the first ``keep`` of each class are, as ``"path:line"`` (the 1-based physical line the error would name)."""

    keep = 5

    def __init__(self, lenient: set[str]):
        self.lenient = set(lenient)
        self.counts: Counter[str] = Counter()
        self.locations: dict[str, list[str]] = {}

    def check(self, ok: bool, cls: str, path: Path, line: int, message: str) -> None:
        if ok:
            return
        if cls in self.lenient:
            self.counts[cls] += 1
            first = self.locations.setdefault(cls, [])
            if len(first) < self.keep:
                first.append(f"{path}:{line}")
            return
        raise DataFormatError(path, line, f"{message} (class '{cls}'; see data.upstream.lenient)")


# ------------------------------------------------------------------ item.json
def read_item_json(path: Path) -> list[Item]:
    obj, lines = load_json_object(path)
    items: dict[int, Item] = {}
    for key, rec in obj.items():
        line = lines.get(key, 1)
        iid = int_key(key, path, line)
        if not isinstance(rec, dict):
            raise DataFormatError(path, line, f"item {key}: value must be an object")
        title = rec.get("title")
        if not isinstance(title, str):
            raise DataFormatError(path, line, f"item {key}: 'title' missing or not a string")
        fields = {}
        for f in ("description", "brand", "categories"):
            v = rec.get(f, "")
            if not isinstance(v, str):
                raise DataFormatError(path, line, f"item {key}: '{f}' must be a string")
            fields[f] = v
        items[iid] = Item(iid, title, fields["description"], fields["brand"], fields["categories"])
    ids = sorted(items)
    if ids != list(range(len(ids))):
        missing = next(i for i in range(len(ids) + 1) if i not in items)
        raise DataFormatError(path, 1, f"item ids must be contiguous 0..N-1; id {missing} is missing")
    return [items[i] for i in ids]


def write_item_json(path: Path, items: list[Item]) -> None:
    obj = {
        str(it.id): {"title": it.title, "description": it.description, "brand": it.brand, "categories": it.category}
        for it in items
    }
    write_text(path, json.dumps(obj, indent=2))  # ASCII-escaped, as upstream writes it


# ------------------------------------------------------------------ info txt
def read_info_txt(path: Path, items: list[Item], index: dict[int, list[str]], counter: ConsistencyCounter) -> int:
    """Check the info file against item.json and index.json; return its line count."""
    lines = read_utf8(path).split("\n")
    if lines[-1] == "":
        lines.pop()  # the final newline ends the last line; it does not start another
    if not lines:
        raise DataFormatError(path, 1, "empty file")
    for n, line in enumerate(lines, 1):
        parts = line.split("\t")
        if len(parts) != 3:
            raise DataFormatError(path, n, f"expected 3 tab-separated fields (SID, title, item_id), got {len(parts)}")
        sid, title, sid_item = parts
        if not re.fullmatch(r"0|[1-9]\d*", sid_item) or int(sid_item) >= len(items):
            raise DataFormatError(path, n, f"item_id {sid_item!r} is not a catalogue id")
        iid = int(sid_item)
        if iid not in index:
            raise DataFormatError(path, n, f"item {iid} has no SID in index.json")
        counter.check(sid == "".join(index[iid]), "sid_mismatch", path, n,
                      f"item {iid}: SID {sid!r} differs from index.json {''.join(index[iid])!r}")
        counter.check(title == items[iid].title, "title_mismatch", path, n,
                      f"item {iid}: title differs from item.json")
    return len(lines)


def write_info_txt(path: Path, items: list[Item], index: dict[int, list[str]]) -> None:
    write_text(path, "".join(f"{''.join(index[it.id])}\t{it.title}\t{it.id}\n" for it in items if it.id in index))


# ------------------------------------------------------------------ CSV
def parse_literal_list(text: str, elem_type: type, column: str, path: Path, line: int) -> list:
    """Parse a Python-literal list field without evaluating code; check its element type."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise DataFormatError(path, line, f"column '{column}': not a literal list: {text[:80]!r}") from None
    if not isinstance(value, list) or not all(type(v) is elem_type for v in value):
        raise DataFormatError(path, line, f"column '{column}': expected a list of {elem_type.__name__}")
    return value


def _int_field(text: str, column: str, path: Path, line: int) -> int:
    if not re.fullmatch(r"-?\d+", text.strip()):
        raise DataFormatError(path, line, f"column '{column}': {text[:40]!r} is not an integer")
    return int(text)


def read_split_csv(
    path: Path,
    split: str,
    items: list[Item],
    index: dict[int, list[str]],
    counter: ConsistencyCounter,
) -> list[Interaction]:
    rows: list[Interaction] = []
    try:
        fh = path.open(encoding="utf-8", newline="")
    except FileNotFoundError:
        raise DataFormatError(path, 1, "file not found") from None
    n_items = len(items)
    with fh:
        reader = csv.reader(fh)
        last = 0
        try:
            header = next(reader, None)
            if header is None:
                raise DataFormatError(path, 1, "empty file (no header)")
            missing = [c for c in CSV_COLUMNS if c not in header]
            if missing:
                raise DataFormatError(path, 1, f"missing column(s): {', '.join(missing)}")
            extra = [c for c in header if c not in CSV_COLUMNS]
            if extra or len(header) != len(CSV_COLUMNS):
                raise DataFormatError(path, 1, f"unexpected column(s): {', '.join(map(repr, extra)) or 'duplicates'}")
            col = {c: header.index(c) for c in CSV_COLUMNS}
            last = reader.line_num
            for rec in reader:
                line = last + 1
                last = reader.line_num
                if len(rec) != len(header):
                    raise DataFormatError(path, line, f"expected {len(header)} fields, got {len(rec)}")
                get = lambda c: rec[col[c]]  # noqa: E731
                user = get("user_id")
                if not user:
                    raise DataFormatError(path, line, "column 'user_id' is empty")
                target = _int_field(get("item_id"), "item_id", path, line)
                hist = parse_literal_list(get("history_item_id"), int, "history_item_id", path, line)
                titles = parse_literal_list(get("history_item_title"), str, "history_item_title", path, line)
                sids = parse_literal_list(get("history_item_sid"), str, "history_item_sid", path, line)
                if not hist:
                    raise DataFormatError(path, line, "column 'history_item_id': empty history")
                for iid in (*hist, target):
                    if not 0 <= iid < n_items:
                        raise DataFormatError(path, line, f"unknown item id {iid} (catalogue has {n_items} items)")
                if len(titles) != len(hist):
                    raise DataFormatError(path, line, "history_item_title and history_item_id differ in length")
                known = [i for i in hist if i in index]
                if len(sids) != len(known):
                    raise DataFormatError(path, line, "history_item_sid and history_item_id differ in length")
                if target not in index:
                    raise DataFormatError(path, line, f"target item {target} has no SID in index.json")
                counter.check(
                    get("item_sid") == "".join(index[target]) and sids == ["".join(index[i]) for i in known],
                    "sid_mismatch", path, line, "CSV SID differs from index.json",
                )
                counter.check(
                    get("item_title") == items[target].title and titles == [items[i].title for i in hist],
                    "title_mismatch", path, line, "CSV title differs from item.json",
                )
                rows.append(Interaction(user=user, history=tuple(hist), target=target, split=split))
        except csv.Error as e:
            raise DataFormatError(path, last + 1, f"malformed CSV: {e}") from None
        except UnicodeDecodeError:
            read_utf8(path)  # decodes the whole file and names the line of the first bad byte
            raise DataFormatError(path, last + 1, "not valid UTF-8") from None
    return rows


def write_split_csv(path: Path, rows: list[Interaction], items: list[Item], index: dict[int, list[str]]) -> None:
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for r in rows:
        if r.target not in index:
            continue  # upstream drops rows whose target has no SID
        hist = list(r.history)
        w.writerow([
            r.user,
            str([items[i].title for i in hist]),
            items[r.target].title,
            str(hist),
            r.target,
            str(["".join(index[i]) for i in hist if i in index]),
            "".join(index[r.target]),
        ])
    write_text(path, buf.getvalue())


# ------------------------------------------------------------------ directory level
def _find_one(dir_: Path, pattern: str, required: bool) -> Path | None:
    hits = sorted(dir_.glob(pattern))
    if not hits:
        if required:
            raise DataFormatError(dir_ / pattern, 1, "required file not found")
        return None
    if len(hits) > 1:
        raise DataFormatError(hits[1], 1, f"ambiguous: {len(hits)} files match {pattern!r} in {dir_}")
    return hits[0]


def read_upstream_dir(
    data_dir: str | Path, category: str, lenient: set[str] | frozenset[str] = frozenset(),
    *, locations: dict[str, list[str]] | None = None,
) -> tuple[Dataset, dict[str, int]]:
    """Read an upstream-format data dir into the canonical dataset; return it with lenient-finding counts.
    ``locations``, if given, is filled with the first ``"path:line"`` of each counted class (ConsistencyCounter)."""
    d = Path(data_dir)
    if not d.is_dir():
        raise DataFormatError(d, 1, "upstream data dir not found")
    counter = ConsistencyCounter(set(lenient))
    items = read_item_json(_find_one(d / "index", f"{category}.item.json", True))
    index = read_index_json(_find_one(d / "index", f"{category}.index.json", True), len(items))
    info = _find_one(d / "info", f"{category}*.txt", False)
    if info is not None:
        read_info_txt(info, items, index, counter)
    rows: list[Interaction] = []
    files = {}
    for split in SPLITS:
        p = _find_one(d / split, f"{category}*.csv", False)
        if p is not None and p.stat().st_size > 0:
            files[split] = p.name
            rows += read_split_csv(p, split, items, index, counter)
    if not rows:
        raise DataFormatError(d, 1, f"no non-empty split CSV for category {category!r}")
    ds = Dataset(name=category, items=items, interactions=rows, sid_index=index,
                 meta={"source": "upstream", "upstream_files": files})
    if locations is not None:
        locations.update(counter.locations)
    return ds, dict(counter.counts)


def write_upstream_dir(ds: Dataset, out_dir: str | Path, category: str, index: dict[int, list[str]]) -> None:
    """Write a dataset in upstream's layout (only the splits that have rows)."""
    out = Path(out_dir)
    for sub in ("index", "info", *SPLITS):
        (out / sub).mkdir(parents=True, exist_ok=True)
    write_item_json(out / "index" / f"{category}.item.json", ds.items)
    write_index_json(out / "index" / f"{category}.index.json", index)
    write_info_txt(out / "info" / f"{category}{UPSTREAM_SUFFIX}.txt", ds.items, index)
    for split in SPLITS:
        rows = ds.split(split)
        if rows:
            write_split_csv(out / split / f"{category}{UPSTREAM_SUFFIX}.csv", rows, ds.items, index)
