"""dvc.yaml as the pipeline's one description: every stage's deps cover the harness code it can import, and its
artifact paths are on its ``cmd:`` line (the functions take them as arguments, with no defaults of their own)."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest
import yaml

from harness.upstream import backends

REPO = Path(__file__).resolve().parents[1]
# What each stage runs: the entry modules its command reaches (the backend stages reach both the native entry
# and the upstream adapter through harness/upstream/backends.py, which imports them by name).
ENTRY = {
    **{s: ["harness.upstream.backends", backends.NATIVE[s].split(":")[0], backends.UPSTREAM[s].split(":")[0]]
       for s in backends.NATIVE},
    "metrics": ["harness.evaluate.metrics_stage"],
    "audit": ["harness.audit.stage"],
    "report": ["harness.report.stage"],
}
# harness/cli.py maps each command's options to one entry function and holds no stage logic: it is every stage's
# dispatcher, not a dependency of one (editing a help text must not rerun the pipeline).
DISPATCHER = {"harness.cli"}
MODULE_STRING = re.compile(r"^((?:harness|checks)(?:\.\w+)+):\w+$")  # registry entries: "harness.sid.rqkmeans:build"
TABLE = REPO / "harness/upstream/backends.py"  # names every stage's entry: followed per stage through ENTRY instead
# The SID registry's "module:function" strings are imported by the code that builds with them: they are the
# sid stage's dependencies, not those of every module that only validates a method's name (harness/params.py).
BUILDERS = (REPO / "harness/sid/registry.py", REPO / "harness/sid/stage.py")


def _stages() -> dict[str, dict]:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    return {name: (s["do"] if "foreach" in s else s) for name, s in stages.items()}


def _file(module: str) -> Path | None:
    rel = Path(*module.split("."))
    for cand in (REPO / rel.with_suffix(".py"), REPO / rel / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def _imports(path: Path, strings: bool) -> set[str]:
    """Every harness/checks module the file can import: top-level and lazy imports, and "module:function"
    strings (registries import those by name)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}  # `from harness.embed import cache`
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str) and MODULE_STRING.match(node.value)
              and strings and path == BUILDERS[0]):
            out.add(MODULE_STRING.match(node.value).group(1))
    return {m for m in out if m.split(".")[0] in ("harness", "checks")}


def closure(modules: list[str]) -> set[Path]:
    """The files of ``modules`` and of everything they import, transitively (parent packages included)."""
    seen = _closure(modules, strings=False)
    if BUILDERS[1] in seen:
        seen |= _closure(modules, strings=True)
    return seen


def _closure(modules: list[str], strings: bool) -> set[Path]:
    seen: set[Path] = set()
    todo = list(modules)
    while todo:
        mod = todo.pop()
        if mod in DISPATCHER:
            continue
        parts = mod.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__.py and a/b/__init__.py too
            f = _file(".".join(parts[:i]))
            if f is not None and f not in seen:
                seen.add(f)
                todo.extend(_imports(f, strings))
    return seen


def _covered(path: Path, deps: list[str]) -> bool:
    rel = path.relative_to(REPO).as_posix()
    return any(rel == d or rel.startswith(d.rstrip("/") + "/") for d in deps)


@pytest.mark.parametrize("stage", list(ENTRY))
def test_stage_deps_cover_every_harness_module_it_imports(stage):
    deps = [d.replace("${item}", "sft") for d in _stages()[stage]["deps"]]
    missing = sorted(p.relative_to(REPO).as_posix() for p in closure(ENTRY[stage]) if not _covered(p, deps))
    assert not missing, f"dvc.yaml stage {stage!r} imports these modules without listing them in deps: {missing}"


def test_every_artifact_path_is_on_the_cmd_line_and_nowhere_a_default():
    """Outputs and data deps appear on the command (a file inside a folder given there counts); the entry
    functions take them as arguments without defaults, so dvc.yaml is the one place that names them."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for name, s in _stages().items():
        tokens = s["cmd"].split()
        tokens += [v for sec in s.get("params", []) for v in params[sec].values() if isinstance(v, str)]  # targets
        paths = [o if isinstance(o, str) else next(iter(o)) for o in s.get("outs", []) + s.get("metrics", [])]
        paths += [d for d in s["deps"] if not d.startswith(("harness", "checks", "configs", "report_templates"))]
        for path in paths:
            assert any(path == t or path.startswith(t.rstrip("/") + "/") for t in tokens), \
                f"stage {name}: {path} is not on its cmd line: {s['cmd']}"
    funcs = [_entry(spec) for spec in (*backends.NATIVE.values(), *backends.UPSTREAM.values(),
                                       "harness.evaluate.metrics_stage:run_metrics", "harness.audit.stage:run_audit",
                                       "harness.report.stage:run_report")]
    for fn in funcs:
        for arg, par in inspect.signature(fn).parameters.items():
            if arg.endswith(("_dir", "_path")):
                assert par.default is inspect.Parameter.empty, f"{fn.__module__}.{fn.__name__}({arg}=...) has a default"


def _entry(spec: str):
    from importlib import import_module

    module, func = spec.split(":")
    return getattr(import_module(module), func)
