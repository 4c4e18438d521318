"""History in, Top-K out: ``harness recommend`` on the command line and ``harness demo``, a local web page.

A history is a ``;``-separated list of items, each given by its SID (``<a_1><b_2><c_3>``) or its title
(exact, case-insensitive), or it is a test user's own history. Each model ranks catalogue SIDs with the same
constrained beam search as the evaluation; each SID is shown with every item that carries it (a collision
shows them all). The page itself is :mod:`harness.demo_page`.
"""

from __future__ import annotations

import difflib
import threading
from dataclasses import dataclass, field
from pathlib import Path

from harness.data.schema import Interaction, read_dataset
from harness.errors import HarnessError
from harness.prompts import next_sid_prompt
from harness.sid.index import read_index_json
from harness.sid.tokens import sid_string

MISSING = "—"  # shown for an item field the source did not provide
SEARCH_LIMIT = 30


class Catalogue:
    """The dataset and SID index that every model on the page shares, loaded once: items by SID and by title,
    and the test rows by user (so the page can show a real test user's history and true next item)."""

    def __init__(self, dataset_dir: Path, sid_dir: Path) -> None:
        ds = read_dataset(dataset_dir)
        self.items = ds.items
        self.index = read_index_json(Path(sid_dir) / "index.json", len(ds.items))
        self.by_sid: dict[str, list[int]] = {}
        for iid, tokens in sorted(self.index.items()):
            self.by_sid.setdefault(sid_string(tokens), []).append(iid)
        self.by_title: dict[str, list[int]] = {}
        for it in self.items:
            self.by_title.setdefault(it.title.strip().lower(), []).append(it.id)
        self.users = {r.user for r in ds.interactions}
        self.test_rows: dict[str, list[Interaction]] = {}
        for r in ds.split("test"):
            self.test_rows.setdefault(r.user, []).append(r)

    def item(self, iid: int) -> dict:
        """What the page shows of one item: id, SID, title, and category and brand (``—`` when missing)."""
        it = self.items[iid]
        return {"id": iid, "sid": sid_string(self.index[iid]), "title": it.title,
                "category": it.category or MISSING, "brand": it.brand or MISSING}

    def parse_history(self, text: str) -> list[int]:
        """Item ids for a ``;``-separated history of SIDs or titles; an unknown entry is an error that names it
        and suggests the closest titles."""
        entries = [e.strip() for e in text.split(";") if e.strip()]
        if not entries:
            raise HarnessError("the history is empty: give one or more titles or SIDs separated by ';'")
        ids = []
        for n, entry in enumerate(entries, start=1):
            if entry in self.by_sid:
                ids.append(self.by_sid[entry][0])
                continue
            hits = self.by_title.get(entry.lower())
            if hits:
                ids.append(hits[0])
                continue
            needle = entry.lower()
            close = [t for t in self.by_title if needle in t][:3] or \
                difflib.get_close_matches(needle, list(self.by_title), n=3, cutoff=0.6)
            hint = f"; did you mean: {', '.join(repr(self.items[self.by_title[c][0]].title) for c in close)}" \
                if close else ""
            raise HarnessError(f"history entry {n} ({entry!r}) is neither a catalogue SID nor an item title{hint}")
        return ids

    def test_row(self, user: str, row: str | None = None) -> tuple[Interaction, int, int]:
        """A user's test row (``row``: 1-based among that user's test rows, default the first) with its
        position and the user's row count; an unknown user or a bad row number is an error saying which."""
        user = user.strip()
        rows = self.test_rows.get(user)
        if rows is None:
            folded = {u.lower(): u for u in self.test_rows}
            rows = self.test_rows.get(folded.get(user.lower(), ""))
        if rows is None:
            why = "has no test row (only train or valid rows)" if user in self.users else "is not in the dataset"
            raise HarnessError(f"test user {user!r} {why}; search by user id or by a title to find one "
                               f"({len(self.test_rows)} users have test rows)")
        if row is None or not row.strip():
            return rows[0], 1, len(rows)
        try:
            pos = int(row)
        except ValueError:
            pos = 0
        if not 1 <= pos <= len(rows):
            raise HarnessError(f"row must be a whole number from 1 to {len(rows)} (user {rows[0].user!r} has "
                               f"{len(rows)} test rows), not {row!r}")
        return rows[pos - 1], pos, len(rows)

    def search(self, query: str, limit: int = SEARCH_LIMIT) -> tuple[list[dict], int]:
        """Test rows whose user id contains ``query`` or whose history holds an item whose title contains it
        (case-insensitive), at most ``limit`` of them, and how many matched in all."""
        needle = query.strip().lower()
        if not needle:
            return [], 0
        found, total = [], 0
        for user in sorted(self.test_rows):
            rows = self.test_rows[user]
            for pos, r in enumerate(rows, start=1):
                titles = sorted({self.items[i].title for i in r.history if needle in self.items[i].title.lower()})
                if needle not in user.lower() and not titles:
                    continue
                total += 1
                if len(found) < limit:
                    found.append({"user": user, "row": pos, "rows": len(rows), "history": len(r.history),
                                  "matched": titles})
        return found, total


