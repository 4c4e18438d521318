"""Facts read from the pinned checkout's scripts themselves, so the wrappers follow the real code rather than a
copy of it: which categories a script's hard-coded dict knows, which parameters its entry point takes, and on
which line a limit sits (for error messages that point at the upstream line that forbids something).

Everything here parses upstream's files as text or as a syntax tree; nothing of upstream is imported or run.
"""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

from harness.errors import HarnessError, ParamsError
from harness.provenance import SUBMODULE

PARAMS = "params.yaml"


def root() -> Path:
    return Path(SUBMODULE).resolve()


@lru_cache(maxsize=64)
def _tree(path: Path) -> ast.Module:
    try:
        return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (OSError, SyntaxError) as e:
        raise HarnessError(f"{path}: cannot read upstream's script ({e.__class__.__name__}: {e})") from None


def script(rel: str) -> Path:
    path = root() / rel
    if not path.is_file():
        raise HarnessError(f"{SUBMODULE}/{rel} not found: upstream/ is not checked out; run `make upstream` (with "
                           "UPSTREAM_URL=<mirror or local path> where GitHub is out of reach) to get the pinned commit")
    return path


def line_of(rel: str, needle: str) -> str:
    """``rel:N``, the first line of ``rel`` containing ``needle`` (``rel`` alone when it is not there)."""
    try:
        for n, line in enumerate(script(rel).read_text(encoding="utf-8").splitlines(), start=1):
            if needle in line:
                return f"{rel}:{n}"
    except HarnessError:
        pass
    return rel


def category_dict(rel: str) -> tuple[list[str], str]:
    """The keys of the script's ``category_dict = {...}`` literal and where it is (``rel:N``)."""
    for node in ast.walk(_tree(script(rel))):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "category_dict"
                                                for t in node.targets):
            value = ast.literal_eval(node.value)  # a literal dict of strings; never evaluated as code otherwise
            return list(value), f"{rel}:{node.lineno}"
    raise HarnessError(f"{SUBMODULE}/{rel}: no category_dict found (the wrapper no longer matches upstream)")


def need_category(rel: str, category: str, key: str) -> None:
    """Refuse up front a category the script's dict does not know (it would end in a KeyError there)."""
    known, where = category_dict(rel)
    if category not in known:
        raise ParamsError(PARAMS, key, f"upstream's {rel} knows only the categories {', '.join(known)} (the "
                          f"hard-coded dict at {where}); this dataset is {category!r}. Use data.source: upstream with "
                          "one of them, or the native backend")


def parameters(rel: str, function: str) -> list[str]:
    """The parameter names of ``function`` in ``rel`` (fire turns each into a ``--flag``)."""
    for node in ast.walk(_tree(script(rel))):
        if isinstance(node, ast.FunctionDef) and node.name == function:
            a = node.args
            return [x.arg for x in [*a.posonlyargs, *a.args, *a.kwonlyargs]]
    raise HarnessError(f"{SUBMODULE}/{rel}: no function {function}() (the wrapper no longer matches upstream)")


def argparse_flags(rel: str) -> list[str]:
    """The ``--flags`` an argparse script declares with ``add_argument``."""
    flags: list[str] = []
    for node in ast.walk(_tree(script(rel))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add_argument":
            flags += [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)
                      and a.value.startswith("--")]
    return flags


def check_flags(argv: list[str], rel: str, function: str | None = None) -> None:
    """Every ``--flag`` we pass must be one the real script takes: fire or argparse would exit 2 on the rest."""
    known = {f"--{p}" for p in parameters(rel, function)} if function else set(argparse_flags(rel))
    i = argv.index(Path(rel).name) if Path(rel).name in argv else 0
    passed = [a for a in argv[i + 1:] if a.startswith("--")]
    unknown = [f for f in passed if f not in known]
    if unknown:
        raise HarnessError(f"{SUBMODULE}/{rel} takes no {', '.join(unknown)} (it takes {', '.join(sorted(known))}): "
                           "the wrapper no longer matches the pinned script")
