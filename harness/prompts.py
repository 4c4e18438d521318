"""The one place this project's prompt wording lives; SFT, RL and evaluation all call these.

Upstream words the same next-item task three different ways across SFT, RL and evaluation (spec H5);
here a single function renders it, so training and scoring see identical context.
"""

from __future__ import annotations

from collections.abc import Sequence

NEXT_SID_TEMPLATE = "Purchase history, oldest first: {history}.\nNext item:"


def next_sid_prompt(history_sids: Sequence[str]) -> str:
    """Prompt for the main task: the user's history as SID strings -> the next item's SID."""
    return NEXT_SID_TEMPLATE.format(history=", ".join(history_sids))
