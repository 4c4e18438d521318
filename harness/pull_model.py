"""``harness pull-model``: the one command that goes online, and the home of the pulled model's manifest.

Importing ``harness`` forces ``HF_HUB_OFFLINE=1``, so no stage can download a model by accident, and a run's
base model is whatever is on disk. This module lifts that switch for one deliberate download: a hub model's
safetensors weights, config and tokenizer, pinned to the commit its revision resolves to, checked against the
hub's own hashes, and written with a ``manifest.json`` that records where every byte came from. Pickled
weights and repositories that need their own Python code are refused: loading either can run code.

The directory appears complete or not at all: files go to a temporary sibling that is renamed at the end.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.embed.cache import file_sha256
from harness.errors import HarnessError

MANIFEST = "manifest.json"
DEFAULT_DEST = Path("base-models")
CONFIG_FILES = ("config.json", "generation_config.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
                   "merges.txt", "tokenizer.model", "added_tokens.json", "chat_template.jinja",
                   "chat_template.json")
WEIGHTS = ".safetensors"
WEIGHTS_INDEX = ".safetensors.index.json"
PICKLED = (".bin", ".pt", ".pth", ".ckpt", ".pkl")  # as harness.train.model.PICKLED: never loaded
REMOTE_CODE_FILES = ("config.json", "tokenizer_config.json")
HUB_TIMEOUT_S = 30

_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9_])?"
HUB_ID = re.compile(rf"({_PART})/({_PART})")
COMMIT = re.compile(r"[0-9a-f]{40}")
SHA256 = re.compile(r"[0-9a-f]{64}")
MANIFEST_STRINGS = ("repo_id", "revision", "commit", "pulled_at", "huggingface_hub")


@dataclass(frozen=True)
class Pulled:
    """What ``pull`` did: the model directory, its commit, its manifest's sha256, and whether it was there already."""

    path: Path
    commit: str
    manifest_sha256: str
    files: dict[str, dict[str, Any]]
    already: bool


# --- the manifest contract -----------------------------------------------------------------------------------


def is_hub_id(source: str) -> bool:
    """``org/name`` as the hub spells a model id (no path syntax: ``./x``, ``/x``, ``~/x`` and ``a/b/c`` are paths)."""
    return HUB_ID.fullmatch(source) is not None and ".." not in source


def dir_name(repo_id: str, commit: str) -> str:
    """``<org>__<name>-<commit[:12]>``: one directory per repository and commit, never overwritten by another."""
    org, name = repo_id.split("/")
    return f"{org}__{name}-{commit[:12]}"


def _bad(path: Path, key: str, message: str) -> HarnessError:
    return HarnessError(f"{path}: key '{key}': {message}")


def _check_files(path: Path, files: Any) -> None:
    if not isinstance(files, dict) or not files:
        raise _bad(path, "files", "expected a non-empty object of file name -> {sha256, size}")
    for name, entry in files.items():
        key = f"files.{name}"
        if not name or "/" in name or "\\" in name or name.startswith("."):
            raise _bad(path, key, "not a plain file name inside the model directory")
        if not isinstance(entry, dict):
            raise _bad(path, key, "expected an object {sha256, size}")
        if not isinstance(entry.get("sha256"), str) or not SHA256.fullmatch(entry["sha256"]):
            raise _bad(path, f"{key}.sha256", "expected 64 lowercase hex digits")
        size = entry.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise _bad(path, f"{key}.size", "expected a non-negative integer")
    if "config.json" not in files or not any(n.endswith(WEIGHTS) for n in files):
        raise _bad(path, "files", "must list config.json and at least one *.safetensors file")


def read_manifest(model_dir: Path) -> dict | None:
    """The directory's manifest.json, checked for shape; None if it has none. A malformed one is an error that
    names the file and key, because provenance built on it would be wrong."""
    from harness.io import read_json

    path = Path(model_dir) / MANIFEST
    if not path.is_file():
        return None
    m = read_json(path)
    if not isinstance(m, dict):
        raise HarnessError(f"{path}: top level must be a JSON object")
    for key in MANIFEST_STRINGS:
        if not isinstance(m.get(key), str) or not m[key]:
            raise _bad(path, key, "missing or not a non-empty string")
    if not is_hub_id(m["repo_id"]):
        raise _bad(path, "repo_id", f"{m['repo_id']!r} is not a hub model id (org/name)")
    if not COMMIT.fullmatch(m["commit"]):
        raise _bad(path, "commit", "expected a full commit sha (40 lowercase hex digits)")
    _check_files(path, m.get("files"))
    return m


