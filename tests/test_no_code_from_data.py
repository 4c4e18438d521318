"""Data is never evaluated as code: the package's own source holds none of the calls that could run code
hidden in a user's file or params (read from the syntax tree, so a comment or a string cannot hide one)."""

from __future__ import annotations

import ast

import pytest

from tests.conftest import REPO

SOURCES = sorted((REPO / "harness").rglob("*.py"))
FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__"}
FORBIDDEN_ATTRS = {("pickle", "load"), ("pickle", "loads"), ("yaml", "load"), ("yaml", "unsafe_load"),
                   ("yaml", "full_load"), ("os", "system"), ("os", "popen"), ("subprocess", "getoutput")}


def _kw(call: ast.Call, name: str):
    return next((k.value for k in call.keywords if k.arg == name), None)


def _const(node) -> object:
    return node.value if isinstance(node, ast.Constant) else ...


def findings(path) -> list[str]:
    """Every call in one file that could turn data into code, as 'file:line: why'."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if not isinstance(node, ast.Call):
            continue
        where = f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path}:{node.lineno}"
        f = node.func
        if isinstance(f, ast.Name) and f.id in FORBIDDEN_CALLS:
            out.append(f"{where}: {f.id}()")
        if isinstance(f, ast.Attribute):
            owner = f.value.id if isinstance(f.value, ast.Name) else None
            if (owner, f.attr) in FORBIDDEN_ATTRS:
                out.append(f"{where}: {owner}.{f.attr}()")
            if owner == "torch" and f.attr == "load" and _const(_kw(node, "weights_only")) is not True:
                out.append(f"{where}: torch.load without weights_only=True")
            if owner == "np" and f.attr == "load" and _const(_kw(node, "allow_pickle")) is not False:
                out.append(f"{where}: np.load without allow_pickle=False")
        if _const(_kw(node, "shell")) is True:
            out.append(f"{where}: a subprocess through a shell")
        if _const(_kw(node, "trust_remote_code")) is True:
            out.append(f"{where}: trust_remote_code=True")
    return out


def test_the_scan_finds_what_it_looks_for(tmp_path):
    bad = tmp_path / "probe.py"
    bad.write_text("import os, pickle, subprocess, torch, numpy as np, yaml\n"
                   "eval(x)\npickle.loads(b)\ntorch.load(p)\nnp.load(p)\nsubprocess.run(c, shell=True)\n"
                   "yaml.load(t)\nm.from_pretrained(d, trust_remote_code=True)\n"
                   "torch.load(p, weights_only=True)\nnp.load(p, allow_pickle=False)\nyaml.safe_load(t)\n")
    got = findings(bad)
    assert [g.split(": ", 1)[1] for g in got] == [
        "eval()", "pickle.loads()", "torch.load without weights_only=True", "np.load without allow_pickle=False",
        "a subprocess through a shell", "yaml.load()", "trust_remote_code=True"]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO / "harness")))
def test_no_call_in_the_package_can_run_code_from_data(path):
    assert findings(path) == []
