"""Report stage: reports/report.md and reports/report.html from the pipeline's artifacts.

Modules: ``stage`` (the entry point, ``run_report``), ``context`` (what the templates show), ``model_tables``
(the per-model metric tables), ``verdict`` (the opening sentences), ``tables`` (paper, decoding, agreement,
provenance tables), ``paper``, ``significance``, ``experiments``, ``plots``, ``markdown`` (escaping).
"""