def verify_files(model_dir: Path, manifest: dict, content: bool = True) -> list[str]:
    """The manifest's files that are missing or differ on disk (size always; sha256 when ``content``)."""
    problems = []
    for name, entry in sorted(manifest["files"].items()):
        f = Path(model_dir) / name
        if not f.is_file():
            problems.append(f"{name} missing")
        elif f.stat().st_size != entry["size"]:
            problems.append(f"{name} is {f.stat().st_size} bytes, manifest says {entry['size']}")
        elif content and file_sha256(f) != entry["sha256"]:
            problems.append(f"{name} sha256 differs from the manifest")
    return problems


def describe_base_model(source: str, model_dir: Path) -> dict:
    """Provenance of a base model: the params value, the directory, and, when it was pulled, the repository,
    revision and commit with the manifest's own sha256 (so a report pins the exact bytes)."""
    manifest = read_manifest(model_dir)
    record: dict[str, Any] = {"source": source, "path": str(model_dir), "manifest": manifest is not None}
    if manifest is not None:
        record.update({k: manifest[k] for k in ("repo_id", "revision", "commit")})
        record["manifest_sha256"] = hashlib.sha256((Path(model_dir) / MANIFEST).read_bytes()).hexdigest()
    return record


def pulled_dirs(repo_id: str, dest_root: Path = DEFAULT_DEST) -> list[tuple[Path, dict]]:
    """Every ``dest_root/<org>__<name>-<commit[:12]>`` whose manifest names ``repo_id`` (hub ids ignore case),
    with that manifest."""
    org, name = repo_id.split("/")
    pattern = re.compile(re.escape(f"{org}__{name}-") + r"[0-9a-f]{12}", re.IGNORECASE)
    if not dest_root.is_dir():
        return []
    found = []
    for d in sorted(dest_root.iterdir()):
        if d.is_dir() and pattern.fullmatch(d.name):
            m = read_manifest(d)
            if m is not None and m["repo_id"].lower() == repo_id.lower():
                found.append((d, m))
    return found


def resolve_source(source: str, dest_root: Path = DEFAULT_DEST) -> Path | None:
    """The pulled directory for a hub id in ``sft.model.source``; None when ``source`` is not a hub id or is an
    existing local directory (those keep their meaning). Nothing is downloaded here: an id that was not pulled
    is an error that says which command does."""
    if not is_hub_id(source) or Path(source).expanduser().is_dir():
        return None
    found = pulled_dirs(source, Path(dest_root))
    if not found:
        raise HarnessError(f"sft.model.source '{source}' is a hub id that has not been pulled: run "
                           f"`harness pull-model {source}` (the only command that downloads)")
    if len(found) > 1:
        listed = "; ".join(f"{d} (revision {m['revision']}, commit {m['commit'][:12]})" for d, m in found)
        raise HarnessError(f"sft.model.source '{source}': several revisions are pulled ({listed}); set "
                           "sft.model.source to one of these directories")
    (model_dir, manifest), = found
    problems = verify_files(model_dir, manifest, content=False)  # sizes only: a stage start stays cheap
    if problems:
        raise HarnessError(f"{model_dir}: does not match its {MANIFEST} ({'; '.join(problems)}); run "
                           f"`harness pull-model {source} --revision {manifest['commit']}` again")
    return model_dir


# --- going online ----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def online() -> Iterator[None]:
    """Lift the package's forced offline mode for this block only. huggingface_hub reads the environment once, at
    import, into ``constants.HF_HUB_OFFLINE``, and checks that constant on every request; both are restored."""
    from huggingface_hub import constants

    saved_env, saved_flag = os.environ.get("HF_HUB_OFFLINE"), constants.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"] = "0"
    constants.HF_HUB_OFFLINE = False
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved_flag
        if saved_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = saved_env


