"""Checks on the item → SID index (coverage, collisions, SID length, per-level code usage)."""

from __future__ import annotations

import great_expectations as gx
import great_expectations.expectations as gxe


def sid_suite(levels: int, codebook_sizes: list[int], modal_length: int) -> gx.ExpectationSuite:
    suite = gx.ExpectationSuite(name="sid")
    suite.add_expectation(gxe.ExpectColumnValuesToNotBeNull(column="sid", meta={
        "finding": "items_without_sid", "severity": "error",
        "effect": "items without a SID can never be recommended; rows targeting them are dropped upstream"}))
    suite.add_expectation(gxe.ExpectColumnValuesToBeUnique(column="sid", meta={
        "finding": "colliding_items", "severity": "warning",
        "effect": "items sharing a SID are indistinguishable: a hit on one counts for all at SID level (H4, H9); "
                  "compare collision-aware HR"}))
    suite.add_expectation(gxe.ExpectColumnValuesToBeBetween(column="sid_length", min_value=modal_length,
                                                            max_value=modal_length, meta={
        "finding": "items_with_other_sid_length", "severity": "warning",
        "effect": "variable-length SIDs: upstream's auxiliary tasks keep only 3 tokens (H10)"}))
    for level in range(levels):
        suite.add_expectation(gxe.ExpectColumnUniqueValueCountToBeBetween(
            column=f"code_{level}", min_value=max(1, codebook_sizes[level] // 2), meta={
                "finding": f"codes_used_level_{level}", "severity": "warning",
                "effect": f"level {level} uses under half of its codebook: SIDs carry less information (H9)"}))
    return suite
