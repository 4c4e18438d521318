"""A rich progress bar for HF/trl trainers (they default to tqdm), with losses as they are logged."""

from __future__ import annotations

from transformers import TrainerCallback

from harness.console import console, progress


class RichProgress(TrainerCallback):
    """Shown by the main process only: a launched run has one bar, not one per worker."""

    def __init__(self, description: str):
        self.description = description
        self._bar = None
        self._task = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._bar = progress(disable=not state.is_world_process_zero)
        self._bar.start()
        self._task = self._bar.add_task(self.description, total=state.max_steps)

    def on_step_end(self, args, state, control, **kwargs):
        self._bar.update(self._task, completed=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "eval_loss" in logs and state.is_world_process_zero:
            console.print(f"epoch {logs.get('epoch', 0):.2f}: valid loss {logs['eval_loss']:.4f}")

    def on_train_end(self, args, state, control, **kwargs):
        if self._bar is not None:
            self._bar.stop()
