"""History in, Top-K out: ``harness recommend`` and the ``harness demo`` page, the page driven by headless
Chromium (the Debian ``chromium`` package) with a hostile item title that must stay text."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from harness.errors import HarnessError
from tests.conftest import TINY_MODEL

HOSTILE = "<script>document.title='pwned'</script> Evil Flask"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture()
def demo_workdir(tiny_workdir, monkeypatch) -> Path:
    """tiny_workdir with item 0 renamed to a hostile title and a 2-step SFT model in models/sft."""
    from harness.params import SftParams
    from harness.train.sft import run_sft

    items = tiny_workdir / "data/dataset/items.jsonl"
    lines = items.read_text().splitlines()
    first = json.loads(lines[0])
    lines[0] = json.dumps({**first, "title": HOSTILE})
    items.write_text("\n".join(lines) + "\n")
    monkeypatch.chdir(tiny_workdir)
    run_sft(SftParams(max_steps=2, batch_size=8, model=TINY_MODEL), "data/dataset", "data/sid", "models/sft")
    return tiny_workdir


def _sid(work: Path, item: int) -> str:
    return "".join(json.loads((work / "data/sid/index.json").read_text())[str(item)])


def test_recommend_prints_top_k_with_titles_and_names_an_unknown_entry(demo_workdir):
    cmd = [sys.executable, "-m", "harness.cli", "recommend", "--model", "models/sft", "-k", "4"]
    r = subprocess.run([*cmd, "--history", f"{HOSTILE.lower()}; {_sid(demo_workdir, 3)}"], cwd=demo_workdir,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = [line for line in r.stdout.splitlines()[2:] if line.strip()]
    assert len(rows) == 4 and all("<a_" in row for row in rows)
    title = json.loads((demo_workdir / "data/dataset/items.jsonl").read_text().splitlines()[3])["title"]
    typo = title[:-2] + "zz"
    bad = subprocess.run([*cmd, "--history", f"Evil Flask; {typo}"], cwd=demo_workdir, capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode == 2 and "history entry 1 ('Evil Flask')" in bad.stderr and "did you mean" in bad.stderr
    bad = subprocess.run([*cmd, "--history", typo], cwd=demo_workdir, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and repr(title) in bad.stderr  # the closest title is suggested


def test_demo_refuses_a_non_loopback_address(demo_workdir):
    from harness.demo import Recommender, serve

    with pytest.raises(HarnessError, match="loopback interface only"):
        serve(Recommender(Path("models/sft")), host="0.0.0.0", port=0)


@pytest.fixture()
def demo_url(demo_workdir):
    from harness.demo import Recommender, serve

    server = serve(Recommender(Path("models/sft")), "127.0.0.1", 0, k=5)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_demo_page_escapes_titles_and_answers_a_typed_history(demo_url, demo_workdir):
    query = urllib.parse.urlencode({"history": f"{HOSTILE}; {_sid(demo_workdir, 5)}", "k": 5})
    with urllib.request.urlopen(f"{demo_url}?{query}", timeout=120) as resp:
        html = resp.read().decode()
        assert "script-src" not in resp.headers["Content-Security-Policy"]  # default-src 'none': no scripts
    assert "<script>" not in html and "&lt;script&gt;document.title=&#39;pwned&#39;&lt;/script&gt;" in html
    assert html.count("<tr>") == 6  # header + 5 recommendations
    with urllib.request.urlopen(f"{demo_url}?history=nothing+like+it", timeout=60) as resp:
        assert 'id="error"' in resp.read().decode()


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (Debian package chromium)")
def test_demo_in_headless_chromium_runs_no_script_from_a_title(demo_url, demo_workdir, tmp_path):
    query = urllib.parse.urlencode({"history": f"{HOSTILE}; {_sid(demo_workdir, 5)}", "k": 5})
    url = f"{demo_url}?{query}"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=3000"]
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    assert "<title>MiniOneRec demo: history in, Top-K out</title>" in dom  # the title's script never ran
    assert 'id="results"' in dom and dom.count("<tr>") == 6 and "Evil Flask" in dom
    shot = tmp_path / "demo.png"
    subprocess.run([CHROMIUM, *flags, f"--screenshot={shot}", "--window-size=1100,800", url], capture_output=True,
                   timeout=120)
    assert shot.is_file() and shot.stat().st_size > 5000
