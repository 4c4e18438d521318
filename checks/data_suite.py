"""Per-split checks on the interaction rows (leakage, duplicates, conflicts, cold start)."""

from __future__ import annotations

import great_expectations as gx
import great_expectations.expectations as gxe

# (feature column, finding key in data.json, severity, what it does to the numbers)
ROW_FLAGS = [
    ("target_in_history", "target_in_history_rows", "info",
     "repeat purchases: a model can score by copying the history, and SID-level metrics reward it (H12)"),
    ("target_is_last", "target_is_last_history_rows", "info",
     "the target repeats the last history item: a trivial 'repeat last' baseline already hits these rows (H12)"),
    ("target_sid_in_history", "target_sid_in_history_rows", "info",
     "the target's SID already appears in the history, counting SID collisions (H4, H12)"),
    ("repeated_item_in_history", "repeated_item_in_history_rows", "info",
     "a history lists the same item twice; duplicate reviews are kept upstream (H12)"),
    ("duplicate_extra", "duplicate_rows", "warning",
     "extra copies of an identical (user, history, target) row weigh that row more than once"),
    ("duplicate_of_earlier_split", "duplicate_of_earlier_split_rows", "error",
     "the identical (user, history, target) row is in an earlier split: direct train/test leakage"),
    ("cold_start_target", "cold_start_target_rows", "info",
     "targets never seen (as target or in a history) in earlier splits cannot be learned from them (H13)"),
    ("conflict_key", "history_target_conflict_rows", "warning",
     "the same history SID sequence leads to different targets: upstream's RL reward lookup keyed by "
     "history keeps only one of them (H14)"),
    ("earlier_than_previous_split", "temporal_violation_rows", "error",
     "a target is older than the latest target of an earlier split: future information leaks backwards"),
]


def split_suite(split: str) -> gx.ExpectationSuite:
    suite = gx.ExpectationSuite(name=f"data_{split}")
    for column, finding, severity, effect in ROW_FLAGS:
        suite.add_expectation(gxe.ExpectColumnValuesToBeInSet(
            column=column, value_set=[False],
            meta={"finding": finding, "severity": severity, "effect": effect, "split": split},
        ))
    return suite
