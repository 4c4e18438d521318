"""SID stage: item embeddings -> semantic IDs (index.json in upstream's format) plus an upstream-layout export.

``sid.method`` picks the index the rest of the pipeline uses; every method in ``sid.compare`` is built from
the same embeddings too, and the quality of all of them (and of the source's shipped index, when it has
one) is set side by side in ``summary.json`` for the report.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from harness.data.schema import Dataset, read_dataset
from harness.data.upstream_format import write_upstream_dir
from harness.errors import HarnessError, ParamsError
from harness.io import atomic_dir, write_json
from harness.params import SidParams
from harness.sid.index import write_index_json
from harness.sid.quality import sid_quality
from harness.sid.registry import SHIPPED, SID_METHODS, check_name
from harness.sid.tokens import codes_to_tokens


def build_codes(emb: np.ndarray, method: str, p: SidParams, checkpoint_dir: Path | None = None,
                show_progress: bool = True) -> list[list[int]]:
    """Per-item code lists (0-based) from the method's registered builder; a dedup level makes some one longer."""
    k = p.codebook_size
    if k > len(emb):
        raise ParamsError("params.yaml", "sid.codebook_size", f"{k} codes per level exceed the {len(emb)} items")
    return SID_METHODS[check_name(method)].builder()(emb, p, checkpoint_dir, show_progress)


def codebook_sizes(codes: list[list[int]], levels: int, k: int) -> list[int]:
    """Codes per level: K for the built levels, the largest collision group for a dedup level."""
    sizes = [k] * levels
    if any(len(c) > levels for c in codes):
        sizes.append(1 + max(c[levels] for c in codes if len(c) > levels))
    return sizes


def load_embeddings(embed_dir: Path, n_items: int) -> np.ndarray:
    path = embed_dir / "embeddings.npy"
    if not path.is_file():
        raise HarnessError(f"{path}: not found (run the embed stage first: dvc repro embed)")
    emb = np.load(path, allow_pickle=False)
    if emb.ndim != 2 or len(emb) != n_items:
        raise HarnessError(f"{path}: shape {emb.shape} does not match {n_items} items (re-run the embed stage)")
    return emb


# Builds the selected method's index another way (the upstream adapter's rq/ scripts): given the embeddings,
# the dataset and the stage's output folder, it returns the index, the codebook size of each level (or None)
# and extra fields for summary.json.
SelectedBuilder = Callable[[np.ndarray, Dataset, Path], tuple[dict, list[int] | None, dict]]


def run_sid(p: SidParams, dataset_dir: str | Path, embed_dir: str | Path,
            out_dir: str | Path, build_selected: SelectedBuilder | None = None) -> dict:
    """Entry point of the ``sid`` stage (``build_selected``: the index of ``sid.method`` comes from there; the
    other methods of ``sid.compare`` are still built here)."""
    ds: Dataset = read_dataset(Path(dataset_dir))
    if p.method == SHIPPED and ds.sid_index is None:
        raise ParamsError("params.yaml", "sid.method", "'shipped' needs a data source that ships an index.json")
    methods = [p.method] + [m for m in p.compare if m != p.method]
    built = [m for m in methods if m != SHIPPED]
    emb = load_embeddings(Path(embed_dir), len(ds.items)) if built else None
    with atomic_dir(out_dir) as tmp:
        comparison, chosen, extra = [], None, {}
        for method in methods:
            if method == SHIPPED:
                index, sizes = dict(ds.sid_index), None
            elif method == p.method and build_selected is not None:
                index, sizes, extra = build_selected(emb, ds, tmp)
            else:
                codes = build_codes(emb, method, p, tmp / "checkpoints")
                index = {it.id: codes_to_tokens(codes[it.id]) for it in ds.items}
                sizes = codebook_sizes(codes, p.levels, p.codebook_size)
            comparison.append({"method": method, "selected": method == p.method, **sid_quality(index, ds.items)})
            if method == p.method:
                chosen = index, sizes
        if ds.sid_index is not None and SHIPPED not in methods:
            comparison.append({"method": SHIPPED, "selected": False, **sid_quality(ds.sid_index, ds.items)})
        index, sizes = chosen
        summary = {"method": p.method, "backend": p.backend, **comparison[0], "comparison": comparison}
        if p.method != SHIPPED:
            summary.update({"levels": p.levels, "codebook_size": p.codebook_size, "codebook_size_per_level": sizes})
        summary.update(extra)
        write_index_json(tmp / "index.json", index)
        write_upstream_dir(ds, tmp / "upstream", ds.name, index)
        write_json(tmp / "summary.json", summary)
    return summary
