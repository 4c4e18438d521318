"""Every hazard (H<n>) and upstream-stage (§x.y) citation in the code and docs resolves in docs/hazards.md, and
nothing points at documents a user does not have."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CITING = ["harness", "checks", "benchmarks", "tests", "docs", "profiles", "report_templates"]
FILES = [p for d in CITING for p in (REPO / d).rglob("*") if p.is_file() and p.suffix in (".py", ".md", ".yaml", ".j2")]
FILES = [p for p in FILES if p.name != "test_docs.py"] + [REPO / "README.md", REPO / "params.yaml", REPO / "dvc.yaml"]
HAZARD = re.compile(r"(?<![\w/-])H(\d{1,2})(?![\w])")
SECTION = re.compile(r"§(\d+(?:\.\d+)?)")


def test_every_hazard_and_section_cited_is_defined_in_hazards_md():
    anchors = set(re.findall(r'<a id="([hs][\d.]+)"></a>', (REPO / "docs/hazards.md").read_text()))
    assert {f"h{n}" for n in range(1, 22)} <= anchors
    missing = []
    for path in FILES:
        text = path.read_text(encoding="utf-8", errors="replace")
        for n, line in enumerate(text.splitlines(), 1):
            cited = [f"h{h}" for h in HAZARD.findall(line)] + [f"s{s}" for s in SECTION.findall(line)]
            missing += [f"{path.relative_to(REPO)}:{n}: {c}" for c in cited if c not in anchors]
    assert not missing, "cited but not defined in docs/hazards.md:\n" + "\n".join(missing)


def test_no_reference_to_private_documents():
    bad = []
    for path in FILES:
        text = path.read_text(encoding="utf-8", errors="replace")
        for n, line in enumerate(text.splitlines(), 1):
            if re.search(r"\bspec §|\bspec H\d|stack notes|upstream-spec|shared/docs", line):
                bad.append(f"{path.relative_to(REPO)}:{n}: {line.strip()[:100]}")
    assert not bad, "\n".join(bad)
