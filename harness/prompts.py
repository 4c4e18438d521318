"""The one place this project's prompt wording lives; SFT, RL and evaluation all call these.

Upstream words the same next-item task three different ways across SFT, RL and evaluation (H5, docs/hazards.md).
Here one function renders each task, so training and scoring see identical context. The alignment
tasks (titles <-> SIDs) share the same short, plain style.
"""

from __future__ import annotations

from collections.abc import Sequence

NEXT_SID_TEMPLATE = "Purchase history, oldest first: {history}.\nNext item:"
TITLE_TO_SID_TEMPLATE = "Item titled \"{title}\".\nIts ID:"
SID_TO_TITLE_TEMPLATE = "Item {sid}.\nIts title:"
TITLE_HISTORY_TEMPLATE = "Purchase history by title, oldest first: {titles}.\nNext item:"
SID_HISTORY_TO_TITLE_TEMPLATE = "Purchase history, oldest first: {history}.\nNext item's title:"
TEMPLATES = (NEXT_SID_TEMPLATE, TITLE_TO_SID_TEMPLATE, SID_TO_TITLE_TEMPLATE, TITLE_HISTORY_TEMPLATE,
             SID_HISTORY_TO_TITLE_TEMPLATE)
MAX_TITLE_CHARS = 80  # long titles are cut in history prompts so ten of them fit the context


def short_title(title: str) -> str:
    title = " ".join(title.split())
    return title if len(title) <= MAX_TITLE_CHARS else title[: MAX_TITLE_CHARS - 1].rstrip() + "…"


def next_sid_prompt(history_sids: Sequence[str]) -> str:
    """Prompt for the main task: the user's history as SID strings -> the next item's SID."""
    return NEXT_SID_TEMPLATE.format(history=", ".join(history_sids))


def title_to_sid_prompt(title: str) -> str:
    return TITLE_TO_SID_TEMPLATE.format(title=short_title(title))


def sid_to_title_prompt(sid: str) -> str:
    return SID_TO_TITLE_TEMPLATE.format(sid=sid)


def title_history_prompt(titles: Sequence[str]) -> str:
    return TITLE_HISTORY_TEMPLATE.format(titles="; ".join(f"\"{short_title(t)}\"" for t in titles))


def sid_history_to_title_prompt(history_sids: Sequence[str]) -> str:
    return SID_HISTORY_TO_TITLE_TEMPLATE.format(history=", ".join(history_sids))
