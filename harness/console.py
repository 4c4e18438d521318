"""Terminal output: rich progress for long work, and the third-party noise that hides it switched off."""

from __future__ import annotations

import logging
import warnings

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)


class _DropMessage(logging.Filter):
    def __init__(self, fragment: str):
        super().__init__()
        self.fragment = fragment

    def filter(self, record: logging.LogRecord) -> bool:
        return self.fragment not in record.getMessage()


def quiet_libraries() -> None:
    """Replace the libraries' tqdm bars and known-benign notices with our own rich output."""
    import datasets
    from transformers.utils import logging as hf_logging

    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()
    # trl's SFTConfig still passes the old name; transformers warns on every run.
    warnings.filterwarnings("ignore", message=r".*`gradient_checkpointing` is deprecated.*", category=FutureWarning)
    # trl's GRPOTrainer calls the old gradient-checkpointing method names of transformers 5.
    warnings.filterwarnings("ignore", message=r".*gradient_checkpointing.* is deprecated.*", category=FutureWarning)
    # Sampling knobs are pinned on purpose for beam search (hazard H1); the notice that they are unused is noise.
    for name in ("transformers.generation.configuration_utils", "transformers.generation.utils"):
        logging.getLogger(name).addFilter(_DropMessage("generation flags are not valid"))
    # Reloading the best checkpoint of a model with tied embeddings: lm_head is the embedding, not missing.
    logging.getLogger("transformers.trainer").addFilter(_DropMessage("missing keys in the checkpoint model loaded: ['lm_head.weight']"))
    # Checkpoints are ordered by step number when mtimes tie (fast steps, coarse clocks): that is what we want.
    logging.getLogger("transformers.trainer_utils").addFilter(_DropMessage("mtime may not be reliable"))


class RateColumn(ProgressColumn):
    """Units per second since the task (re)started: rows/s for evaluation, so that an ETA can be checked."""

    def __init__(self, unit: str):
        super().__init__()
        self.unit = unit

    def render(self, task):
        from rich.text import Text

        return Text(f"{task.speed:.1f} {self.unit}/s" if task.speed else f"- {self.unit}/s", style="progress.data.speed")


def progress(disable: bool = False, unit: str | None = None) -> Progress:
    """A rich progress bar on stderr; ``disable`` for the non-zero ranks of a multi-process run; ``unit`` adds a
    rate column (e.g. rows/s)."""
    rate = [RateColumn(unit)] if unit else []
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), *rate, TimeElapsedColumn(),
                    TimeRemainingColumn(), console=console, transient=False, disable=disable)


def report_rate(bar: Progress, task_id, what: str, unit: str = "rows") -> None:
    """One plain line of progress (done/total, rate, ETA) when stderr is not a terminal (a log file, CI, a
    detached run), where the live bar does not show until the end."""
    if console.is_terminal or bar.disable:
        return
    task = next(t for t in bar.tasks if t.id == task_id)
    rate = f"{task.speed:.1f} {unit}/s" if task.speed else f"- {unit}/s"
    eta = f", ETA {int(task.time_remaining) // 60}m{int(task.time_remaining) % 60:02d}s" \
        if task.time_remaining is not None and task.remaining else ""
    console.print(f"{what}: {int(task.completed)}/{int(task.total or 0)} {unit}, {rate}{eta}", highlight=False)
