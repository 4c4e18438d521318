"""Readers and writers of upstream's formats, on the real Industrial files and on planted defects."""

from __future__ import annotations

import filecmp
import json

import pytest

from harness.data.upstream_format import read_upstream_dir, write_upstream_dir
from harness.errors import DataFormatError
from harness.sid.quality import sid_quality
from tests.conftest import CATEGORY

CSV_NAME = "Toy_5_2016-10-2018-11.csv"


def test_real_industrial_counts(shared_amazon):
    ds, findings = read_upstream_dir(shared_amazon, CATEGORY)
    assert findings == {}
    assert len(ds.items) == 3686
    assert len(ds.split("valid")) == 4532 and len(ds.split("test")) == 4533
    assert ds.split("train") == []  # the train CSV is not in the export
    assert all(1 <= len(r.history) <= 10 for r in ds.interactions)
    s = sid_quality(ds.sid_index, ds.items)
    # figures measured on the shipped index (docs/hazards.md H9)
    assert s["unique_sids"] == 3670
    assert s["codes_used_per_level"] == [48, 256, 256]
    assert s["colliding_items"] == 31


def test_real_industrial_round_trip_is_byte_identical(shared_amazon, tmp_path):
    ds, _ = read_upstream_dir(shared_amazon, CATEGORY)
    write_upstream_dir(ds, tmp_path, CATEGORY, ds.sid_index)
    for sub in ("valid", "test", "info", "index"):
        for f in sorted((shared_amazon / sub).glob(f"{CATEGORY}*")):  # the dir also holds other categories
            assert filecmp.cmp(f, tmp_path / sub / f.name, shallow=False), f"{sub}/{f.name} differs"
    again, _ = read_upstream_dir(tmp_path, CATEGORY)
    assert again.interactions == ds.interactions and again.items == ds.items and again.sid_index == ds.sid_index


def test_small_round_trip(upstream_dir, small_synthetic):
    ds, index = small_synthetic
    back, findings = read_upstream_dir(upstream_dir, "Toy")
    assert findings == {}
    assert [(r.user, r.history, r.target, r.split) for r in back.interactions] == [
        (r.user, r.history, r.target, r.split) for r in ds.interactions
    ]
    assert back.sid_index == index


def _edit_csv_line(path, line_no, fn):
    lines = path.read_text(encoding="utf-8").split("\n")
    lines[line_no - 1] = fn(lines[line_no - 1])
    path.write_text("\n".join(lines), encoding="utf-8")


def _error(upstream_dir, **kw) -> DataFormatError:
    with pytest.raises(DataFormatError) as e:
        read_upstream_dir(upstream_dir, "Toy", **kw)
    return e.value


def test_malformed_row_names_file_and_line(upstream_dir):
    csv_path = upstream_dir / "test" / CSV_NAME
    _edit_csv_line(csv_path, 3, lambda s: s + ",extra")
    err = _error(upstream_dir)
    assert err.path == str(csv_path) and err.line == 3 and "fields" in err.detail


def test_unknown_item_id(upstream_dir):
    csv_path = upstream_dir / "valid" / CSV_NAME
    _edit_csv_line(csv_path, 2, lambda s: _set_field(s, 4, "9999"))
    err = _error(upstream_dir)
    assert err.line == 2 and "unknown item id 9999" in err.detail


def _set_field(line: str, col: int, value: str) -> str:
    import csv
    import io

    rec = next(csv.reader([line]))
    rec[col] = value
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(rec)
    return buf.getvalue()[:-1]


def test_sid_mismatch_is_error_or_counted_finding(upstream_dir):
    csv_path = upstream_dir / "test" / CSV_NAME
    _edit_csv_line(csv_path, 4, lambda s: _set_field(s, 6, "<a_0><b_0><c_99>"))
    err = _error(upstream_dir)
    assert err.line == 4 and "SID differs" in err.detail
    _, findings = read_upstream_dir(upstream_dir, "Toy", lenient={"sid_mismatch"})
    assert findings == {"sid_mismatch": 1}


