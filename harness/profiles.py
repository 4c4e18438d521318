"""Profiles: named sets of params overrides in ``profiles/<name>.yaml`` (hardware-sized recipes, from the
embedded CPU default to upstream's 8-GPU recipe), selected by one command.

``harness profile run NAME`` validates the overrides against every params section, then runs
``dvc exp run -n NAME -S key=value ...`` in the workspace: params.yaml is updated in place (that is the
selection), the pipeline reruns what the changed keys touch, and the run is recorded as an experiment.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError, ParamsError
from harness.params import DEFAULT_PARAMS, SECTIONS, load_yaml, parse_yaml, validate_section

_HYDRA_WORDS = {"true", "false", "null", "nan", "inf"}  # would parse as bool, None or float when unquoted
PROFILES_DIR = Path("profiles")  # beside params.yaml, in the project root where stages run


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    hardware: str
    params: dict  # with the extended profile's applied first
    path: Path
    extends: str | None = None


def available(profiles_dir: Path = PROFILES_DIR) -> list[str]:
    return sorted(p.stem for p in profiles_dir.glob("*.yaml"))


def load_profile(name: str, profiles_dir: Path = PROFILES_DIR, _seen: tuple[str, ...] = ()) -> Profile:
    """A profile, with ``extends: <other profile>`` resolved: the other's params, then this one's on top. A
    rehearsal is the profile it rehearses plus a few overrides, so it cannot drift from it."""
    path = profiles_dir / f"{name}.yaml"
    if not path.is_file():
        names = ", ".join(available(profiles_dir))
        where = f" (extended by {_seen[-1]})" if _seen else ""
        raise HarnessError(f"profile '{name}'{where} not found in {profiles_dir} (available: {names})")
    doc = load_yaml(path)
    for key in ("description", "hardware"):
        if not isinstance(doc.get(key), str):
            raise ParamsError(path, key, "must be a string")
    params = doc.get("params") or {}
    if not isinstance(params, dict):
        raise ParamsError(path, "params", "must be a mapping of params.yaml sections")
    extra = set(doc) - {"description", "hardware", "params", "extends"}
    if extra:
        raise ParamsError(path, sorted(extra)[0], "unknown key (expected description, hardware, extends, params)")
    for section, over in params.items():
        if section not in SECTIONS:
            raise ParamsError(path, f"params.{section}", f"not a params section ({', '.join(SECTIONS)})")
        if not isinstance(over, dict):
            raise ParamsError(path, f"params.{section}", "must be a mapping")
    parent = doc.get("extends")
    if parent is not None:
        if not isinstance(parent, str):
            raise ParamsError(path, "extends", "must be the name of another profile")
        if parent in (*_seen, name):
            raise ParamsError(path, "extends", f"profiles extend each other in a loop ({' -> '.join((*_seen, name, parent))})")
        params = _merge(load_profile(parent, profiles_dir, (*_seen, name)).params, params)
    return Profile(name, doc["description"], doc["hardware"], params, path, parent)


def committed_params(repo_dir: Path = Path(".")) -> dict:
    """params.yaml as committed at HEAD: the base every profile applies to, so that switching profiles never
    leaves a previous profile's keys behind."""
    from git import InvalidGitRepositoryError, NoSuchPathError, Repo
    from git.exc import GitCommandError

    try:
        text = Repo(repo_dir, search_parent_directories=True).git.show(f"HEAD:{DEFAULT_PARAMS}")
    except (InvalidGitRepositoryError, NoSuchPathError):
        raise HarnessError(f"{repo_dir.resolve()}: not a git checkout (profiles and dvc experiments need one)") \
            from None
    except GitCommandError:
        raise HarnessError(f"{DEFAULT_PARAMS} is not committed at HEAD: commit it first (it is the profiles' base)") \
            from None
    return parse_yaml(text) or {}


def merged_params(profile: Profile, base: dict) -> dict:
    """``base`` with the profile's overrides applied, every section validated (errors name the profile)."""
    merged = _merge(base, profile.params)
    for section in SECTIONS:
        validate_section(section, merged.get(section) or {}, profile.path)
    return merged


def overrides(profile: Profile, base: dict, workspace: dict) -> list[str]:
    """``dvc exp run -S`` arguments that turn the workspace params into base + profile: every key the profile
    sets, and every key where the workspace differs from that target (a previous profile's residue)."""
    target = dict(_flatten(merged_params(profile, base)))
    current = dict(_flatten(workspace))
    stray = sorted(set(current) - set(target))
    if stray:
        raise HarnessError(f"{DEFAULT_PARAMS}: key '{stray[0]}' is not in the committed {DEFAULT_PARAMS}; remove it "
                           "(or commit it) before selecting a profile")
    own = {k for k, _ in _flatten(profile.params)}
    return [f"{k}={_hydra(v)}" for k, v in target.items() if k in own or k not in current or current[k] != v]


def exp_command(profile: Profile, base: dict, workspace: dict) -> list[str]:
    cmd = ["dvc", "exp", "run", "-n", profile.name]
    for o in overrides(profile, base, workspace):
        cmd += ["-S", o]
    return cmd


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        nested = isinstance(v, dict) and isinstance(base.get(k), (dict, type(None)))
        out[k] = _merge(base.get(k) or {}, v) if nested else v
    return out


def _flatten(d: dict, prefix: str = "") -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out += _flatten(v, key + ".")
        else:
            out.append((key, v))
    return out


def _hydra(value: object) -> str:
    """A value in Hydra's override grammar: strings quoted (paths, hub ids and words alike), lists bracketed."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    if isinstance(value, str):
        plain = re.fullmatch(r"[A-Za-z_/.][A-Za-z0-9_./\-]*", value) and value.lower() not in _HYDRA_WORDS
        return value if plain else "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, list):
        return "[" + ",".join(_hydra(v) for v in value) + "]"
    raise HarnessError(f"profile value {value!r}: only scalars and lists of scalars can be passed to dvc exp run")


RUN_SCOPED_EXEC_REFS = ("EXEC_BASELINE", "EXEC_BRANCH", "EXEC_MERGE")


def check_no_interrupted_experiment(repo_dir: Path = Path(".")) -> None:
    """Refuse to start a workspace experiment over the remains of an interrupted one.

    A ``dvc exp run`` killed mid-run can leave ``refs/exps/exec/*`` behind and HEAD detached at the
    baseline. Commits made afterwards then land on the detached HEAD, and the next experiment compares
    against the wrong baseline, silently. The repair is two git commands, named in the error."""
    import git

    try:
        repo = git.Repo(repo_dir, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return  # not a git checkout: dvc exp run will say so itself
    refs = repo.git.for_each_ref("refs/exps/exec", format="%(refname)").split()
    # EXEC_HEAD stays after every finished workspace run; the run-scoped refs stay only when a run was cut short
    stale = [r for r in refs if r.rsplit("/", 1)[-1] in RUN_SCOPED_EXEC_REFS]
    if not stale:
        return
    head = f"HEAD is detached at {repo.head.commit.hexsha[:7]}" if repo.head.is_detached else "HEAD is on a branch"
    raise HarnessError(
        f"{repo.working_dir}: an interrupted `dvc exp run` left {', '.join(stale)} ({head}). If no experiment "
        "is running: `git branch -f main HEAD && git checkout main` (only if HEAD is detached), then "
        "`git for-each-ref --format='%(refname)' refs/exps/exec | xargs -n1 git update-ref -d`")
