"""Run an expectation suite on a pandas frame (ephemeral GX context, no progress bars, no analytics)."""

from __future__ import annotations

from functools import lru_cache

import pandas as pd


@lru_cache(maxsize=1)
def _source():
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    ctx.variables.analytics_enabled = False
    return ctx.data_sources.add_pandas("audit")


def ensure_context() -> None:
    """GX 1.x builds suites against the current context: create it before any suite."""
    _source()


def validate(df: pd.DataFrame, suite) -> list[dict]:
    """One record per expectation: its meta, success, unexpected count, observed value and the frame index of
    its first unexpected rows (``unexpected_index``, ascending; empty for a column-level expectation)."""
    source = _source()
    name = f"frame_{suite.name}_{len(source.assets)}"
    batch_def = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe("all")
    res = batch_def.get_batch(batch_parameters={"dataframe": df}).validate(suite, result_format="SUMMARY")
    out = []
    for r in res.results:
        if r.exception_info and r.exception_info.get("raised_exception"):
            raise RuntimeError(f"expectation {r.expectation_config.type} failed to run: "
                               f"{r.exception_info.get('exception_message')}")
        out.append({**r.expectation_config.meta, "success": bool(r.success),
                    "unexpected_count": r.result.get("unexpected_count"),
                    "observed_value": r.result.get("observed_value"),
                    "unexpected_index": sorted(r.result.get("partial_unexpected_index_list") or [])})
    return out