@dataclass
class Recommender:
    """One model over its catalogue, loaded once (the demo page answers many requests with it)."""

    model_dir: Path
    dataset_dir: Path = Path("data/dataset")
    sid_dir: Path = Path("data/sid")
    catalogue: Catalogue | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        import torch

        from harness.decode.constrained import catalogue_trie
        from harness.train.model import load_model

        if self.catalogue is None:
            self.catalogue = Catalogue(self.dataset_dir, self.sid_dir)
        self.items, self.index, self.by_sid = self.catalogue.items, self.catalogue.index, self.catalogue.by_sid
        self.model, self.tokenizer = load_model(self.model_dir, "cpu" if not torch.cuda.is_available() else None)
        self.trie = catalogue_trie(self.tokenizer, self.index, self.model_dir)
        self.lock = threading.Lock()  # one generate at a time on a shared model

    def parse_history(self, text: str) -> list[int]:
        return self.catalogue.parse_history(text)

    def recommend(self, history: list[int], k: int) -> list[dict]:
        """The Top-``k`` SIDs with their beam scores and the items (and titles) carrying each."""
        from harness.decode.constrained import constrained_beam_search
        from harness.sid.tokens import history_sids

        if not 1 <= k <= len(self.by_sid):
            raise HarnessError(f"k must be between 1 and the {len(self.by_sid)} catalogue SIDs, not {k}")
        prompt = next_sid_prompt(history_sids(history, self.index))
        with self.lock:
            res = constrained_beam_search(self.model, self.tokenizer, [prompt], self.trie, k, 1)[0]
        out = []
        for rank, (seq, score) in enumerate(zip(res.sequences, res.scores), start=1):
            sid = "".join(self.tokenizer.convert_ids_to_tokens(seq))
            ids = self.by_sid.get(sid, [])
            out.append({"rank": rank, "sid": sid, "score": float(score), "item_ids": ids,
                        "titles": [self.items[i].title for i in ids],
                        "items": [self.catalogue.item(i) for i in ids]})
        return out


@dataclass
class Comparison:
    """Several models over one catalogue asked the same history, so SFT and SFT+RL can be read side by side;
    with a test row's target, each Top-K marks the row whose SID is the target's (a hit at SID level, as the
    evaluation counts it)."""

    catalogue: Catalogue
    models: list[tuple[str, Recommender]]

    @classmethod
    def load(cls, model_dirs: list[Path], labels: list[str] | None = None,
             dataset_dir: Path = Path("data/dataset"), sid_dir: Path = Path("data/sid")) -> Comparison:
        """Labels default to the model folders' names; a count mismatch or a repeated label is an error."""
        if not model_dirs:
            raise HarnessError("give at least one --model")
        labels = list(labels or [])
        if labels and len(labels) != len(model_dirs):
            raise HarnessError(f"{len(labels)} --label for {len(model_dirs)} --model: give one label per model "
                               "or none (the folder names)")
        labels = labels or [Path(m).name for m in model_dirs]
        repeated = sorted({lab for lab in labels if labels.count(lab) > 1})
        if repeated:
            raise HarnessError(f"model label {repeated[0]!r} is given twice: name the models with --label")
        cat = Catalogue(dataset_dir, sid_dir)
        return cls(cat, [(lab, Recommender(Path(m), dataset_dir, sid_dir, cat)) for lab, m in zip(labels, model_dirs)])

    def recommend(self, history: list[int], k: int, target: int | None = None) -> list[dict]:
        """One column per model: its label, folder, Top-``k`` rows (each with ``hit``) and the target's rank."""
        cols = []
        for label, rec in self.models:
            rows = rec.recommend(history, k)
            for r in rows:
                r["hit"] = target is not None and target in r["item_ids"]
            cols.append({"label": label, "model": str(rec.model_dir), "results": rows,
                         "hit_rank": next((r["rank"] for r in rows if r["hit"]), None)})
        return cols
