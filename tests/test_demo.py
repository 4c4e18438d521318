"""History in, Top-K out: ``harness recommend`` and the ``harness demo`` page (a test user's history and target,
two models side by side, the hit marked), the page also driven by headless Chromium, with a hostile item title
that must stay text."""

from __future__ import annotations

import html as html_lib
import json
import re
import subprocess
import sys
import threading
import urllib.parse
import urllib.request
from pathlib import Path

import markupsafe
import pytest

from harness.errors import HarnessError
from tests.conftest import TINY_MODEL, chromium_argv, write_tiny_workdir

HOSTILE = "<script>document.title='pwned'</script> Evil Flask"
ESCAPED = "&lt;script&gt;document.title=&#39;pwned&#39;&lt;/script&gt; Evil Flask"


@pytest.fixture(scope="module")
def demo_workdir(tmp_path_factory) -> Path:
    """A tiny workdir whose first test row's first history item has a hostile title, items 1 and 2 sharing a
    SID (a collision), item 2 without a category, a 2-step SFT model in models/sft and a 3-step one (another
    seed) in models/rl standing in for SFT+RL."""
    from harness.params import SftParams
    from harness.train.sft import run_sft

    work = write_tiny_workdir(tmp_path_factory.mktemp("demo"))
    data, sid = work / "data/dataset", work / "data/sid"
    row = _first_test_row(work)
    items = data / "items.jsonl"
    lines = items.read_text().splitlines()
    hostile = row["history"][0]
    lines[hostile] = json.dumps({**json.loads(lines[hostile]), "title": HOSTILE})
    lines[2] = json.dumps({**json.loads(lines[2]), "category": ""})  # a source without it: shown as "—"
    items.write_text("\n".join(lines) + "\n")
    index = json.loads((sid / "index.json").read_text())
    index["1"] = index["2"]
    (sid / "index.json").write_text(json.dumps(index))
    run_sft(SftParams(max_steps=2, batch_size=8, model=TINY_MODEL), data, sid, work / "models/sft")
    run_sft(SftParams(max_steps=3, batch_size=8, seed=1, model=TINY_MODEL), data, sid, work / "models/rl")
    return work


def escape(text: str) -> str:
    """``text`` as Jinja's autoescape writes it."""
    return str(markupsafe.escape(text))


def _first_test_row(work: Path) -> dict:
    """The first test row with two distinct history items (the first is made hostile, the last is searched)."""
    rows = [json.loads(line) for line in (work / "data/dataset/interactions.jsonl").read_text().splitlines()]
    return next(r for r in rows if r["split"] == "test" and r["history"][0] != r["history"][-1])


def _sid(work: Path, item: int) -> str:
    return "".join(json.loads((work / "data/sid/index.json").read_text())[str(item)])


def _title(work: Path, item: int) -> str:
    return json.loads((work / "data/dataset/items.jsonl").read_text().splitlines()[item])["title"]


def _comparison(work: Path):
    from harness.demo import Comparison

    return Comparison.load([work / "models/sft", work / "models/rl"], None, work / "data/dataset", work / "data/sid")


