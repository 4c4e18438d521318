"""Audit stage: the expectation suites in checks/ run on a dataset, its SID index and a model's generation config.

Findings are results, not errors: every figure lands in ``data.json``, ``sid.json``, ``generation.json``
and ``findings.json`` (contract: docs/results-schema.md, harness/results.py) plus a readable ``summary.md``; a
finding computed on rows or items names its first ones as ``"path:line"`` (harness/audit/locations.py).
Unreadable or malformed input is an error before anything is written. Whether findings fail the command is
the CLI's choice (`harness audit --fail-on`, harness/audit/findings.py::failing), after everything is written.
"""

from __future__ import annotations

import json
from pathlib import Path

from harness.audit.data import audit_data
from harness.audit.findings import findings_from, summary_markdown
from harness.audit.generation import audit_generation_config
from harness.audit.locations import canonical, upstream
from harness.audit.sid import audit_sid
from harness.io import write_json, write_text


def _write(out_dir: Path, title: str, data: dict | None, sid: dict | None, generation: dict | None,
           records: list[dict]) -> dict:
    findings = findings_from(records) + (generation["findings"] if generation else [])
    summary = summary_markdown(title, data, sid, generation, findings)
    out_dir.mkdir(parents=True, exist_ok=True)
    if data is not None:
        write_json(out_dir / "data.json", data)
    if sid is not None:
        write_json(out_dir / "sid.json", sid)
    if generation is not None:
        write_json(out_dir / "generation.json", generation)
    write_json(out_dir / "findings.json", findings)
    write_text(out_dir / "summary.md", summary)
    return {"data": data, "sid": sid, "generation": generation, "findings": findings, "summary": summary}


def audit_upstream_dir(data_dir: str | Path, category: str, out_dir: str | Path, model_dir: str | Path | None = None,
                       codebook_size: int | None = None) -> dict:
    """Audit an upstream-format data dir as it is (every split present), optionally with a model dir."""
    from harness.data.upstream_format import read_upstream_dir

    first: dict[str, list[str]] = {}
    ds, mismatches = read_upstream_dir(data_dir, category, lenient={"title_mismatch", "sid_mismatch"},
                                       locations=first)
    where = upstream(ds, data_dir, category)
    data, records = audit_data(ds, ds.sid_index, where)
    data["consistency"] = {"sid_mismatches": mismatches.get("sid_mismatch", 0),
                           "title_mismatches": mismatches.get("title_mismatch", 0)}
    sizes = [codebook_size] * max(len(t) for t in ds.sid_index.values()) if codebook_size else None
    sid, sid_records = audit_sid(ds, ds.sid_index, sizes, where)
    generation = audit_generation_config(model_dir) if model_dir else None
    records += sid_records
    for key, cls, lenient in (("sid_mismatches", "CSV/info SIDs differ from index.json", "sid_mismatch"),
                              ("title_mismatches", "CSV/info titles differ from item.json", "title_mismatch")):
        if data["consistency"][key]:
            records.append({"finding": f"consistency.{key}", "severity": "error", "success": False,
                            "unexpected_count": data["consistency"][key], "observed_value": None,
                            "locations": first.get(lenient, []),
                            "effect": f"{cls}: the files disagree, so training and scoring see different items"})
    return _write(Path(out_dir), f"{category} in {data_dir}", data, sid, generation, records)


def audit_model(model_dir: str | Path, out_dir: str | Path) -> dict:
    return _write(Path(out_dir), f"model {model_dir}", None, None, audit_generation_config(model_dir), [])


def run_audit(dataset_dir: str | Path, sid_dir: str | Path,
              model_dir: str | Path, out_dir: str | Path) -> dict:
    """Entry point of the ``audit`` stage: the pipeline's canonical dataset, SID index and SFT model."""
    from harness.data.schema import read_dataset
    from harness.sid.index import read_index_json

    ds = read_dataset(Path(dataset_dir))
    index = read_index_json(Path(sid_dir) / "index.json", len(ds.items))
    sid_summary = json.loads((Path(sid_dir) / "summary.json").read_text(encoding="utf-8"))
    where = canonical(ds, dataset_dir)
    data, records = audit_data(ds, index, where)
    sid, sid_records = audit_sid(ds, index, sid_summary.get("codebook_size_per_level"), where)
    generation = audit_generation_config(model_dir) if Path(model_dir).is_dir() else None
    return _write(Path(out_dir), f"pipeline dataset '{ds.name}'", data, sid, generation, records + sid_records)
