"""Every documented `dvc exp run -S ...` and `harness profile run|show NAME` works against this params.yaml.

README.md and docs/*.md are read when the tests are collected, so a rewritten README is covered as it is. Each
`-S key=value` is applied to a copy of params.yaml by DVC's own code (dvc.utils.hydra.apply_overrides: Hydra's
override grammar on the file in struct mode, exactly what `dvc exp run -S` does, so a key that params.yaml
lacks fails as it would there), then every section is validated. A profile's overrides are computed by
harness.profiles and applied the same way. Nothing runs the pipeline."""

from __future__ import annotations

import re
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness.errors import ParamsError
from harness.params import DEFAULT_PARAMS, SECTIONS, load_yaml, validate_section
from harness.profiles import _flatten, _hydra, exp_command, load_profile, merged_params
from tests.conftest import REPO

PARAMS = REPO / "params.yaml"
PROFILES = REPO / "profiles"
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

PLACEHOLDER = "..."  # `-S ...`: "and more"
_ANY_VALUE = re.compile(r"\.\.\.|<[^<>]+>")  # `-S sid.method=...` / `=<name>`: any value; the key must exist
_SET = re.compile(r"(?:^|\s)(?:-S|--set-param)(?:\s|=|$)")
_PROFILE = re.compile(r"harness profile (run|show)\s+([A-Za-z0-9][\w.-]*)")
_FENCE = re.compile(r"^\s*(```|~~~)")


@dataclass
class DocCommand:
    file: str  # relative to the repository
    line: int  # 1-based, where the command starts
    text: str  # as written (continuations joined)
    lines: range = field(default=range(0))  # the doc lines it spans
    invocations: list[list[str]] = field(default_factory=list)  # the -S arguments of each dvc exp run

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


# ---------------------------------------------------------------- extraction
def _code_lines(lines: list[str]) -> tuple[list[tuple[int, int, str]], list[tuple[int, str]]]:
    """(first line, last line, logical line) of fenced code with backslash continuations joined, and the
    (line, text) of everything outside fences."""
    code, prose, in_fence, pending = [], [], False, None
    for n, line in enumerate(lines, 1):
        if _FENCE.match(line):
            in_fence, pending = not in_fence, None
            continue
        if not in_fence:
            prose.append((n, line))
            continue
        if pending is not None:
            start, text = pending
        else:
            start, text = n, ""
        stripped = line.rstrip()
        if stripped.endswith("\\"):
            pending = (start, text + stripped[:-1] + " ")
        else:
            pending = None
            code.append((start, n, text + line))
    return code, prose


