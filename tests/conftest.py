"""Shared fixtures. Tests that need ../shared skip on a user's machine and fail in CI (HARNESS_REQUIRE_SHARED=1);
tests that need headless Chromium do the same (HARNESS_REQUIRE_BROWSER=1, which .ci/run sets)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_AMAZON = REPO.parent / "shared" / "upstream-data" / "Amazon"
CATEGORY = "Industrial_and_Scientific"


def pytest_configure(config):
    """Keep the embedding cache of test runs (and of the stages they launch) out of the user's cache."""
    import tempfile

    os.environ["HARNESS_CACHE_DIR"] = tempfile.mkdtemp(prefix="harness-test-cache-")


@pytest.fixture(scope="session")
def shared_amazon() -> Path:
    if not (SHARED_AMAZON / "index" / f"{CATEGORY}.item.json").is_file():
        msg = f"real upstream data not found at {SHARED_AMAZON}"
        if os.environ.get("HARNESS_REQUIRE_SHARED") == "1":
            pytest.fail(msg + " (HARNESS_REQUIRE_SHARED=1)")
        pytest.skip(msg)
    return SHARED_AMAZON


# Every headless Chromium start: no background connections (updates, sync, QUIC probes), which would otherwise
# hang on a closed network and keep the process from exiting.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")


def chromium_argv(profile_dir: Path) -> list[str]:
    """The command prefix of a headless Chromium with its own profile folder. Without Chromium on PATH the
    calling test skips on a user's machine and fails in CI (HARNESS_REQUIRE_BROWSER=1)."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        msg = "headless Chromium not installed (Debian package chromium)"
        if os.environ.get("HARNESS_REQUIRE_BROWSER") == "1":
            pytest.fail(msg + " (HARNESS_REQUIRE_BROWSER=1)")
        pytest.skip(msg)
    return [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}"]


@pytest.fixture()
def chromium(tmp_path_factory) -> list[str]:
    """:func:`chromium_argv` with a fresh profile: ``subprocess.run([*chromium, "--dump-dom", url])``."""
    return chromium_argv(tmp_path_factory.mktemp("chromium-profile"))


@pytest.fixture(scope="session")
def small_synthetic():
    """A small generated dataset plus a deterministic 3-level SID index (no embedding model needed)."""
    from harness.data.synthetic import generate
    from harness.params import SyntheticParams
    from harness.sid.tokens import codes_to_tokens

    ds = generate(SyntheticParams(n_items=40, n_users=60, seed=3), 10, (0.8, 0.1, 0.1))
    index = {it.id: codes_to_tokens([it.id % 5, (it.id // 5) % 4, it.id // 20]) for it in ds.items}
    return ds, index


@pytest.fixture()
def upstream_dir(tmp_path, small_synthetic) -> Path:
    """A small, valid upstream-format data dir written by our writer."""
    from harness.data.upstream_format import write_upstream_dir

    ds, index = small_synthetic
    d = tmp_path / "Amazon"
    write_upstream_dir(ds, d, "Toy", index)
    return d


TINY_MODEL = {"hidden_size": 16, "num_layers": 1, "num_heads": 2, "intermediate_size": 32, "tokenizer_vocab_size": 300}


@pytest.fixture()
def tiny_workdir(tmp_path) -> Path:
    """A working directory laid out as the pipeline's (data/dataset, data/sid/index.json) for running single
    stages with ``harness <stage> --params``: 40 items, 120 users, a deterministic 3-level SID index."""
    return write_tiny_workdir(tmp_path)


def write_tiny_workdir(tmp_path: Path) -> Path:
    """:func:`tiny_workdir`'s files under ``tmp_path`` (for module-scoped fixtures that train once)."""
    from harness.data.schema import write_dataset
    from harness.data.synthetic import generate
    from harness.params import SyntheticParams
    from harness.sid.index import write_index_json
    from harness.sid.tokens import codes_to_tokens

    ds = generate(SyntheticParams(n_items=40, n_users=120, seed=3), 10, (0.8, 0.1, 0.1))
    write_dataset(ds, tmp_path / "data" / "dataset")
    (tmp_path / "data" / "sid").mkdir(parents=True)
    write_index_json(tmp_path / "data/sid/index.json",
                     {it.id: codes_to_tokens([it.id % 5, (it.id // 5) % 4, it.id // 20]) for it in ds.items})
    return tmp_path


def stage_args(stage: str, item: str | None = None) -> list[str]:
    """The arguments of ``harness <stage>`` exactly as dvc.yaml's cmd line gives them (the one place that names
    the artifact paths); ``item`` fills evaluate's ``${item}``."""
    import shlex

    import yaml

    stages = yaml.safe_load((Path(__file__).resolve().parents[1] / "dvc.yaml").read_text())["stages"]
    name, _, _ = stage.partition("@")
    s = stages[name]["do"] if "foreach" in stages[name] else stages[name]
    argv = shlex.split(s["cmd"].replace("${item}", item or ""))
    assert argv[0] == "harness"
    return argv[1:]


def stage_paths(stage: str, item: str | None = None) -> list[str]:
    """The option values of dvc.yaml's cmd line, in order: the stage's entry function takes them positionally
    (evaluate's first one is the model name)."""
    args = stage_args(stage, item)
    return [a for prev, a in zip(args, args[1:]) if prev.startswith("--")]