def test_recommend_prints_top_k_with_titles_and_names_an_unknown_entry(demo_workdir):
    cmd = [sys.executable, "-m", "harness.cli", "recommend", "--model", "models/sft", "-k", "4"]
    r = subprocess.run([*cmd, "--history", f"{HOSTILE.lower()}; {_sid(demo_workdir, 3)}"], cwd=demo_workdir,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = [line for line in r.stdout.splitlines()[2:] if line.strip()]
    assert len(rows) == 4 and all("<a_" in row for row in rows)
    title = _title(demo_workdir, 3)
    typo = title[:-2] + "zz"
    bad = subprocess.run([*cmd, "--history", f"Evil Flask; {typo}"], cwd=demo_workdir, capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode == 2 and "history entry 1 ('Evil Flask')" in bad.stderr and "did you mean" in bad.stderr
    bad = subprocess.run([*cmd, "--history", typo], cwd=demo_workdir, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and repr(title) in bad.stderr  # the closest title is suggested


def test_demo_refuses_a_non_loopback_address_and_ambiguous_labels(demo_workdir):
    from harness.demo import Comparison
    from harness.demo_page import serve

    with pytest.raises(HarnessError, match="loopback interface only"):
        serve(_comparison(demo_workdir), host="0.0.0.0", port=0)
    with pytest.raises(HarnessError, match="1 --label for 2 --model"):
        Comparison.load([demo_workdir / "models/sft", demo_workdir / "models/rl"], ["SFT"])
    with pytest.raises(HarnessError, match="label 'sft' is given twice"):
        Comparison.load([demo_workdir / "models/sft", Path("elsewhere/sft")])


@pytest.fixture(scope="module")
def demo_url(demo_workdir):
    from harness.demo_page import serve

    server = serve(_comparison(demo_workdir), "127.0.0.1", 0, k=5)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def _get(url: str, **query) -> str:
    with urllib.request.urlopen(f"{url}?{urllib.parse.urlencode(query)}", timeout=120) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Security-Policy"] == "default-src 'none'; style-src 'unsafe-inline'"
        return resp.read().decode()


def _columns(html: str) -> dict[str, list[tuple[str, bool]]]:
    """Each model section's Top-K as (SID, marked as the target) per row, by the section's label."""
    cols = {}
    for label, body in re.findall(r'<section class="model" id="model-\d+">\s*<h2>(.*?): Top \d+</h2>(.*?)</section>',
                                  html, re.S):
        rows = re.findall(r"<tr( class=\"hit\")?><td class=\"num\">\d+(.*?)</td><td><code>(.*?)</code>", body)
        for hit_class, marker, _ in rows:
            assert bool(hit_class) == ("✓ target" in marker)  # the class and the text marker go together
        cols[label] = [(html_lib.unescape(sid), bool(hit_class)) for hit_class, _, sid in rows]
    return cols


def test_demo_page_escapes_titles_and_answers_a_typed_history(demo_url, demo_workdir):
    html = _get(demo_url, history=f"{HOSTILE}; {_sid(demo_workdir, 5)}", k=5)
    assert "<script>" not in html and ESCAPED in html
    cols = _columns(html)
    assert list(cols) == ["sft", "rl"] and all(len(rows) == 5 for rows in cols.values())
    assert not any(hit for rows in cols.values() for _, hit in rows)  # a typed history has no target
    assert 'id="target"' not in html and 'id="error"' not in html
    assert 'id="error"' in _get(demo_url, history="nothing like it")


def test_demo_shows_a_test_user_with_both_models_and_marks_the_target(demo_url, demo_workdir):
    row = _first_test_row(demo_workdir)
    n_sids = len({"".join(v) for v in json.loads((demo_workdir / "data/sid/index.json").read_text()).values()})
    assert n_sids == 39  # 40 items, items 1 and 2 share a SID
    html = _get(demo_url, user=row["user"], k=n_sids)  # every SID is recommended, so the target is in each Top-K
    assert f"Test user {row['user']}" in html and "<script>" not in html and ESCAPED in html
    history = re.search(r'<table id="history">(.*?)</table>', html, re.S).group(1)
    assert [html_lib.unescape(c) for c in re.findall(r"<code>(.*?)</code>", history)] == \
        [_sid(demo_workdir, i) for i in row["history"]]
    target = re.search(r'<p class="target" id="target">(.*?)</p>', html, re.S).group(1)
    assert escape(_sid(demo_workdir, row["target"])) in target
    cols = _columns(html)
    assert list(cols) == ["sft", "rl"]
    for rows in cols.values():
        assert len(rows) == n_sids and [sid for sid, hit in rows if hit] == [_sid(demo_workdir, row["target"])]
    assert html.count("✓ target at rank") == 2
    # the collision: in each model's Top-K, the SID of items 1 and 2 lists both titles
    assert html.count("(2 items share this SID)") == 2
    note = '<div class="muted">(2 items share this SID)</div>'
    shared = re.findall(re.escape(f"<code>{escape(_sid(demo_workdir, 1))}</code>{note}</td><td>") + "(.*?)</td>", html)
    assert len(shared) == 2
    assert all(escape(_title(demo_workdir, 1)) in c and escape(_title(demo_workdir, 2)) in c for c in shared)
    brand2 = json.loads((demo_workdir / "data/dataset/items.jsonl").read_text().splitlines()[2])["brand"]
    # item 2's missing category, in both Top-Ks
    assert html.count(f'<span class="meta">· — · {escape(brand2)}</span>') == 2
    # a small Top-K marks the target exactly where its SID is
    small = _columns(_get(demo_url, user=row["user"], k=2))
    for rows in small.values():
        assert [hit for _, hit in rows] == [sid == _sid(demo_workdir, row["target"]) for sid, _ in rows]


def test_demo_finds_test_users_by_title_and_by_id(demo_url, demo_workdir):
    row = _first_test_row(demo_workdir)
    word = _title(demo_workdir, row["history"][-1]).split()[1]  # a word of a title in the user's history
    html = _get(demo_url, q=word.lower())
    found = re.search(r'<ul class="found" id="found">(.*?)</ul>', html, re.S).group(1)
    links = re.findall(r'<a href="/\?user=([^&"]+)&amp;row=(\d+)', found)
    assert (urllib.parse.quote(row["user"]), "1") in links
    rows = [json.loads(line) for line in (demo_workdir / "data/dataset/interactions.jsonl").read_text().splitlines()]
    holding = {r["user"] for r in rows if r["split"] == "test"
               and any(word.lower() in _title(demo_workdir, i).lower() for i in r["history"])}
    assert {urllib.parse.unquote(u) for u, _ in links} <= holding  # only users whose history has the word
    by_id = _get(demo_url, q=row["user"])
    assert f'/?user={urllib.parse.quote(row["user"])}&amp;row=1' in by_id
    assert "No test row has" in _get(demo_url, q="no title has this")
    hostile = _get(demo_url, q="evil flask")  # the hostile title, matched, stays text in the results list
    assert ESCAPED in hostile and "<script>" not in hostile


@pytest.mark.parametrize("query, message", [
    ({"user": "nobody-42"}, "test user 'nobody-42' is not in the dataset"),
    ({"user": "<b>x</b>"}, "test user '<b>x</b>' is not in the dataset"),
    ({"row": "two"}, "row must be a whole number from 1 to"),
    ({"row": "99"}, "row must be a whole number from 1 to"),
    ({"k": "0"}, "k must be between 1 and the 39 catalogue SIDs, not 0"),
    ({"k": "many"}, "k must be between 1 and the 39 catalogue SIDs"),
])
def test_a_bad_user_row_or_k_is_one_error_on_the_page(demo_url, demo_workdir, query, message):
    user = _first_test_row(demo_workdir)["user"]
    html = _get(demo_url, **{"user": user, **query})
    error = re.search(r'<p class="error" id="error">(.*?)</p>', html, re.S)
    assert error and message in html_lib.unescape(error.group(1))
    assert '<section class="model"' not in html and "<b>x</b>" not in html


def test_a_user_with_only_training_rows_is_named_as_such(demo_workdir):
    from harness.demo import Catalogue

    cat = Catalogue(demo_workdir / "data/dataset", demo_workdir / "data/sid")
    rows = [json.loads(line) for line in (demo_workdir / "data/dataset/interactions.jsonl").read_text().splitlines()]
    train_only = sorted({r["user"] for r in rows} - {r["user"] for r in rows if r["split"] == "test"})
    assert train_only
    with pytest.raises(HarnessError, match="has no test row"):
        cat.test_row(train_only[0])
    item = cat.item(0)
    assert set(item) == {"id", "sid", "title", "category", "brand"} and item["category"] != "—" != item["brand"]
    assert cat.item(2)["category"] == "—"


def test_chromium_helper_skips_for_a_user_and_fails_in_ci(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no chromium on it
    monkeypatch.delenv("HARNESS_REQUIRE_BROWSER", raising=False)
    with pytest.raises(pytest.skip.Exception, match="headless Chromium not installed"):
        chromium_argv(tmp_path)
    monkeypatch.setenv("HARNESS_REQUIRE_BROWSER", "1")
    with pytest.raises(pytest.fail.Exception, match="HARNESS_REQUIRE_BROWSER=1"):
        chromium_argv(tmp_path)
    fake = tmp_path / "chromium"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    argv = chromium_argv(tmp_path / "profile")
    assert argv[0] == str(fake) and "--disable-background-networking" in argv and "--headless" in argv
    assert f"--user-data-dir={tmp_path / 'profile'}" in argv


def test_demo_in_headless_chromium_runs_no_script_from_a_title(demo_url, demo_workdir, chromium, tmp_path):
    row = _first_test_row(demo_workdir)
    url = f"{demo_url}?{urllib.parse.urlencode({'user': row['user'], 'k': 39})}"
    dom = subprocess.run([*chromium, "--virtual-time-budget=3000", "--dump-dom", url], capture_output=True,
                         text=True, timeout=120).stdout
    assert "<title>MiniOneRec demo: history in, Top-K out</title>" in dom  # the title's script never ran
    assert dom.count('<section class="model"') == 2 and dom.count('<tr class="hit">') == 2 and "Evil Flask" in dom
    shot = tmp_path / "demo.png"
    subprocess.run([*chromium, f"--screenshot={shot}", "--window-size=1300,900", url], capture_output=True,
                   timeout=120)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 5000
