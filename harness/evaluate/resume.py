"""Resumable shard files: a killed ``evaluate@<model>`` picks up after its last complete chunk.

Each process writes its rows to ``rank-<r>.jsonl`` as ``[row, beams]`` lines, one chunk of
``evaluate.chunk_rows`` rows at a time, and ``rank-<r>.run.json`` says what run those lines belong to (a
fingerprint of the model's files, the prompts, the catalogue and every setting that moves a beam). A rerun
with the same fingerprint keeps the complete chunks and decodes the rest; anything else starts over.

Why whole chunks and not whole rows: the decoder sorts the prompts of a chunk by length before batching them,
so a batch's padding, and with it the last bits of every score, depends on which rows share the chunk. Resuming
on a chunk boundary rebuilds exactly the batches an uninterrupted run builds, which is what makes the final
``predictions.json`` byte-identical to a run that was never killed.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import torch



def run_fingerprint(model_fingerprint: str, prompts: list, catalogue: list[str], settings: dict) -> str:
    """sha256 of what one process's beams depend on: the model's files, its prompts in order, the catalogue
    the trie is built from, the decoding settings and the device/library that computes them."""
    h = hashlib.sha256()
    for part in (model_fingerprint, prompts, sorted(catalogue), settings,
                 {"torch": torch.__version__, "device": "cuda" if torch.cuda.is_available() else "cpu"}):
        h.update(json.dumps(part, sort_keys=True, ensure_ascii=False).encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


@dataclass
class Resumed:
    """Where one process's shard stands: ``done`` rows kept (a multiple of the chunk, or all of them)."""

    done: int
    kept_from_earlier_run: bool
    discarded: str | None  # why an earlier shard was thrown away, if one was


def open_shard(shard_dir: Path, rank: int, rows: list[int], fingerprint: str, chunk_rows: int,
               resume: bool = True) -> tuple[TextIO, Resumed]:
    """This process's shard file opened for appending after its last complete chunk of an earlier run with the
    same fingerprint (or emptied), and how many of ``rows`` it already holds."""
    shard_dir.mkdir(parents=True, exist_ok=True)
    path, stamp = shard_dir / f"rank-{rank}.jsonl", shard_dir / f"rank-{rank}.run.json"
    done, discarded = 0, None
    if resume and path.is_file():
        earlier = _stamped(stamp)
        if earlier == fingerprint:
            done = _keep_complete_chunks(path, rows, chunk_rows)
        else:
            discarded = "it was made by another model, prompts or settings" if earlier else "it has no run record"
    if done == 0:
        path.write_bytes(b"")
        stamp.write_text(json.dumps({"fingerprint": fingerprint, "rows": len(rows), "chunk_rows": chunk_rows})
                         + "\n", encoding="utf-8")
    return path.open("a", encoding="utf-8"), Resumed(done, done > 0, discarded)


def write_chunk(shard: TextIO, rows: list[int], beams: list[list[str]]) -> None:
    """One decoded chunk, flushed to disk before the next one starts: a kill loses at most the chunk in hand."""
    shard.write("".join(json.dumps([r, b], ensure_ascii=False) + "\n" for r, b in zip(rows, beams)))
    shard.flush()
    os.fsync(shard.fileno())


def _stamped(stamp: Path) -> str | None:
    try:
        doc = json.loads(stamp.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc.get("fingerprint") if isinstance(doc, dict) else None


def _keep_complete_chunks(path: Path, rows: list[int], chunk_rows: int) -> int:
    """Truncate ``path`` after its last complete chunk of rows in the expected order; the rows kept."""
    good, offset, ends = 0, 0, [0]
    with path.open("rb") as f:
        for raw in f:
            if not raw.endswith(b"\n") or good >= len(rows):
                break
            try:
                row, beams = json.loads(raw)
            except (ValueError, TypeError):
                break
            if row != rows[good] or not isinstance(beams, list):
                break
            good += 1
            offset += len(raw)
            ends.append(offset)
    keep = good if good == len(rows) else good - good % chunk_rows
    with path.open("r+b") as f:
        f.truncate(ends[keep])
    return keep

