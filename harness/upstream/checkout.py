"""Check out exactly the pinned upstream commit into the ``upstream/`` submodule, from any git source.

``make upstream`` runs this (``UPSTREAM_URL=<git URL or local path>`` overrides the URL in .gitmodules, for
anyone behind a firewall or using a mirror). It uses only the standard library and the git command line, so it
runs before the harness's environment exists.

A source may lack some files of the pinned tree: a mirror that leaves out large files, or a snapshot missing
a few blobs. Such a source cannot serve an ordinary fetch (git refuses to pack an object it does not have), so
the commit and its trees are fetched first without blobs (a partial clone), then the blobs, and whatever the
source cannot give is left out of the work tree as a *sparse checkout*: git then knows those paths are
deliberately absent, ``git status`` in ``upstream/`` stays clean, and ``git ls-files -t`` marks them ``S``.
``harness provenance`` lists them, and a stage that needs one stops naming it.

Usage: python harness/upstream/checkout.py [--url URL] [--root SUPERPROJECT]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

SUBMODULE = "upstream"
# A local source's own upload-pack must agree to filtered fetches and to wants by object id; over https the
# server decides and this setting is not used.
UPLOAD_PACK = "git -c uploadpack.allowFilter=true -c uploadpack.allowAnySHA1InWant=true upload-pack"


class CheckoutError(Exception):
    pass


def git(cwd: Path, *args: str, check: bool = True, quiet: bool = False) -> subprocess.CompletedProcess:
    r = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)  # noqa: S603 - argument list
    if check and r.returncode:
        raise CheckoutError(f"git {' '.join(args)} (in {cwd}) failed: {(r.stderr or r.stdout).strip()}")
    return r


def pinned_commit(root: Path) -> str:
    r = git(root, "ls-tree", "HEAD", SUBMODULE, check=False)
    parts = r.stdout.split()
    if r.returncode or len(parts) < 3 or parts[1] != "commit":
        raise CheckoutError(f"{root}: HEAD records no gitlink for {SUBMODULE}/ (is this the harness checkout?)")
    return parts[2]


def resolve_url(root: Path, url: str | None) -> str:
    if not url:
        url = git(root, "config", "-f", ".gitmodules", f"submodule.{SUBMODULE}.url").stdout.strip()
    local = Path(url).expanduser()
    if "://" not in url and not url.startswith("git@") and local.exists():
        return str(local.resolve())  # a local repository or bare git dir
    return url


def submodule_gitdir(root: Path) -> Path:
    """The submodule's git directory, created (or reused when it is the empty placeholder) and linked."""
    common = Path(git(root, "rev-parse", "--git-common-dir").stdout.strip())
    common = common if common.is_absolute() else (root / common).resolve()
    worktree = root / SUBMODULE
    worktree.mkdir(exist_ok=True)
    dotgit = worktree / ".git"
    if dotgit.is_dir():  # an old-style embedded repository: use it as it is
        return dotgit
    gitdir = common / "modules" / SUBMODULE
    if not (gitdir / "HEAD").is_file():
        gitdir.parent.mkdir(parents=True, exist_ok=True)
        git(root, "init", "-q", "--bare", str(gitdir))
        git(root, "--git-dir", str(gitdir), "config", "core.bare", "false")
        git(root, "--git-dir", str(gitdir), "config", "core.worktree", os.path.relpath(worktree, gitdir))
    if not dotgit.exists():
        dotgit.write_text(f"gitdir: {os.path.relpath(gitdir, worktree)}\n", encoding="utf-8")
    return gitdir


def _missing(sub: Path, pin: str) -> list[str]:
    """Object ids of the pinned tree this repository does not have (never fetched lazily to find out)."""
    r = git(sub, "rev-list", "--objects", "--no-walk", "--missing=print", pin)
    return [line[1:].split()[0] for line in r.stdout.splitlines() if line.startswith("?")]


def _fetch_objects(sub: Path, oids: list[str]) -> None:
    args = ("-c", "fetch.negotiationAlgorithm=noop", "fetch", "-q", "--no-tags", "--no-write-fetch-head",
            "--filter=blob:none", "origin")
    if not oids or git(sub, *args, *oids, check=False).returncode == 0:
        return
    for oid in oids:  # the batch failed: the source lacks at least one; take the others one by one
        git(sub, *args, oid, check=False)


def _pattern(path: str) -> str:
    """A sparse-checkout pattern that matches exactly this path (gitignore syntax, specials escaped)."""
    escaped = "".join("\\" + c if c in "*?[]\\!#" else c for c in path)
    return "!/" + escaped


def checkout(root: Path, url: str | None = None) -> dict:
    root = root.resolve()
    pin = pinned_commit(root)
    source = resolve_url(root, url)
    gitdir = submodule_gitdir(root)
    sub = root / SUBMODULE
    git(root, "config", f"submodule.{SUBMODULE}.url", source)
    git(root, "config", f"submodule.{SUBMODULE}.active", "true")
    if git(sub, "remote", "get-url", "origin", check=False).returncode:
        git(sub, "remote", "add", "origin", source)
    else:
        git(sub, "remote", "set-url", "origin", source)
    git(sub, "config", "remote.origin.uploadpack", UPLOAD_PACK)
    if git(sub, "cat-file", "-e", f"{pin}^{{commit}}", check=False).returncode:
        r = git(sub, "fetch", "-q", "--no-tags", "--filter=blob:none", "origin", pin, check=False)
        if r.returncode:
            raise CheckoutError(f"could not fetch the pinned commit {pin} from {source}: "
                                f"{(r.stderr or r.stdout).strip()}")
    _fetch_objects(sub, _missing(sub, pin))
    absent_oids = set(_missing(sub, pin))
    tree = git(sub, "ls-tree", "-r", "-z", pin).stdout.split("\0")
    absent = sorted(entry.split("\t", 1)[1] for entry in tree
                    if entry and entry.split()[1] == "blob" and entry.split()[2] in absent_oids)
    if absent:
        git(sub, "sparse-checkout", "set", "--no-cone", "/*", *(_pattern(p) for p in absent))
    elif (Path(gitdir) / "info" / "sparse-checkout").is_file():
        git(sub, "sparse-checkout", "disable")
    r = git(sub, "-c", "advice.detachedHead=false", "checkout", "-q", "--detach", pin, check=False)
    if r.returncode:
        raise CheckoutError(f"checking out {pin} in {sub} failed: {(r.stderr or r.stdout).strip()}")
    head = git(sub, "rev-parse", "HEAD").stdout.strip()
    dirty = git(sub, "status", "--porcelain").stdout.strip()
    if head != pin or dirty:
        raise CheckoutError(f"{sub} is at {head} with changes {dirty!r} after checking out {pin}")
    files = sum(1 for entry in tree if entry and entry.split()[1] == "blob")
    return {"pin": pin, "source": source, "files": files, "absent": absent}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Check out the pinned upstream commit into upstream/.")
    ap.add_argument("--url", default=os.environ.get("UPSTREAM_URL") or None,
                    help="git URL or local path of the source (default: .gitmodules)")
    ap.add_argument("--root", default=".", help="the harness checkout (default: the current directory)")
    args = ap.parse_args(argv)
    try:
        got = checkout(Path(args.root), args.url)
    except CheckoutError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"upstream/ at {got['pin']} from {got['source']}: {got['files'] - len(got['absent'])} of "
          f"{got['files']} files checked out")
    for path in got["absent"]:
        print(f"  absent (the source lacks it; left out as a sparse checkout): {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
