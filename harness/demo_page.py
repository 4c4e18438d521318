"""The ``harness demo`` page: pick a test user (by id or by a title in their history) or type a history, and
read every model's Top-K side by side, the true next item marked.

Plain GET forms and no script at all (the CSP forbids one); every title goes through Jinja's autoescape; the
server binds to the loopback interface only. A bad query (unknown user, bad row, ``k`` out of bounds) is one
message on the page (``id="error"``), never a server error.
"""

from __future__ import annotations

from collections.abc import Mapping

from harness.demo import Comparison
from harness.errors import HarnessError

LOOPBACK = ("127.0.0.1", "localhost", "::1")
CSP = "default-src 'none'; style-src 'unsafe-inline'"


def page_context(cmp: Comparison, query: Mapping[str, str], default_k: int) -> dict:
    """What the template shows for one request's query (``q``, ``user`` and ``row``, ``history``, ``k``)."""
    cat = cmp.catalogue
    ctx: dict = {"q": query.get("q", ""), "user": query.get("user", ""), "history_text": query.get("history", ""),
                 "labels": [lab for lab, _ in cmp.models], "error": None, "found": [], "found_total": 0,
                 "test": None, "history": [], "target": None, "columns": []}
    try:
        want = int(query.get("k", str(default_k)))
    except ValueError:
        want = -1
    ctx["k"] = want if want > 0 else default_k
    try:
        if ctx["q"].strip():
            ctx["found"], ctx["found_total"] = cat.search(ctx["q"])
        if ctx["user"].strip():
            row, pos, n = cat.test_row(ctx["user"], query.get("row"))
            ctx["test"] = {"user": row.user, "row": pos, "rows": n}
            ids, target = list(row.history), row.target
        elif ctx["history_text"].strip():
            ids, target = cat.parse_history(ctx["history_text"]), None
        else:
            return ctx
        ctx["history"] = [cat.item(i) for i in ids]
        ctx["target"] = cat.item(target) if target is not None else None
        ctx["columns"] = cmp.recommend(ids, want, target)
    except HarnessError as e:
        ctx["error"] = str(e)
        ctx["columns"] = []
    return ctx


def serve(cmp: Comparison, host: str = "127.0.0.1", port: int = 8000, k: int = 10):
    """The demo page as a ThreadingHTTPServer (call ``serve_forever``); refuses any non-loopback address."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import parse_qs, urlparse

    from jinja2 import Environment, FileSystemLoader, select_autoescape

    from harness.report.stage import TEMPLATES

    if host not in LOOPBACK:
        raise HarnessError(f"--host {host}: the demo serves the loopback interface only ({', '.join(LOOPBACK)})")
    page = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html", "j2"])) \
        .get_template("demo.html.j2")
    titles = sorted({it.title for it in cmp.catalogue.items})

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            url = urlparse(self.path)
            if url.path != "/":
                self.send_error(404)
                return
            query = {key: values[0] for key, values in parse_qs(url.query).items()}
            body = page.render(**page_context(cmp, query, k), titles=titles).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Security-Policy", CSP)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt: str, *args) -> None:  # quiet: no request log on the terminal
            return

    return ThreadingHTTPServer((host, port), Handler)
