"""Audit stage: the expectation suites in checks/ on a dataset, its SID index and a model's generation config.
Entry point: ``stage.run_audit`` (and ``audit_upstream_dir`` / ``audit_model`` for `harness audit`)."""
