"""Profiles: every shipped one is valid against every params section, its `dvc exp run -S` arguments parse
back (Hydra's grammar and DVC's own parser) to exactly its values, switching profiles resets a previous one's
keys, and a rehearsal stays its profile but for size, caps and processes (tests/test_rehearsals.py runs them).
The smollm2-cpu profile's stages run in the GPU check's smoke (tests/test_benchmarks.py, a tiny local model in
place of SmolLM2), and SmolLM2's LoRA SFT -> GRPO in tests/test_pretrained.py."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest
import yaml

from harness.errors import HarnessError, ParamsError
from harness.params import load_yaml
from harness.profiles import _flatten, available, load_profile, merged_params, overrides
from tests.conftest import REPO

PROFILES = REPO / "profiles"
BASE = load_yaml(REPO / "params.yaml")


def _parse(args: list[str]) -> dict:
    """What dvc does with -S: Hydra's override parser."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return {o.key_or_group: o.value() for o in OverridesParser.create().parse_overrides(args)}


SHIPPED = ["embedded", "industrial-cpu", "office-cpu", "paper-8gpu", "paper-8gpu-rehearsal", "single-gpu-16gb",
           "single-gpu-16gb-rehearsal", "smollm2-cpu"]
REHEARSALS = {"single-gpu-16gb-rehearsal": "single-gpu-16gb", "paper-8gpu-rehearsal": "paper-8gpu"}
# What a rehearsal may change of the profile it rehearses: the model's size (no 1.5B weights on a CPU), caps,
# the data the mirror has, and process counts / DDP where a CPU cannot do what the GPUs would.
REHEARSAL_KNOBS = re.compile(r"data\.upstream\.valid_as_train|embed\.max_length|sft\.(max_steps|max_examples|num_processes)|"
                             r"sft\.model\..*|rl\.(max_prompts|probe_prompts|num_processes|distributed)|"
                             r"evaluate\.(max_rows|unconstrained_rows|exact_rows|num_processes)")


def test_the_shipped_profiles():
    assert available(PROFILES) == SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_profile_is_valid_and_its_overrides_parse_back_to_its_values(name):
    profile = load_profile(name, PROFILES)
    target = dict(_flatten(merged_params(profile, BASE)))  # validates every section
    parsed = _parse(overrides(profile, BASE, BASE))
    assert parsed == {k: target[k] for k in parsed}
    assert set(parsed) == {k for k, _ in _flatten(profile.params)}  # from the committed params: only its own keys
    if name == "embedded":
        assert parsed == {}


@pytest.mark.parametrize("name", SHIPPED)
def test_dvc_applies_every_profile_to_the_committed_params_exactly(name, tmp_path):
    """The `dvc exp run -S` arguments of `harness profile run NAME`, applied by DVC's own code to params.yaml,
    give exactly base + profile (nothing dropped, nothing mistyped by the override grammar)."""
    from dvc.utils.hydra import apply_overrides

    profile = load_profile(name, PROFILES)
    target = tmp_path / "params.yaml"
    shutil.copyfile(REPO / "params.yaml", target)
    if sets := overrides(profile, BASE, BASE):
        apply_overrides(target, sets)
    assert dict(_flatten(load_yaml(target))) == dict(_flatten(merged_params(profile, BASE)))


@pytest.mark.parametrize("name", sorted(REHEARSALS))
def test_a_rehearsal_is_its_profile_but_for_size_caps_and_processes(name):
    rehearsal, profile = load_profile(name, PROFILES), load_profile(REHEARSALS[name], PROFILES)
    assert rehearsal.extends == profile.name
    mine, theirs = dict(_flatten(merged_params(rehearsal, BASE))), dict(_flatten(merged_params(profile, BASE)))
    changed = sorted(k for k in mine if mine[k] != theirs[k])
    assert changed and all(REHEARSAL_KNOBS.fullmatch(k) for k in changed), changed
    assert mine["sft.model.source"] == "scratch" and mine["sft.model.architecture"] == "qwen2"
    assert theirs["sft.model.source"] == "Qwen/Qwen2.5-1.5B-Instruct"


