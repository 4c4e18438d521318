"""`harness pull-model` against a local stand-in for the hub, and the manifest contract behind sft.model.source.

The stand-in answers the requests huggingface_hub actually makes: ``GET /api/models/{repo}/revision/{rev}``
(model_info with file metadata) and ``HEAD``/``GET /{repo}/resolve/{rev}/{file}``. hf_hub_download refuses a
file response without ``X-Repo-Commit`` or an ``ETag``; the rest mirrors what the real hub sends.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.errors import HarnessError
from harness.pull_model import (
    MANIFEST,
    describe_base_model,
    dir_name,
    file_sha256,
    pull,
    read_manifest,
    resolve_source,
)

REPO = Path(__file__).resolve().parents[1]
LFS_SUFFIXES = (".safetensors", ".bin")


def _git_blob(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class Hub:
    """In-memory repositories: repo id -> {"refs": {name: sha}, "commits": {sha: {file name: bytes}}}."""

    def __init__(self):
        self.repos: dict[str, dict] = {}
        self.tampered: set[tuple[str, str]] = set()  # (repo, file) served with one byte changed
        self.gated: set[str] = set()  # metadata public, files refused until the user accepts the terms
        self.log: list[tuple[str, str]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def add(self, repo_id: str, files: dict[str, bytes], ref: str = "main") -> str:
        sha = hashlib.sha1(repr((repo_id, ref, sorted(files.items()))).encode()).hexdigest()
        repo = self.repos.setdefault(repo_id, {"refs": {}, "commits": {}})
        repo["refs"][ref] = sha
        repo["commits"][sha] = files
        return sha

    def requests(self, repo_id: str) -> list[tuple[str, str]]:
        return [r for r in self.log if f"/{repo_id}/" in r[1]]

    def _lookup(self, repo_id: str, rev: str):
        repo = self.repos.get(repo_id)
        if repo is None:
            return "RepoNotFound", None, None
        sha = repo["refs"].get(rev, rev if rev in repo["commits"] else None)
        if sha is None:
            return "RevisionNotFound", None, None
        return None, sha, repo["commits"][sha]

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _fail(self, code: str, status: int = 404):
                self.send_response(status)
                self.send_header("X-Error-Code", code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _send(self, body: bytes, headers: dict[str, str], head: bool = False):
                self.send_response(200)
                for k, v in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(k, v)
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def _info(self, repo_id: str, rev: str):
                error, sha, files = hub._lookup(repo_id, rev)
                if error:
                    return self._fail(error)
                siblings = []
                for name, data in sorted(files.items()):
                    s = {"rfilename": name, "size": len(data), "blobId": _git_blob(data)}
                    if name.endswith(LFS_SUFFIXES):
                        s["lfs"] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "pointerSize": 134}
                    siblings.append(s)
                body = json.dumps({"id": repo_id, "sha": sha, "siblings": siblings}).encode()
                self._send(body, {"Content-Type": "application/json"})

            def _file(self, repo_id: str, rev: str, name: str, head: bool):
                error, sha, files = hub._lookup(repo_id, rev)
                if repo_id in hub.gated:
                    return self._fail("GatedRepo", 403)
                if error or name not in files:
                    return self._fail(error or "EntryNotFound")
                data = files[name]
                headers = {"X-Repo-Commit": sha, "ETag": f'"{_git_blob(data)}"'}
                if name.endswith(LFS_SUFFIXES):
                    digest = hashlib.sha256(data).hexdigest()
                    headers.update({"ETag": f'"{digest}"', "X-Linked-Etag": f'"{digest}"',
                                    "X-Linked-Size": str(len(data))})
                if (repo_id, name) in hub.tampered:
                    data = data[:-1] + bytes([data[-1] ^ 1])
                self._send(data, headers, head)

            def _route(self, head: bool):
                path = self.path.split("?")[0]
                hub.log.append((self.command, self.path))
                if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)/revision/([^/]+)", path):
                    return self._info(m.group(1), m.group(2))
                if m := re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path):
                    return self._file(m.group(1), m.group(2), m.group(3), head)
                self._fail("NotFound")

            def do_GET(self):
                self._route(head=False)

            def do_HEAD(self):
                self._route(head=True)

        return Handler


@pytest.fixture(scope="module")
def model_files(tmp_path_factory) -> dict[str, bytes]:
    """A config-initialised 2-layer Llama (hidden 16) in four safetensors shards, with an offline tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from harness.train.tokenizer import save_tokenizer, train_tokenizer

    out = tmp_path_factory.mktemp("tiny-model")
    tok = train_tokenizer(["a tiny stand-in catalogue of flasks and pipettes"] * 20, 300, [])
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                                         max_position_embeddings=64, tie_word_embeddings=True))
    model.save_pretrained(out, max_shard_size="10KB")
    save_tokenizer(tok, out)
    files = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sum(n.endswith(".safetensors") for n in files) > 1 and "model.safetensors.index.json" in files
    return files


