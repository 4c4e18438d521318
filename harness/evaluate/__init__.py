"""Evaluate stages: constrained beam search on the test split for one model (``evaluate@sft``,
``evaluate@rl``, entry point ``stage.run_evaluate``), then ``metrics`` (``metrics_stage.run_metrics``) merges the
models' scores with the baselines into ``reports/metrics.json``.

Modules: ``protocol`` (the test protocol: rows, prompts, targets, catalogue, beams), ``sharded`` (the native
decoder across processes, merged on rank 0), ``unconstrained`` (the same beams without the constraint),
``score`` (upstream calc.py's HR/NDCG and what it hides), ``baselines`` (the registry of reference rankers).
"""
