"""The one table that chooses, per stage, the native implementation or the upstream adapter.

The CLI (one ``harness <stage>`` per DVC stage) asks this table which entry function to call; the native stage
packages never import ``harness.upstream``. Each adapter takes the same arguments and returns what the native
entry returns, so later stages read the same canonical artifacts whichever backend wrote them. Entries are
named as ``module:function`` and imported only when chosen, so a native run loads nothing of this layer but
the table.

To add a backend for a stage: write ``harness/upstream/<stage>.py`` with a ``run`` whose signature matches the
native entry, add it here, and list the adapter (and only the modules it runs) in that stage's DVC deps.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module

NATIVE = {
    "data": "harness.data.stage:run_data",
    "embed": "harness.embed.stage:run_embed",
    "sid": "harness.sid.stage:run_sid",
    "sft": "harness.train.sft:run_sft",
    "rl": "harness.train.rl:run_rl",
    "evaluate": "harness.evaluate.stage:run_evaluate",
}
UPSTREAM = {stage: f"harness.upstream.{stage}:run" for stage in NATIVE}


def backend(stage: str, p) -> str:
    """``native`` or ``upstream``: the stage's ``backend`` key decides. Evaluation also goes through the upstream
    adapter for ``backend: both`` (cross-scoring) and for ``prompts: upstream`` (upstream renders the prompts)."""
    if stage == "evaluate":
        return "upstream" if p.backend != "native" or p.prompts == "upstream" else "native"
    if stage == "rl" and not p.enabled:
        return "native"  # nothing is trained; the native stage records the decision
    return p.backend


def entry(stage: str, p) -> Callable:
    name = (UPSTREAM if backend(stage, p) == "upstream" else NATIVE)[stage]
    module, function = name.split(":")
    return getattr(import_module(module), function)


def run(stage: str, p, *args, allow_unpinned: bool = False, **kwargs):
    """Call the chosen entry; ``allow_unpinned`` (``--allow-unpinned``) only means something to an adapter."""
    fn = entry(stage, p)
    if backend(stage, p) == "upstream":
        kwargs["allow_unpinned"] = allow_unpinned
    return fn(p, *args, **kwargs)
