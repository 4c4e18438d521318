"""The sid stage's upstream-layout export (``data/sid/upstream/``) as upstream's training scripts read it: the
file each one needs, and the SID depth their datasets assume."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from harness.data.upstream_format import UPSTREAM_SUFFIX
from harness.errors import HarnessError, ParamsError
from harness.sid.index import read_index_json
from harness.upstream import source

PARAMS = "params.yaml"


def upstream_files(sid_dir: Path, category: str) -> dict[str, Path]:
    """The upstream-layout export the sid stage writes (train/valid/test CSVs, info, index, item)."""
    base = Path(sid_dir) / "upstream"
    files = {"index": base / "index" / f"{category}.index.json", "item": base / "index" / f"{category}.item.json",
             "info": base / "info" / f"{category}{UPSTREAM_SUFFIX}.txt"}
    files.update({s: base / s / f"{category}{UPSTREAM_SUFFIX}.csv" for s in ("train", "valid", "test")})
    return files


def require(files: dict[str, Path], keys: tuple[str, ...], stage: str) -> dict:
    """Every file ``stage``'s script reads must be in the export. Without a valid split (data.upstream.valid_as_train
    trains on it), the train CSV stands in for ``--eval_file``, and the returned note says what that changes."""
    note = {}
    if "valid" in keys and not files["valid"].is_file() and files["train"].is_file():
        files["valid"] = files["train"]
        note = {"valid_split": {"params": "none (the valid rows are training data: data.upstream.valid_as_train)",
                                "upstream": "reads --eval_file for its eval loss (sft.py also selects its checkpoint "
                                            "and stops early on it); the train CSV is passed there instead"}}
    for key in keys:
        if not files[key].is_file():
            raise HarnessError(f"{stage}: backend upstream needs {files[key]} (the sid stage's upstream-layout "
                               "export)")
    return note


def three_level_sids(index_path: Path, stage: str) -> dict:
    """Upstream's data.py builds its title/SID tasks by joining the first three tokens of each SID and skips shorter
    SIDs: any other SID depth is refused; a dedup level (4 tokens for colliding items) is recorded."""
    index = read_index_json(index_path)
    lengths = Counter(len(t) for t in index.values())
    where = source.line_of("data.py", "sids[2]")
    if any(n < 3 for n in lengths) or lengths.most_common(1)[0][0] != 3:
        raise ParamsError(PARAMS, "sid.levels", f"the index has SIDs of {dict(sorted(lengths.items()))} tokens; "
                          f"upstream's {where} reads exactly 3 levels (shorter SIDs are skipped, longer ones cut), so "
                          f"{stage}.backend: upstream needs sid.levels: 3")
    longer = sum(c for n, c in lengths.items() if n > 3)
    return {"sid_dedup_level": {"params": f"{longer} items with a 4th (dedup) token",
                                "upstream": f"its title/SID tasks use the first 3 tokens only ({where})"}} \
        if longer else {}
