"""One source of defaults: params.yaml holds every knob of every section, each equal to its typed default.

A key in params.yaml that the model lacks is already refused (extra="forbid"); here the other direction: a
model field missing from params.yaml (so `dvc exp run -S` cannot set it: DVC applies -S strictly against the
file), or a value in params.yaml that differs from the code's default (two defaults that disagree)."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from harness.params import SECTIONS, load_yaml, validate_section
from tests.conftest import REPO

PARAMS = REPO / "params.yaml"


def _differences(model: type[BaseModel], raw: dict, prefix: str) -> list[str]:
    """Every dotted key where ``raw`` (one section of params.yaml, or a nested mapping in it) lacks a field of
    ``model`` or holds a value other than the field's default, compared after validation (lists vs tuples)."""
    problems = []
    # the defaults through the same validation as the file's values (an int default of a float field: 4 -> 4.0)
    validated, default = model.model_validate(raw), model.model_validate(model().model_dump())
    for name in model.model_fields:
        key = f"{prefix}.{name}"
        value, expected = getattr(validated, name), getattr(default, name)
        if name not in raw:
            problems.append(f"{key}: missing from params.yaml (code default {expected!r})")
        elif isinstance(value, BaseModel):
            sub = raw[name]
            if not isinstance(sub, dict):
                problems.append(f"{key}: params.yaml holds {sub!r}, not a mapping of {type(value).__name__}")
            else:
                problems += _differences(type(value), sub, key)
        elif value != expected or type(value) is not type(expected):
            problems.append(f"{key}: params.yaml {value!r} != code default {expected!r}")
    return problems


@pytest.mark.parametrize("section", list(SECTIONS))
def test_params_yaml_holds_every_knob_at_its_typed_default(section):
    doc = load_yaml(PARAMS)
    assert section in doc, f"{PARAMS}: section '{section}' is missing"
    raw = doc[section]
    validate_section(section, raw, PARAMS)  # a key the model lacks, or an ill-typed value: ParamsError naming it
    problems = _differences(SECTIONS[section], raw, section)
    assert not problems, f"{PARAMS} and harness/params.py disagree:\n  " + "\n  ".join(problems)


def test_params_yaml_has_no_section_the_code_lacks():
    assert set(load_yaml(PARAMS)) == set(SECTIONS)


def test_the_walk_names_a_missing_nested_key_and_a_differing_value():
    """The check itself: a knob dropped from a nested mapping, or a changed value, is named by its dotted key."""
    doc = load_yaml(PARAMS)
    sid = {**doc["sid"], "rqvae": {k: v for k, v in doc["sid"]["rqvae"].items() if k != "device"},
           "codebook_size": doc["sid"]["codebook_size"] + 1}
    problems = _differences(SECTIONS["sid"], sid, "sid")
    assert any(p.startswith("sid.rqvae.device: missing") for p in problems)
    assert any(p.startswith("sid.codebook_size: params.yaml") for p in problems)
    assert len(problems) == 2
