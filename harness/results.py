"""The results contract: what the evaluate, metrics and audit stages write, key by key.

One home for the shapes of ``reports/eval/<model>/scores.json``, ``reports/metrics.json`` and the audit's
``findings.json`` (modelled on lm-evaluation-harness's result schema). The writers build plain dicts; the
test suite validates the pipeline's real outputs against these definitions (extra keys are refused), so a
key added to a writer without a line here fails the tests. The keys of a metrics block (``hr@10``, ...) are
defined by the metric registry, :mod:`harness.metrics`. ``docs/results-schema.md`` explains the figures.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, ConfigDict, TypeAdapter
from typing_extensions import NotRequired, TypedDict

from harness import metrics as registry

# ------------------------------------------------------------------ artifact names
MODELS = ("sft", "rl")  # the models the pipeline scores, in its order: reports/eval/<model>/
SCORES = "scores.json"  # one model's scores (ScoresJson)
PREDICTIONS = "predictions.json"  # upstream's result format: {"input", "output", "predict": [beams]} per test row
UNCONSTRAINED = "unconstrained.json"  # the first rows decoded without the constraint (Decoding)
EXACT = "exact.json"  # the first rows ranked exactly over the whole catalogue (ExactRanking)
UPSTREAM = "upstream"  # evaluate.backend both: upstream's evaluation of the same model, in eval/<model>/upstream/
METRICS_JSON = "metrics.json"  # reports/metrics.json (MetricsJson)
FINDINGS = "findings.json"  # reports/audit/findings.json (list of Finding)

_STRICT = ConfigDict(extra="forbid")


def _registered(block: dict) -> dict:
    for k in block:
        if k != "calc_py_agrees":
            registry.parse(k)  # ValueError naming an unregistered key
    return block


# A metrics block: hr@K, ndcg@K, collision_aware_*@K, legality_rate, illegal_count, duplicate_rows, rows, beams
# (harness.metrics.METRICS), plus calc_py_agrees: true when upstream's calc.py printed the same figures.
MetricsBlock = Annotated[dict[str, float | int | bool], AfterValidator(_registered)]


class Generation(TypedDict):
    """Every generation setting the decoder used (nothing inherited from a model's generation_config.json)."""

    __pydantic_config__ = _STRICT
    num_beams: int
    num_return_sequences: int
    do_sample: bool
    temperature: float | None
    top_k: int | None
    top_p: float | None
    repetition_penalty: float | None
    length_penalty: float | None
    max_new_tokens: int


class Protocol(TypedDict):
    """The test protocol a score was made under; the metrics stage refuses scores made under another."""

    __pydantic_config__ = _STRICT
    split: Literal["test"]
    rows: int  # test rows scored (every model and baseline on the same rows)
    num_beams: int  # beams used: evaluate.num_beams capped at the catalogue's distinct SIDs
    num_beams_requested: int  # evaluate.num_beams
    catalogue_sids: int  # distinct SIDs the constraint allows
    sid_level: bool  # a hit is a SID match: items sharing a SID count for each other
    generation: NotRequired[Generation | None]
    processes: NotRequired[int]  # scores.json: decoding processes (evaluate.num_processes)
    chunk_rows: NotRequired[int]  # scores.json: rows per length-sorted chunk, the resume unit (evaluate.chunk_rows)
    dtype: NotRequired[str]  # scores.json: evaluate.dtype
    prompts: NotRequired[Literal["harness", "upstream"]]  # scores.json: whose prompt format was decoded


class ScoresJson(TypedDict):
    """reports/eval/<model>/scores.json."""

    __pydantic_config__ = _STRICT
    model: str  # "sft" | "rl"
    scored: bool  # false: models/<model> holds no model (rl.enabled: false), see reason
    metrics: MetricsBlock | None
    protocol: Protocol
    evaluator: NotRequired[Literal["native", "upstream"]]  # which code decoded: this package or evaluate.py
    reason: NotRequired[str]  # why the model was not scored
    upstream_commit: NotRequired[str]  # evaluator upstream: the checkout's commit
    upstream: NotRequired[dict]  # evaluate.backend both: where upstream's own scores and agreement are


class Decoding(TypedDict):
    """The same beam search with and without the catalogue constraint, on the first test rows."""

    __pydantic_config__ = _STRICT
    rows: int
    num_beams: int
    max_new_tokens: int
    constrained: MetricsBlock  # the constrained beams of exactly those rows
    unconstrained: MetricsBlock  # no constraint
    illegal_examples: list[str]  # up to 10 distinct non-catalogue strings produced without the constraint


class ExactRanking(TypedDict):
    """The first test rows (evaluate.exact_rows) ranked exactly: every catalogue SID scored as beam search scores
    it, log p(SID + EOS | prompt), beside the constrained beams of the same rows (harness/evaluate/exact.py)."""

    __pydantic_config__ = _STRICT
    rows: int
    num_beams: int
    catalogue_sids: int  # distinct SIDs ranked
    prefix_rows_per_prompt: int  # one-token forward rows per prompt: the catalogue's distinct prefixes
    tolerance: float  # a best beam this far below the exact best is a search error (float32 / bf16)
    exact: MetricsBlock  # hr@K, ndcg@K for K up to the catalogue (100, 200, 500, 1000 where they fit), mrr
    beam: MetricsBlock  # the constrained beams of exactly these rows (calc.py's HR/NDCG)
    beam_recall: MetricsBlock  # beam_recall@K: share of the exact Top-K the first K beams return
    search_errors: int  # rows whose best beam scores below the exact best (the search lost the top SID)
    search_error_rows: list[int]  # the first 20 such rows (test-row indices)
    beyond_beams: int  # rows whose target ranks past the beam count: no beam search of this width can hit
    target_rank: NotRequired[list[int]]  # exact.json only: each row's 1-based exact rank of the target


class Popularity(TypedDict):
    """The popularity split beyond-accuracy metrics use (harness/evaluate/beyond.py) and the plot's series."""

    __pydantic_config__ = _STRICT
    train_targets: int  # train rows whose target has a SID: popularity = a SID's count among them
    catalogue_sids: int
    head_share: float  # the head: the fewest most popular SIDs holding this share of train targets
    head_sids: int
    bins: int  # popularity groups of equal numbers of SIDs, least popular first
    k: int  # the cut-off of the curves
    curves: dict[str, list[float]]  # per ranker (and "targets"): share of Top-K recommendations per group


class EvaluatedBy(TypedDict):
    __pydantic_config__ = _STRICT
    evaluator: Literal["native", "upstream"]
    upstream_commit: str | None
    prompts: Literal["harness", "upstream"]


class CrossScore(TypedDict):
    """evaluate.backend both: upstream's evaluate.py + calc.py on the same model."""

    __pydantic_config__ = _STRICT
    metrics: MetricsBlock
    upstream_commit: str | None
    generation: dict | None  # the settings evaluate.py passes, and the sampling keys it inherits (H1)
    agreement: NotRequired[dict]  # the two decoders' Top-K compared row by row (harness/upstream/evaluate.py)


class MetricsJson(TypedDict):
    """reports/metrics.json: a DVC metrics file (dvc metrics show, dvc exp show)."""

    __pydantic_config__ = _STRICT
    sft: MetricsBlock  # the fine-tuned model, constrained beam search
    rl: MetricsBlock | None  # after GRPO; null when rl.enabled is false
    baselines: dict[str, MetricsBlock]  # one per registered baseline (harness.evaluate.baselines.BASELINES)
    protocol: Protocol
    evaluated_by: dict[str, EvaluatedBy]  # per scored model
    # per scored model and baseline: coverage@K, gini@K, entropy@K, avg_popularity@K, long_tail_share@K,
    # novelty@K, target_popularity, target_long_tail_share (harness.metrics, harness/evaluate/beyond.py)
    beyond_accuracy: dict[str, MetricsBlock]
    popularity: Popularity
    exact: NotRequired[dict[str, ExactRanking]]  # evaluate.exact_rows > 0 (without target_rank)
    decoding: NotRequired[dict[str, Decoding]]  # evaluate.unconstrained_rows > 0
    upstream_evaluate: NotRequired[dict[str, CrossScore]]  # evaluate.backend both


class Finding(TypedDict):
    """One failed audit expectation (reports/audit/findings.json is a list of them, errors first)."""

    __pydantic_config__ = _STRICT
    id: str  # "<split>.<finding>" or "<finding>", e.g. "test.temporal_violation_rows"
    severity: Literal["error", "warning", "info"]
    figure: int | float | str | list | dict | None  # the count or observed value behind it
    # where its first offending rows / items / keys are: up to 5 distinct "path:line" (1-based, an editor's line:
    # CSV header = 1; interactions.jsonl line i+1 = row i); absent for a figure over the whole input
    locations: NotRequired[list[str]]
    effect: str  # what it does to the metrics, in a sentence


SCHEMAS: dict[str, TypeAdapter] = {
    SCORES: TypeAdapter(ScoresJson),
    METRICS_JSON: TypeAdapter(MetricsJson),
    UNCONSTRAINED: TypeAdapter(Decoding),
    EXACT: TypeAdapter(ExactRanking),
    FINDINGS: TypeAdapter(list[Finding]),
}