def _transport_errors() -> tuple[type[BaseException], ...]:
    try:
        import httpx2

        return (httpx2.TransportError, ConnectionError, TimeoutError)
    except ImportError:  # another huggingface_hub generation: only the builtin families
        return (ConnectionError, TimeoutError)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _hub_error(e: Exception, endpoint: str, repo_id: str, revision: str) -> HarnessError | None:
    """One actionable line for what the hub (or the network) answered; None for an error that is not the hub's."""
    from huggingface_hub import errors as hf

    if isinstance(e, hf.GatedRepoError):
        return HarnessError(f"{repo_id} is gated on {endpoint}: accept its terms on the model page, then log in "
                            "(`hf auth login` or HF_TOKEN)")
    if isinstance(e, hf.RepositoryNotFoundError):
        return HarnessError(f"repository '{repo_id}' not found on {endpoint} (or it is private: log in with "
                            "`hf auth login` or HF_TOKEN)")
    if isinstance(e, hf.RevisionNotFoundError):
        return HarnessError(f"revision '{revision}' not found in {repo_id} on {endpoint}")
    if isinstance(e, hf.DisabledRepoError):
        return HarnessError(f"{repo_id} is disabled on {endpoint}")
    if isinstance(e, hf.RemoteEntryNotFoundError):
        return HarnessError(f"{repo_id}: a file listed by {endpoint} cannot be downloaded: {_first_line(e)}")
    if isinstance(e, hf.HfHubHTTPError):
        status = e.response.status_code if e.response is not None else "?"
        if status == 404:
            return HarnessError(f"{repo_id} at revision '{revision}' not found on {endpoint} (HTTP 404)")
        return HarnessError(f"{endpoint} answered HTTP {status} for {repo_id}: {_first_line(e)}")
    if isinstance(e, hf.FileMetadataError):
        return HarnessError(f"{endpoint} does not answer like a Hugging Face hub: {_first_line(e)}")
    if isinstance(e, hf.OfflineModeIsEnabled):
        return HarnessError(f"cannot reach {endpoint}: offline mode is still on ({_first_line(e)})")
    if isinstance(e, (hf.LocalEntryNotFoundError, *_transport_errors())):
        cause = e.__cause__ if isinstance(e, hf.LocalEntryNotFoundError) and e.__cause__ else e
        return HarnessError(f"cannot reach {endpoint} (offline, or a proxy or firewall in the way?): "
                            f"{_first_line(cause)}")
    return None


@contextlib.contextmanager
def _hub_errors(endpoint: str, repo_id: str, revision: str) -> Iterator[None]:
    try:
        yield
    except HarnessError:
        raise
    except Exception as e:
        mapped = _hub_error(e, endpoint, repo_id, revision)
        if mapped is None:
            raise
        raise mapped from None


def _sayer(console) -> Callable[[str], None]:
    """Plain lines on ``console`` (no highlighting, no wrapping inside a sha), or nowhere."""
    if console is None:
        return lambda text: None
    return lambda text: console.print(text, highlight=False, soft_wrap=True)


def human_size(n: int) -> str:
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    size, i = float(n), 0
    while size >= 1024 and i < len(units) - 1:
        size, i = size / 1024, i + 1
    return f"{n} B" if i == 0 else f"{size:.1f} {units[i]}"


def _resolve(api, repo_id: str, revision: str, endpoint: str) -> tuple[str, str, dict]:
    """(the hub's spelling of the id, the commit sha, root-level file name -> sibling with size and hashes)."""
    with _hub_errors(endpoint, repo_id, revision):
        info = api.model_info(repo_id, revision=revision, files_metadata=True, timeout=HUB_TIMEOUT_S)
    commit = info.sha or ""
    if not COMMIT.fullmatch(commit):
        raise HarnessError(f"{endpoint} gave no commit sha for {repo_id}@{revision} (got {commit!r})")
    canonical = info.id if isinstance(info.id, str) and info.id.lower() == repo_id.lower() else repo_id
    siblings = {s.rfilename: s for s in info.siblings or [] if "/" not in s.rfilename}
    return canonical, commit, siblings


def _plan(repo_id: str, siblings: dict) -> tuple[list[str], list[str]]:
    """(config, tokenizer and index files to fetch first, the safetensors weights); refuses a repo the harness
    would not load: no config.json, or no safetensors weights (pickled ones are never fetched)."""
    if "config.json" not in siblings:
        raise HarnessError(f"{repo_id} has no config.json at its top level: not a transformers model")
    weights = sorted(n for n in siblings if n.endswith(WEIGHTS))
    if not weights:
        pickled = sorted(n for n in siblings if n.endswith(PICKLED))
        has = f" (it has only pickled {', '.join(pickled)}, which can run code when loaded)" if pickled else ""
        raise HarnessError(f"{repo_id} has no *.safetensors weights{has}; the harness loads safetensors only, "
                           "so nothing was pulled")
    first = [n for n in (*CONFIG_FILES, *TOKENIZER_FILES) if n in siblings]
    first += sorted(n for n in siblings if n.endswith(WEIGHTS_INDEX))
    return first, weights