def test_extends_resolves_and_refuses_loops(tmp_path):
    def write(name, **doc):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump({"description": name, "hardware": "x", **doc}))

    write("base", params={"sft": {"epochs": 3, "batch_size": 8}})
    write("child", extends="base", params={"sft": {"epochs": 1}})
    assert load_profile("child", tmp_path).params == {"sft": {"epochs": 1, "batch_size": 8}}
    write("a", extends="b")
    write("b", extends="a")
    with pytest.raises(ParamsError, match="loop"):
        load_profile("a", tmp_path)
    write("orphan", extends="missing")
    with pytest.raises(HarnessError, match="'missing' \\(extended by orphan\\) not found"):
        load_profile("orphan", tmp_path)


def test_paper_profile_carries_upstreams_recipe():
    m = merged_params(load_profile("paper-8gpu", PROFILES), BASE)
    sft, rl = m["sft"], m["rl"]
    assert sft["batch_size"] * sft["gradient_accumulation_steps"] * sft["num_processes"] == 1024
    assert (sft["learning_rate"], sft["lr_scheduler"], sft["early_stopping_patience"]) == (3e-4, "linear", 3)
    assert rl["prompts_per_step"] * rl["num_generations"] == 64 and rl["distributed"] == "zero2"
    assert (rl["learning_rate"], rl["beta"], rl["epochs"], rl["reward"]) == (1e-5, 1e-3, 2, "ranking")


def test_switching_profiles_resets_the_previous_ones_keys():
    paper = merged_params(load_profile("paper-8gpu", PROFILES), BASE)
    back = _parse(overrides(load_profile("embedded", PROFILES), BASE, paper))
    assert back["sft.num_processes"] == 1 and back["sft.model.source"] == "scratch"
    assert back["data.source"] == "synthetic" and back["evaluate.dtype"] == "float32"
    smol = _parse(overrides(load_profile("smollm2-cpu", PROFILES), BASE, paper))
    assert smol["sft.num_processes"] == 1 and smol["sft.model.source"] == "smollm2-135m"
    stray = {**BASE, "sft": {**BASE["sft"], "my_key": 1}}
    with pytest.raises(HarnessError, match="sft.my_key"):
        overrides(load_profile("embedded", PROFILES), BASE, stray)


def test_a_bad_profile_names_its_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"description": "x", "hardware": "y", "params": {"sft": {"learning_rat": 1}}}))
    with pytest.raises(ParamsError) as e:
        merged_params(load_profile("bad", tmp_path), BASE)
    assert e.value.key == "sft.learning_rat" and str(bad) in str(e.value)
    bad.write_text(yaml.safe_dump({"description": "x", "hardware": "y", "params": {"training": {}}}))
    with pytest.raises(ParamsError, match="params.training"):
        load_profile("bad", tmp_path)
    with pytest.raises(HarnessError, match="available: bad"):
        load_profile("missing", tmp_path)


def test_profile_run_refuses_the_remains_of_an_interrupted_experiment(tmp_path):
    """An interrupted `dvc exp run` leaves refs/exps/exec/* and a detached HEAD; a new run over them would put
    the user's next commits on the detached HEAD. `harness profile run` stops first and names the repair."""
    def git(*args):
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path,
                              check=True, capture_output=True, text=True).stdout.strip()

    git("init", "-q", "-b", "main")
    (tmp_path / "params.yaml").write_text("sft: {}\n")
    git("add", "-A")
    git("commit", "-qm", "base")
    r = subprocess.run([sys.executable, "-m", "harness.cli", "profile", "run", "no-such-profile"], cwd=tmp_path,
                       capture_output=True, text=True)
    assert r.returncode == 2 and "interrupted" not in r.stderr  # a clean repo gets as far as the profile
    head = git("rev-parse", "HEAD")
    git("update-ref", "refs/exps/exec/EXEC_HEAD", head)  # what every finished workspace run leaves: fine
    r = subprocess.run([sys.executable, "-m", "harness.cli", "profile", "run", "no-such-profile"], cwd=tmp_path,
                       capture_output=True, text=True)
    assert r.returncode == 2 and "interrupted" not in r.stderr
    git("update-ref", "refs/exps/exec/EXEC_BASELINE", head)
    git("checkout", "-q", "--detach")
    r = subprocess.run([sys.executable, "-m", "harness.cli", "profile", "run", "embedded"], cwd=tmp_path,
                       capture_output=True, text=True)
    message = " ".join(r.stderr.split())
    assert r.returncode == 2 and "refs/exps/exec/EXEC_BASELINE" in message
    assert f"HEAD is detached at {head[:7]}" in message and "git branch -f main HEAD" in message
    assert git("rev-parse", "--abbrev-ref", "HEAD") == "HEAD"  # nothing was changed for the user

