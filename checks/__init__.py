"""Expectation suites (great-expectations 1.x, in code) behind `harness audit`.

Each expectation carries in its ``meta`` the finding it measures (``finding``, the JSON key its
unexpected count fills), a ``severity`` and what the defect does to the reported metrics (``effect``).
The audit computes one row-level feature frame per split and one per item, validates these suites
against them, and reads every figure back from the validation results.
"""