def _refuse_remote_code(repo_id: str, tmp: Path) -> None:
    from harness.io import read_json

    for name in REMOTE_CODE_FILES:
        if (tmp / name).is_file():
            cfg = read_json(tmp / name)
            if isinstance(cfg, dict) and "auto_map" in cfg:
                raise HarnessError(f"{repo_id}: {name} has auto_map (the model needs its own Python code, run only "
                                   "with trust_remote_code, which the harness never sets); nothing was pulled")


def _indexed_shards(repo_id: str, tmp: Path, first: list[str], weights: list[str]) -> list[str]:
    """The shards the weight indexes name (all weights when there is no index); a shard the repo lacks is refused.
    Top-level safetensors no index names (e.g. a second copy in another layout) are not fetched."""
    from harness.io import read_json

    indexes = [n for n in first if n.endswith(WEIGHTS_INDEX)]
    if not indexes:
        return weights
    named: set[str] = set()
    for name in indexes:
        index = read_json(tmp / name)
        wm = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(wm, dict) or not all(isinstance(v, str) for v in wm.values()):
            raise HarnessError(f"{repo_id}: {name} has no weight_map of tensor -> shard file")
        named |= set(wm.values())
    missing = sorted(named - set(weights))
    if missing:
        raise HarnessError(f"{repo_id}: the weight index names {', '.join(missing)}, which the repository lacks")
    return sorted(named)


def _git_blob_sha1(path: Path, size: int) -> str:
    h = hashlib.sha1(f"blob {size}\0".encode())  # the git object id the hub lists, compared, not trusted
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_against_hub(repo_id: str, name: str, path: Path, sibling) -> dict[str, Any]:
    """The file's {sha256, size}, after checking them against the hub's metadata: the LFS sha256 of a large file,
    the git object id of a small one, and the size of both."""
    size, sha = path.stat().st_size, file_sha256(path)
    lfs = getattr(sibling, "lfs", None)
    expected_size = lfs.size if lfs is not None else getattr(sibling, "size", None)
    if expected_size is not None and size != expected_size:
        raise HarnessError(f"{repo_id}: {name} is {size} bytes, the hub lists {expected_size}; nothing was pulled")
    if lfs is not None and lfs.sha256 and sha != lfs.sha256:
        raise HarnessError(f"{repo_id}: {name} has sha256 {sha}, the hub lists {lfs.sha256}; nothing was pulled")
    blob_id = getattr(sibling, "blob_id", None)
    if lfs is None and blob_id and _git_blob_sha1(path, size) != blob_id:
        raise HarnessError(f"{repo_id}: {name} does not match the hub's git object {blob_id}; nothing was pulled")
    return {"sha256": sha, "size": size}


def _bar_class(on_bytes: Callable[[int], None]):
    """A silent huggingface_hub progress bar that hands the byte counts of one file to ``on_bytes`` (for a rich
    bar). Only the first bar made for the file counts: a Xet download makes a second one for network bytes."""
    from huggingface_hub.utils import tqdm as hf_tqdm

    class _Bar(hf_tqdm):
        first = True

        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            self.forward, type(self).first = type(self).first, False

        def update(self, n=1):
            if self.forward and n:
                on_bytes(int(n))
            return super().update(n)

    return _Bar


@contextlib.contextmanager
def _progress(console) -> Iterator[Callable[[str, int], Callable[[int], None]]]:
    """``start(name, size) -> advance(bytes)``: a transient rich bar for the current file on a terminal, nothing
    elsewhere (a log gets the one line per file instead)."""
    if console is None or not console.is_terminal:
        yield lambda name, size: (lambda n: None)
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TransferSpeedColumn,
    )

    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task("", total=None)

        def start(name: str, size: int) -> Callable[[int], None]:
            bar.reset(task, total=size or None, description=name)  # one bar, reused file after file
            return lambda n: bar.advance(task, n)

        yield start


def _fetch_all(repo_id: str, commit: str, names: list[str], siblings: dict, tmp: Path, endpoint: str,
               revision: str, console, files: dict) -> None:
    """Download ``names`` at ``commit`` into ``tmp``, each checked against the hub as it lands."""
    from huggingface_hub import hf_hub_download

    say = _sayer(console)
    with _progress(console) as start:
        for name in names:
            advance = start(name, getattr(siblings[name], "size", None) or 0)
            with _hub_errors(endpoint, repo_id, revision):
                got = hf_hub_download(repo_id, name, revision=commit, local_dir=tmp, endpoint=endpoint,
                                      etag_timeout=HUB_TIMEOUT_S, tqdm_class=_bar_class(advance))
            files[name] = _check_against_hub(repo_id, name, Path(got), siblings[name])
            say(f"  {name}  {human_size(files[name]['size'])}")