def test_title_mismatch_is_error_or_counted_finding(upstream_dir):
    csv_path = upstream_dir / "valid" / CSV_NAME
    _edit_csv_line(csv_path, 2, lambda s: _set_field(s, 2, "A different title"))
    err = _error(upstream_dir)
    assert err.line == 2 and "title differs" in err.detail
    _, findings = read_upstream_dir(upstream_dir, "Toy", lenient={"title_mismatch"})
    assert findings == {"title_mismatch": 1}


def test_missing_column_is_line_1(upstream_dir):
    csv_path = upstream_dir / "train" / CSV_NAME
    _edit_csv_line(csv_path, 1, lambda s: s.replace(",item_sid", ""))
    err = _error(upstream_dir)
    assert err.path == str(csv_path) and err.line == 1 and "item_sid" in err.detail


def test_broken_json_reports_line(upstream_dir):
    item_json = upstream_dir / "index" / "Toy.item.json"
    lines = item_json.read_text().split("\n")
    assert lines[8].startswith('    "title"') and lines[8].endswith(",")
    lines[8] = lines[8].rstrip(",")  # drop the comma after item 1's title (physical line 9)
    item_json.write_text("\n".join(lines))
    err = _error(upstream_dir)
    assert err.path == str(item_json) and err.line == 10 and "broken JSON" in err.detail


def test_bad_sid_value_in_index_json_names_line_1(upstream_dir):
    index_json = upstream_dir / "index" / "Toy.index.json"
    obj = json.loads(index_json.read_text())
    obj["5"] = ["<a_1>", "<c_2>", "<b_3>"]
    index_json.write_text(json.dumps(obj))
    err = _error(upstream_dir)
    assert err.line == 1 and "item 5" in err.detail


def test_code_in_a_list_field_is_rejected_not_run(upstream_dir, tmp_path):
    marker = tmp_path / "PWNED"
    csv_path = upstream_dir / "test" / CSV_NAME
    payload = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    _edit_csv_line(csv_path, 2, lambda s: _set_field(s, 3, payload))
    err = _error(upstream_dir)
    assert err.line == 2 and "history_item_id" in err.detail
    assert not marker.exists()


def test_multiline_quoted_field_keeps_physical_line_numbers(upstream_dir):
    """A title with an embedded newline spans two physical lines; later errors must count both."""
    csv_path = upstream_dir / "test" / CSV_NAME
    _edit_csv_line(csv_path, 2, lambda s: _set_field(s, 0, "user\nsplit"))
    _edit_csv_line(csv_path, 4, lambda s: s + ",extra")  # physical line 4 = record 3 after the split row
    err = _error(upstream_dir)
    assert err.line == 4


def test_info_txt_wrong_field_count_and_title_mismatch(upstream_dir):
    info = upstream_dir / "info" / "Toy_5_2016-10-2018-11.txt"
    lines = info.read_text().split("\n")
    sid, title, iid = lines[2].split("\t")
    lines[2] = "\t".join([sid, "Another title", iid])
    info.write_text("\n".join(lines))
    err = _error(upstream_dir)
    assert err.path == str(info) and err.line == 3 and "title differs" in err.detail
    lines[2] = f"{sid}\t{iid}"
    info.write_text("\n".join(lines))
    err = _error(upstream_dir)
    assert err.line == 3 and "3 tab-separated fields" in err.detail


def test_invalid_utf8_names_the_line(upstream_dir):
    info = upstream_dir / "info" / "Toy_5_2016-10-2018-11.txt"
    raw = info.read_bytes().split(b"\n")
    raw[4] = raw[4] + b"\xff\xfe"
    info.write_bytes(b"\n".join(raw))
    err = _error(upstream_dir)
    assert err.path == str(info) and err.line == 5 and "UTF-8" in err.detail
