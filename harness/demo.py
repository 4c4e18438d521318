"""History in, Top-K out: ``harness recommend`` on the command line and ``harness demo``, a local web page.

A history is a ``;``-separated list of items, each given by its SID (``<a_1><b_2><c_3>``) or its title
(exact, case-insensitive). The model ranks catalogue SIDs with the same constrained beam search as the
evaluation; each SID is shown with the titles of every item that carries it (a collision shows them all).
The page binds to the loopback interface only and renders every title through Jinja's autoescape.
"""

from __future__ import annotations

import difflib
import threading
from dataclasses import dataclass
from pathlib import Path

from harness.data.schema import read_dataset
from harness.errors import HarnessError
from harness.prompts import next_sid_prompt
from harness.sid.index import read_index_json
from harness.sid.tokens import sid_string

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass
class Recommender:
    """A model and its catalogue, loaded once (the demo page answers many requests with it)."""

    model_dir: Path
    dataset_dir: Path = Path("data/dataset")
    sid_dir: Path = Path("data/sid")

    def __post_init__(self) -> None:
        import torch

        from harness.decode.constrained import catalogue_trie
        from harness.train.model import load_model

        ds = read_dataset(self.dataset_dir)
        self.items = ds.items
        self.index = read_index_json(self.sid_dir / "index.json", len(ds.items))
        self.model, self.tokenizer = load_model(self.model_dir, "cpu" if not torch.cuda.is_available() else None)
        self.trie = catalogue_trie(self.tokenizer, self.index, self.model_dir)
        self.by_sid: dict[str, list[int]] = {}
        for iid, tokens in sorted(self.index.items()):
            self.by_sid.setdefault(sid_string(tokens), []).append(iid)
        self.by_title: dict[str, list[int]] = {}
        for it in self.items:
            self.by_title.setdefault(it.title.strip().lower(), []).append(it.id)
        self.lock = threading.Lock()  # one generate at a time on a shared model

    def parse_history(self, text: str) -> list[int]:
        """Item ids for a ``;``-separated history of SIDs or titles; an unknown entry is an error that names it
        and suggests the closest titles."""
        entries = [e.strip() for e in text.split(";") if e.strip()]
        if not entries:
            raise HarnessError("the history is empty: give one or more titles or SIDs separated by ';'")
        ids = []
        for n, entry in enumerate(entries, start=1):
            if entry in self.by_sid:
                ids.append(self.by_sid[entry][0])
                continue
            hits = self.by_title.get(entry.lower())
            if hits:
                ids.append(hits[0])
                continue
            needle = entry.lower()
            close = [t for t in self.by_title if needle in t][:3] or \
                difflib.get_close_matches(needle, list(self.by_title), n=3, cutoff=0.6)
            hint = f"; did you mean: {', '.join(repr(self.items[self.by_title[c][0]].title) for c in close)}" \
                if close else ""
            raise HarnessError(f"history entry {n} ({entry!r}) is neither a catalogue SID nor an item title{hint}")
        return ids

    def recommend(self, history: list[int], k: int) -> list[dict]:
        from harness.decode.constrained import constrained_beam_search
        from harness.sid.tokens import history_sids

        if not 1 <= k <= len(self.by_sid):
            raise HarnessError(f"k must be between 1 and the {len(self.by_sid)} catalogue SIDs, not {k}")
        prompt = next_sid_prompt(history_sids(history, self.index))
        with self.lock:
            res = constrained_beam_search(self.model, self.tokenizer, [prompt], self.trie, k, 1)[0]
        out = []
        for rank, (seq, score) in enumerate(zip(res.sequences, res.scores), start=1):
            sid = "".join(self.tokenizer.convert_ids_to_tokens(seq))
            ids = self.by_sid.get(sid, [])
            out.append({"rank": rank, "sid": sid, "score": float(score), "item_ids": ids,
                        "titles": [self.items[i].title for i in ids]})
        return out


def serve(rec: Recommender, host: str = "127.0.0.1", port: int = 8000, k: int = 10):
    """The demo page as a ThreadingHTTPServer (call ``serve_forever``); refuses any non-loopback address."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import parse_qs, urlparse

    from jinja2 import Environment, FileSystemLoader, select_autoescape

    from harness.report.stage import TEMPLATES

    if host not in LOOPBACK:
        raise HarnessError(f"--host {host}: the demo serves the loopback interface only ({', '.join(LOOPBACK)})")
    page = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html", "j2"])) \
        .get_template("demo.html.j2")
    titles = sorted({it.title for it in rec.items})

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            url = urlparse(self.path)
            if url.path != "/":
                self.send_error(404)
                return
            q = parse_qs(url.query)
            history_text = q.get("history", [""])[0]
            try:
                want = int(q.get("k", [str(k)])[0])
            except ValueError:
                want = -1
            results, history, error = [], [], None
            if history_text:
                try:
                    ids = rec.parse_history(history_text)
                    history = [{"sid": sid_string(rec.index[i]), "title": rec.items[i].title} for i in ids]
                    results = rec.recommend(ids, want)
                except HarnessError as e:
                    error = str(e)
            body = page.render(history_text=history_text, k=want if want > 0 else k, results=results,
                               history=history, error=error, titles=titles, model=str(rec.model_dir)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt: str, *args) -> None:  # quiet: no request log on the terminal
            return

    return ThreadingHTTPServer((host, port), Handler)