def _manifest_text(repo_id: str, revision: str, commit: str, files: dict) -> str:
    import huggingface_hub

    manifest = {"repo_id": repo_id, "revision": revision, "commit": commit, "files": files,
                "pulled_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "huggingface_hub": huggingface_hub.__version__}
    return json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _existing(final: Path, repo_id: str, commit: str) -> Pulled | str | None:
    """A Pulled for a destination whose manifest and files all verify; otherwise why not (None if absent)."""
    if not final.exists():
        return None
    try:
        m = read_manifest(final)
    except HarnessError as e:
        return str(e)
    if m is None:
        return f"{final} has no {MANIFEST}"
    if m["commit"] != commit or m["repo_id"].lower() != repo_id.lower():
        return f"{final}/{MANIFEST} is for {m['repo_id']}@{m['commit'][:12]}"
    problems = verify_files(final, m)
    if problems:
        return "; ".join(problems)
    sha = hashlib.sha256((final / MANIFEST).read_bytes()).hexdigest()
    return Pulled(final, commit, sha, m["files"], already=True)


def _publish(tmp: Path, final: Path) -> None:
    """Rename the finished temporary directory into place; an existing (unverifiable) one is swapped out."""
    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old", dir=final.parent))
        os.replace(final, old / final.name)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, final)


def pull(repo_id: str, revision: str = "main", dest_root: Path = DEFAULT_DEST, endpoint: str | None = None,
         console=None) -> Pulled:
    """Download ``repo_id`` at ``revision`` into ``dest_root/<org>__<name>-<commit[:12]>`` with its manifest.

    ``endpoint`` defaults to huggingface_hub's (``HF_ENDPOINT`` or https://huggingface.co). ``console`` (rich)
    gets one line per step. Every failure leaves ``dest_root`` as it was.
    """
    if not is_hub_id(repo_id):
        raise HarnessError(f"{repo_id!r} is not a hub model id (org/name, e.g. Qwen/Qwen2.5-1.5B-Instruct)")
    if not revision.strip():
        raise HarnessError("--revision must not be empty")
    say = _sayer(console)
    dest_root = Path(dest_root)
    if COMMIT.fullmatch(revision):  # a pinned commit already pulled needs no network at all
        done = _existing(dest_root / dir_name(repo_id, revision), repo_id, revision)
        if isinstance(done, Pulled):
            return done
    from huggingface_hub import HfApi, constants

    endpoint = (endpoint or constants.ENDPOINT).rstrip("/")
    with online():
        repo_id, commit, siblings = _resolve(HfApi(endpoint=endpoint), repo_id, revision, endpoint)
        say(f"{repo_id}@{revision} -> commit {commit}")
        final = dest_root / dir_name(repo_id, commit)
        done = _existing(final, repo_id, commit)
        if isinstance(done, Pulled):
            return done
        if done is not None:
            say(f"{final} exists but does not verify ({done}): pulling it again")
        first, weights = _plan(repo_id, siblings)
        try:
            return _download(repo_id, revision, commit, siblings, first, weights, final, endpoint, console)
        except OSError as e:  # the hub's own errors arrive as HarnessError; this is the local disk
            raise HarnessError(f"{final.parent}: cannot write the model: {e.strerror or _first_line(e)}") from None


def _download(repo_id: str, revision: str, commit: str, siblings: dict, first: list[str], weights: list[str],
              final: Path, endpoint: str, console) -> Pulled:
    created_root = not final.parent.exists()
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        files: dict[str, dict] = {}
        _fetch_all(repo_id, commit, first, siblings, tmp, endpoint, revision, console, files)
        _refuse_remote_code(repo_id, tmp)
        shards = _indexed_shards(repo_id, tmp, first, weights)
        _fetch_all(repo_id, commit, shards, siblings, tmp, endpoint, revision, console, files)
        shutil.rmtree(tmp / ".cache", ignore_errors=True)  # huggingface_hub's download bookkeeping
        text = _manifest_text(repo_id, revision, commit, dict(sorted(files.items())))
        (tmp / MANIFEST).write_text(text, encoding="utf-8")
        _publish(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if created_root:
            with contextlib.suppress(OSError):
                final.parent.rmdir()  # only if still empty
        raise
    return Pulled(final, commit, hashlib.sha256(text.encode("utf-8")).hexdigest(), files, already=False)