@pytest.fixture(scope="module")
def hub():
    h = Hub()
    threading.Thread(target=h.server.serve_forever, daemon=True).start()
    yield h
    h.server.shutdown()
    h.server.server_close()


@pytest.fixture(autouse=True)
def no_token(monkeypatch):
    """Never send a user's hub token to the stand-in."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_IMPLICIT_TOKEN", True)


def _single(model_files: dict[str, bytes]) -> dict[str, bytes]:
    """The same model as one unsharded model.safetensors (enough for the refusal and resolution tests)."""
    files = {n: b for n, b in model_files.items() if not n.endswith((".safetensors", ".index.json"))}
    return {**files, "model.safetensors": model_files[min(n for n in model_files if n.endswith(".safetensors"))]}


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1", "HF_HOME": str(cwd / ".hf-home")}
    return subprocess.run([sys.executable, "-m", "harness.cli", "pull-model", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def _assert_one_line_error(r, *fragments: str) -> None:
    assert r.returncode == 2, r.stdout + r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    for f in fragments:
        assert f in " ".join(r.stderr.split()), r.stderr


def test_pull_pins_verifies_resolves_loads_and_stays_offline(hub, model_files, tmp_path, monkeypatch):
    extras = {"README.md": b"# card\n", ".gitattributes": b"*.safetensors filter=lfs\n",
              "pytorch_model.bin": b"pickle" * 10, "consolidated.safetensors": b"not in the index",
              "onnx/model.safetensors": b"a subfolder variant"}
    sha = hub.add("org/tiny", {**model_files, **extras})
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, ["pull-model", "org/tiny", "--endpoint", hub.url])
    assert r.exit_code == 0, r.output
    out = Path("base-models") / f"org__tiny-{sha[:12]}"
    assert out.is_dir() and sha in r.output and str(out) in " ".join(r.output.split())

    # pinned: every file request names the resolved commit, and only the kept files are fetched
    fetched = [p for m, p in hub.requests("org/tiny") if "/resolve/" in p]
    assert fetched and all(f"/resolve/{sha}/" in p for p in fetched)
    assert sorted(p.name for p in out.iterdir()) == sorted([*model_files, MANIFEST])

    text = (out / MANIFEST).read_text()
    m = json.loads(text)
    assert text == json.dumps(m, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    assert (m["repo_id"], m["revision"], m["commit"]) == ("org/tiny", "main", sha)
    assert set(m) == {"repo_id", "revision", "commit", "files", "pulled_at", "huggingface_hub"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", m["pulled_at"])
    assert m["files"] == {n: {"sha256": hashlib.sha256(b).hexdigest(), "size": len(b)} for n, b in model_files.items()}
    assert f"manifest.json sha256 {hashlib.sha256(text.encode()).hexdigest()}" in r.output
    assert read_manifest(out) == m

    # the profile's hub id now names the pulled folder, which loads offline
    import torch

    from harness.train.model import load_pretrained, pretrained_dir

    assert pretrained_dir("org/tiny") == out
    model, tok = load_pretrained(pretrained_dir("org/tiny"), torch.float32)
    assert model.config.num_hidden_layers == 2 and model.config.hidden_size == 16 and len(tok) > 0
    rec = describe_base_model("org/tiny", out)
    assert rec == {"source": "org/tiny", "path": str(out), "manifest": True, "repo_id": "org/tiny",
                   "revision": "main", "commit": sha, "manifest_sha256": file_sha256(out / MANIFEST)}
    # what the SFT stage records and the report prints: repo, commit and manifest hash
    from harness.params import ModelParams
    from harness.report.context import base_model_text
    from harness.train.model import base_model_record

    assert base_model_record(ModelParams(source="org/tiny")) == rec
    line = base_model_text({"base_model": "org/tiny", "base": rec})
    assert f"org/tiny at commit {sha}" in line and file_sha256(out / MANIFEST)[:16] in line
    assert base_model_record(ModelParams(source=str(out)))["manifest"] is True  # the folder named directly
    copy = tmp_path / "my-copy"
    shutil.copytree(out, copy)
    (copy / MANIFEST).unlink()
    unknown = base_model_record(ModelParams(source=str(copy)))
    assert unknown["manifest"] is False
    assert "without a manifest (revision unknown)" in base_model_text({"base": unknown})

    # the rest of the harness is offline again
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import OfflineModeIsEnabled

    assert constants.HF_HUB_OFFLINE is True and os.environ["HF_HUB_OFFLINE"] == "1"
    seen = len(hub.log)
    with pytest.raises(OfflineModeIsEnabled):
        HfApi(endpoint=hub.url).model_info("org/tiny")
    assert len(hub.log) == seen

    # a re-run resolves the revision and changes nothing; a pinned commit needs no request at all
    r = CliRunner().invoke(app, ["pull-model", "org/tiny", "--endpoint", hub.url])
    assert r.exit_code == 0 and "already pulled" in r.output, r.output
    assert [p for _, p in hub.log[seen:]] == ["/api/models/org/tiny/revision/main?blobs=true"]
    assert (out / MANIFEST).read_text() == text
    r = CliRunner().invoke(app, ["pull-model", "org/tiny", "--revision", sha, "--endpoint", "http://127.0.0.1:9"])
    assert r.exit_code == 0 and "already pulled" in r.output, r.output
    assert sorted(p.name for p in Path("base-models").iterdir()) == [out.name]


def test_a_destination_that_no_longer_verifies_is_pulled_again(hub, model_files, tmp_path):
    sha = hub.add("org/redo", _single(model_files))
    first = pull("org/redo", dest_root=tmp_path, endpoint=hub.url)
    (first.path / "tokenizer.json").write_text("{}")
    again = pull("org/redo", dest_root=tmp_path, endpoint=hub.url)
    assert not again.already and again.path == tmp_path / dir_name("org/redo", sha)
    assert (again.path / "tokenizer.json").read_bytes() == model_files["tokenizer.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [again.path.name]


def test_pickled_only_repo_is_refused_before_any_download(hub, model_files, tmp_path):
    files = {n: b for n, b in _single(model_files).items() if n != "model.safetensors"}
    hub.add("org/pickled", {**files, "pytorch_model.bin": b"\x80\x04pickle", "training_args.bin": b"\x80\x04"})
    with pytest.raises(HarnessError, match=r"no \*\.safetensors weights .*pytorch_model\.bin, training_args\.bin"):
        pull("org/pickled", dest_root=tmp_path / "base-models", endpoint=hub.url)
    assert not (tmp_path / "base-models").exists()
    assert not [p for _, p in hub.requests("org/pickled") if "/resolve/" in p]


def test_remote_code_is_refused_and_nothing_is_written(hub, model_files, tmp_path):
    files = _single(model_files)
    config = {**json.loads(files["config.json"]), "auto_map": {"AutoModelForCausalLM": "modeling_x.XForCausalLM"}}
    hub.add("org/remote", {**files, "config.json": json.dumps(config).encode(), "modeling_x.py": b"import os\n"})
    with pytest.raises(HarnessError, match="auto_map.*trust_remote_code"):
        pull("org/remote", dest_root=tmp_path / "base-models", endpoint=hub.url)
    assert not (tmp_path / "base-models").exists()
    assert not [p for _, p in hub.requests("org/remote") if p.endswith((".safetensors", ".py"))]


def test_a_file_that_does_not_match_the_hubs_sha256_is_refused(hub, model_files, tmp_path):
    hub.add("org/tampered", _single(model_files))
    hub.tampered.add(("org/tampered", "model.safetensors"))
    with pytest.raises(HarnessError, match="model.safetensors has sha256 .* the hub lists"):
        pull("org/tampered", dest_root=tmp_path, endpoint=hub.url)
    assert list(tmp_path.iterdir()) == []


def test_gated_repo_is_a_one_line_error(hub, model_files, tmp_path):
    hub.add("org/gated", _single(model_files))
    hub.gated.add("org/gated")
    with pytest.raises(HarnessError, match=r"org/gated is gated on .*accept its terms"):
        pull("org/gated", dest_root=tmp_path / "base-models", endpoint=hub.url)
    assert not (tmp_path / "base-models").exists()


def test_interrupted_pull_leaves_nothing(hub, model_files, tmp_path, monkeypatch):
    import harness.pull_model as pm

    hub.add("org/ctrlc", _single(model_files))

    def interrupt(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(pm, "_refuse_remote_code", interrupt)
    with pytest.raises(KeyboardInterrupt):
        pull("org/ctrlc", dest_root=tmp_path / "base-models", endpoint=hub.url)
    assert not (tmp_path / "base-models").exists()


def test_unknown_repo_and_revision_are_one_line_errors(hub, model_files, tmp_path, monkeypatch):
    r = _cli(tmp_path, "org/absent", "--endpoint", hub.url)
    _assert_one_line_error(r, "repository 'org/absent' not found on", hub.url)
    hub.add("org/revs", _single(model_files))
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, ["pull-model", "org/revs", "--revision", "v9", "--endpoint", hub.url])
    assert r.exit_code == 2 and "revision 'v9' not found in org/revs" in " ".join(r.output.split()), r.output
    assert not (tmp_path / "base-models").exists()


def test_unreachable_endpoint_is_one_line_error(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: nothing listens there
    r = _cli(tmp_path, "org/name", "--endpoint", f"http://127.0.0.1:{port}")
    _assert_one_line_error(r, f"cannot reach http://127.0.0.1:{port}")
    assert not (tmp_path / "base-models").exists()


def test_resolve_source_none_one_or_several_pulled(hub, model_files, tmp_path, monkeypatch):
    root = tmp_path / "base-models"
    with pytest.raises(HarnessError, match=r"'org/two' is a hub id that has not been pulled: run "
                                           r"`harness pull-model org/two` \(the only command that downloads\)"):
        resolve_source("org/two", root)
    files = _single(model_files)
    hub.add("org/two", files)
    main = pull("org/two", dest_root=root, endpoint=hub.url)
    assert resolve_source("org/two", root) == main.path
    assert resolve_source("ORG/Two", root) == main.path  # hub ids ignore case
    hub.add("org/two", {**files, "generation_config.json": b'{"max_new_tokens": 8}\n'}, ref="v2")
    v2 = pull("org/two", revision="v2", dest_root=root, endpoint=hub.url)
    hub.add("org/two-more", files)  # its folder name starts like org/two's: not one of them
    pull("org/two-more", dest_root=root, endpoint=hub.url)
    with pytest.raises(HarnessError, match="several revisions are pulled") as e:
        resolve_source("org/two", root)
    assert str(main.path) in str(e.value) and str(v2.path) in str(e.value) and "revision v2" in str(e.value)
    assert "two-more" not in str(e.value)
    for not_a_hub_id in ("scratch", "./org/two", "/abs/org/two", "org/two/extra", "~/models/x", "org/.."):
        assert resolve_source(not_a_hub_id, root) is None
    monkeypatch.chdir(tmp_path)
    Path("org", "local").mkdir(parents=True)
    assert resolve_source("org/local", root) is None  # an existing local directory keeps its meaning


def test_local_dir_without_manifest_and_malformed_manifests(hub, model_files, tmp_path, monkeypatch):
    local = tmp_path / "my-model"
    local.mkdir()
    (local / "config.json").write_text("{}")
    assert describe_base_model(str(local), local) == {"source": str(local), "path": str(local), "manifest": False}
    assert read_manifest(local) is None

    hub.add("org/bad", _single(model_files))
    good = pull("org/bad", dest_root=tmp_path / "base-models", endpoint=hub.url).path
    m = json.loads((good / MANIFEST).read_text())
    for broken, key in [({k: v for k, v in m.items() if k != "commit"}, "commit"),
                        ({**m, "commit": "main"}, "commit"),
                        ({**m, "files": {"../x": {"sha256": "0" * 64, "size": 1}}}, "files.../x"),
                        ({**m, "files": {"config.json": {"sha256": "abc", "size": 1}}}, "files.config.json.sha256")]:
        (good / MANIFEST).write_text(json.dumps(broken))
        with pytest.raises(HarnessError, match=re.escape(f"{good / MANIFEST}: key '{key}'")):
            read_manifest(good)
    (good / MANIFEST).write_text('{"repo_id": ')
    with pytest.raises(HarnessError, match=re.escape(f"{good / MANIFEST}:1: broken JSON")):
        describe_base_model("org/bad", good)
    monkeypatch.chdir(tmp_path)
    from harness.train.model import pretrained_dir

    with pytest.raises(HarnessError, match=re.escape(str(Path("base-models") / good.name / MANIFEST))):
        pretrained_dir("org/bad")


def test_pretrained_dir_keeps_its_local_directory_behaviour(tmp_path, monkeypatch):
    from harness.train.model import pretrained_dir

    monkeypatch.chdir(tmp_path)
    with pytest.raises(HarnessError, match="is neither 'scratch', 'smollm2-135m' nor a local model directory"):
        pretrained_dir(str(tmp_path / "absent" / "model"))
    with pytest.raises(HarnessError, match="harness pull-model Qwen/Qwen2.5-1.5B-Instruct"):
        pretrained_dir("Qwen/Qwen2.5-1.5B-Instruct")
    Path("org", "m").mkdir(parents=True)
    (tmp_path / "org" / "m" / "config.json").write_text("{}")
    assert pretrained_dir("org/m") == Path("org/m")
