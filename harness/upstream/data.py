"""The ``data`` stage's upstream adapter: the pinned data/amazon18_data_process.py on the raw Amazon-2018 files;
its ``.inter`` splits and ``item.json`` become the canonical dataset (what ``harness.data.run_data`` writes)."""

from __future__ import annotations

from pathlib import Path

from harness.data.schema import Dataset, Interaction, write_dataset
from harness.data.upstream_format import read_item_json
from harness.errors import DataFormatError, HarnessError, ParamsError
from harness.io import atomic_dir, read_utf8
from harness.params import DataParams
from harness.upstream import source
from harness.upstream.runner import Command, begin, finish, run_command, workdir

SCRIPT = "data/amazon18_data_process.py"


def preprocess_command(p: DataParams, python: str, out_dir: Path) -> Command:
    """The script on ``data.preprocess``'s raw files, with the time zone pinned (its window bounds are local time,
    H15). Every path is absolute: upstream would otherwise guess ``../`` files relative to its data/ folder."""
    pp = p.preprocess
    for key in ("reviews_file", "metadata_file"):
        value = getattr(pp, key)
        if not value:
            raise ParamsError("params.yaml", f"data.preprocess.{key}", "required with data.backend: upstream "
                              "(upstream would otherwise guess a ../ path relative to its data/ folder, H20)")
        if not Path(value).expanduser().is_file():
            raise ParamsError("params.yaml", f"data.preprocess.{key}", f"{value}: file not found")
    k = str(pp.user_k)
    return Command([python, "amazon18_data_process.py", "--dataset", pp.category, "--user_k", k, "--item_k", k,
                    "--st_year", str(pp.st_year), "--st_month", str(pp.st_month), "--ed_year", str(pp.ed_year),
                    "--ed_month", str(pp.ed_month), "--metadata_file", str(Path(pp.metadata_file).expanduser().resolve()),
                    "--reviews_file", str(Path(pp.reviews_file).expanduser().resolve()),
                    "--output_path", str(out_dir.resolve())], cwd="data", env={"TZ": pp.tz})


def read_inter(path: Path, split: str) -> list[Interaction]:
    """An upstream ``.inter`` split (TSV: user index, space-separated history ids, target id)."""
    rows: list[Interaction] = []
    lines = read_utf8(path).splitlines()
    if not lines or not lines[0].startswith("user_id"):
        raise DataFormatError(path, 1, "expected the header user_id:token<TAB>item_id_list:token_seq<TAB>item_id:token")
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 3:
            raise DataFormatError(path, n, f"expected 3 tab-separated fields, got {len(parts)}")
        try:
            history = tuple(int(x) for x in parts[1].split())
            rows.append(Interaction(f"A{int(parts[0])}", history, int(parts[2]), split))
        except ValueError:
            raise DataFormatError(path, n, "user, history and target must be integers") from None
    return rows


def run(p: DataParams, out_dir: str | Path, allow_unpinned: bool = False) -> Dataset:
    """Adapter of ``harness.data.run_data`` for ``data.backend: upstream``."""
    if p.source != "synthetic":
        raise ParamsError("params.yaml", "data.backend", "upstream runs the preprocessing script on raw files "
                          "(data.preprocess); an upstream-format data dir (data.source: upstream) is read natively")
    preprocess_command(p, "python", Path("."))  # params errors before anything starts
    record, python, started = begin("data", allow_unpinned)
    cat = p.preprocess.category
    with workdir("data") as work, atomic_dir(out_dir) as tmp:
        cmd = preprocess_command(p, python, work / "out")
        source.check_flags(cmd.argv, SCRIPT)
        codes = [run_command(cmd, work / "preprocess.log")]
        d = work / "out" / cat
        items = read_item_json(d / f"{cat}.item.json")
        rows = [r for split in ("train", "valid", "test") for r in read_inter(d / f"{cat}.{split}.inter", split)]
        bad = next((r for r in rows if r.target >= len(items) or any(h >= len(items) for h in r.history)), None)
        if bad is not None:
            raise HarnessError(f"{d}: user {bad.user} refers to an item id outside {cat}.item.json")
        too_long = max((len(r.history) for r in rows), default=0)
        if too_long > p.max_history:
            raise ParamsError("params.yaml", "data.max_history", f"{p.max_history}, but upstream wrote histories of "
                              f"{too_long} items")
        not_passed = {"split": {"params": list(p.split), "upstream": "a global temporal 8:1:1 split, fixed"}} \
            if tuple(p.split) != (0.8, 0.1, 0.1) else {}
        ds = Dataset(name=cat, items=items, interactions=rows, sid_index=None,
                     meta={"source": "upstream-preprocess", "preprocess": p.preprocess.model_dump()})
        ds.meta["upstream"] = finish(tmp, record, [cmd], codes, started, [work / "preprocess.log"], not_passed)
        write_dataset(ds, tmp)
    return ds
