"""The test protocol: which test rows are scored, their prompts and targets, the catalogue they rank in
and the beam count. The evaluate stages decode under it and the metrics stage refuses scores made under
another one."""

from __future__ import annotations

from pathlib import Path

from harness.data.schema import Interaction, read_dataset
from harness.errors import HarnessError
from harness.metrics import TOPK
from harness.params import EvaluateParams
from harness.prompts import next_sid_prompt
from harness.sid.index import read_index_json
from harness.sid.tokens import catalogue_sids, history_sids, sid_string


class TestProtocol:
    """The scored rows of the test split, with their prompts and targets, and the catalogue they rank in."""

    __test__ = False  # not a pytest class

    def __init__(self, p: EvaluateParams, dataset_dir: Path, sid_dir: Path):
        self.dataset = read_dataset(dataset_dir)
        self.index = read_index_json(sid_dir / "index.json", len(self.dataset.items))
        rows = [r for r in self.dataset.split("test") if r.target in self.index]
        self.rows: list[Interaction] = rows[: p.max_rows] if p.max_rows is not None else rows
        if not self.rows:
            raise HarnessError(f"{dataset_dir}: no test rows with a SID target")
        self.catalogue = catalogue_sids(self.index)
        self.num_beams = min(p.num_beams, len(self.catalogue))
        self.prompts = [next_sid_prompt(history_sids(r.history, self.index)) for r in self.rows]
        self.targets = [sid_string(self.index[r.target]) for r in self.rows]
        self.ks = [k for k in TOPK if k <= self.num_beams]
        self.info_sids = [sid_string(self.index[i]) for i in sorted(self.index)]  # one per item, as upstream's info
        self.protocol = {"split": "test", "rows": len(self.rows), "num_beams": self.num_beams,
                         "num_beams_requested": p.num_beams, "catalogue_sids": len(self.catalogue), "sid_level": True}

    def record(self, i: int, pred: list[str], prompt: str | None = None) -> dict:
        """Row ``i`` in upstream's result format (``prompt``: the text shown as input, if not ours)."""
        return {"input": self.prompts[i] if prompt is None else prompt, "output": self.targets[i] + "\n",
                "predict": pred}

    def records(self, preds: list[list[str]]) -> list[dict]:
        """Upstream's result format, one object per row in test-split order."""
        return [self.record(i, pred) for i, pred in enumerate(preds)]
