"""Resume points shared by the training stages: a killed run continues from its last complete checkpoint.

Checkpoints live beside the stage's output, under a key that hashes the stage's params and its input files,
so a rerun only ever resumes the same training, never another one's.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from pydantic import BaseModel


def checkpoint_dir(out_dir: Path, params: BaseModel, inputs: list[Path]) -> Path:
    """``<parent>/.<name>.checkpoints/<key>``: the key covers the params and the bytes of every input file."""
    h = hashlib.sha256(params.model_dump_json().encode())
    for path in inputs:
        h.update(path.read_bytes())
    return out_dir.parent / f".{out_dir.name}.checkpoints" / h.hexdigest()[:16]


def last_complete_checkpoint(ckpt_dir: Path) -> str | None:
    """The newest checkpoint whose trainer state was written (the Trainer writes it last)."""
    done = [d for d in ckpt_dir.glob("checkpoint-*") if (d / "trainer_state.json").is_file()]
    return str(max(done, key=lambda d: int(d.name.rsplit("-", 1)[1]))) if done else None