def _inline_spans(prose: list[tuple[int, str]]) -> list[tuple[int, int, str]]:
    """(first line, last line, text) of inline code spans outside fences; a span may wrap within a paragraph."""
    spans = []
    block: list[tuple[int, str]] = []

    def flush():
        if not block:
            return
        text = "\n".join(t for _, t in block)
        starts = [0]
        for _, t in block:
            starts.append(starts[-1] + len(t) + 1)
        for m in re.finditer(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", text, re.DOTALL):
            first = next(i for i in range(len(block)) if starts[i + 1] > m.start())
            last = next(i for i in range(len(block)) if starts[i + 1] > m.end() - 1)
            spans.append((block[first][0], block[last][0], m.group(2).replace("\n", " ")))
        block.clear()

    prev = None
    for n, line in prose:
        if not line.strip() or (prev is not None and n != prev + 1):  # a blank line or a fence ends a paragraph
            flush()
        if line.strip():
            block.append((n, line))
        prev = n
    flush()
    return spans


def _simple_commands(text: str) -> list[list[str]]:
    """Shell words of each simple command (split at ; && || | &), `for V in ...; do ...; done` expanded."""
    lex = shlex.shlex(text, posix=True, punctuation_chars=";&|")
    lex.whitespace_split = True
    cmds, cur = [], []
    for tok in lex:
        if set(tok) <= set(";&|"):
            if cur:
                cmds.append(cur)
            cur = []
        else:
            cur.append(tok)
    if cur:
        cmds.append(cur)
    out, i = [], 0
    while i < len(cmds):
        c = cmds[i]
        if len(c) >= 3 and c[0] == "for" and c[2] == "in":
            var, values, body = c[1], c[3:], []
            i += 1
            while i < len(cmds) and cmds[i] != ["done"]:
                body.append(cmds[i][1:] if cmds[i][:1] == ["do"] else cmds[i])
                i += 1
            for v in values:
                for b in body:
                    out.append([re.sub(rf"\$(?:{var}\b|\{{{var}\}})", v, w) for w in b])
        else:
            out.append(c)
        i += 1
    return out


def _set_params(words: list[str]) -> list[str]:
    sets = []
    for i, w in enumerate(words):
        if w in ("-S", "--set-param") and i + 1 < len(words):
            sets.append(words[i + 1])
        elif w.startswith(("-S=", "--set-param=")):
            sets.append(w.split("=", 1)[1])
    return [s for s in sets if s != PLACEHOLDER]


def _invocations(text: str, whole: bool) -> list[list[str]]:
    """The -S arguments of each `dvc exp run` in ``text`` (``whole``: also a bare `-S a=b -S c=d` fragment)."""
    runs = []
    for words in _simple_commands(text):
        at = next((i for i in range(len(words) - 2) if words[i:i + 3] == ["dvc", "exp", "run"]), None)
        if at is not None:
            runs.append(_set_params(words[at + 3:]))
        elif whole and _SET.search(" ".join(words)):
            runs.append(_set_params(words))
    return runs


def documented() -> tuple[list[DocCommand], list[DocCommand]]:
    """(dvc exp run commands, harness profile commands) of README.md and docs/*.md."""
    exp, prof = [], []
    for path in DOCS:
        rel = path.relative_to(REPO).as_posix()
        lines = path.read_text(encoding="utf-8").splitlines()
        code, prose = _code_lines(lines)
        for first, last, text in code:
            if "dvc exp run" in text:
                exp.append(DocCommand(rel, first, text.strip(), range(first, last + 1), _invocations(text, False)))
        for first, last, text in _inline_spans(prose):
            if _SET.search(text):
                exp.append(DocCommand(rel, first, text.strip(), range(first, last + 1), _invocations(text, True)))
        for n, line in enumerate(lines, 1):
            for m in _PROFILE.finditer(line):
                if not m.group(2).isupper():  # NAME: a placeholder
                    prof.append(DocCommand(rel, n, m.group(0), range(n, n + 1), [[m.group(2)]]))
    return exp, prof


EXP, PROF = documented()


# ---------------------------------------------------------------- applying, as dvc exp run -S does
def _lookup(doc: dict, key: str) -> tuple[bool, object]:
    node: object = doc
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _apply(cmd: DocCommand, sets: list[str], tmp_path: Path) -> Path:
    """A copy of params.yaml with ``sets`` applied by DVC (dvc exp run -S), every section then validated."""
    from dvc.exceptions import InvalidArgumentError
    from dvc.utils.cli_parse import to_path_overrides
    from dvc.utils.hydra import apply_overrides

    target = tmp_path / "params.yaml"
    shutil.copyfile(PARAMS, target)
    base = load_yaml(PARAMS)
    resolved = []
    for s in sets:  # a documented placeholder value stands for any value: the key's own
        key, _, value = s.partition("=")
        if _ANY_VALUE.fullmatch(value):
            found, current = _lookup(base, key.lstrip("+~"))
            if not found:
                pytest.fail(f"{cmd.where}: `{cmd.text}`: -S {s}: key '{key}' is not in {DEFAULT_PARAMS}")
            s = f"{key}={_hydra(current)}"
        resolved.append(s)
    for path, overrides in to_path_overrides(resolved).items():
        if Path(path).name != DEFAULT_PARAMS.name:
            pytest.fail(f"{cmd.where}: `{cmd.text}`: sets params in {path}, which is not {DEFAULT_PARAMS}")
        try:
            apply_overrides(target, overrides)  # all at once, as dvc does
        except InvalidArgumentError:
            shutil.copyfile(PARAMS, target)
            for o in overrides:  # which one: one at a time, in order
                try:
                    apply_overrides(target, [o])
                except InvalidArgumentError as e:
                    key = o.partition("=")[0].lstrip("+~")
                    cause = str(e.__cause__ or e).splitlines()
                    pytest.fail(f"{cmd.where}: `{cmd.text}`: -S {o}: key '{key}' cannot be set in "
                                f"{DEFAULT_PARAMS} by dvc exp run: {' '.join(cause)}")
            raise
    doc = load_yaml(target)
    for section in SECTIONS:
        try:
            validate_section(section, doc.get(section) or {}, target)
        except ParamsError as e:
            pytest.fail(f"{cmd.where}: `{cmd.text}`: key '{e.key}' is invalid after the overrides: {e}")
    return target


# ---------------------------------------------------------------- tests
@pytest.mark.parametrize("cmd", EXP, ids=[c.where for c in EXP])
def test_documented_dvc_exp_run_sets_existing_keys_to_valid_values(cmd, tmp_path):
    assert cmd.invocations, f"{cmd.where}: `{cmd.text}`: no dvc exp run (or -S argument) recognised"
    for sets in cmd.invocations:
        _apply(cmd, sets, tmp_path)


@pytest.mark.parametrize("cmd", PROF, ids=[c.where for c in PROF])
def test_documented_profile_loads_and_its_overrides_apply(cmd, tmp_path):
    name = cmd.invocations[0][0]
    profile = load_profile(name, PROFILES)
    base = load_yaml(PARAMS)  # the working tree's params.yaml as the committed base (what it is once committed)
    argv = exp_command(profile, base, base)
    sets = [argv[i + 1] for i, w in enumerate(argv) if w == "-S"]
    applied = load_yaml(_apply(cmd, sets, tmp_path))
    assert dict(_flatten(applied)) == dict(_flatten(merged_params(profile, base))), \
        f"{cmd.where}: `{cmd.text}`: dvc's -S gives other params than the profile"


def test_every_documented_set_param_is_extracted():
    """Coverage of the extractor itself: each doc line holding `-S key=value` lies inside an extracted command,
    and the README's recipes are found (a pattern this file does not understand fails here, not silently)."""
    covered = {(c.file, n) for c in EXP for n in c.lines}
    missed = []
    for path in DOCS:
        rel = path.relative_to(REPO).as_posix()
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if re.search(r"(?:^|[\s`])(?:-S|--set-param)[\s=]+['\"]?[+~]?[\w.]+=", line) and (rel, n) not in covered:
                missed.append(f"{rel}:{n}: {line.strip()}")
    assert not missed, "documented -S arguments the test does not check:\n" + "\n".join(missed)
    assert any(c.file == "README.md" and c.invocations and c.invocations[0] for c in EXP)
