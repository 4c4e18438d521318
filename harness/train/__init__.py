"""Training stages: ``sft.run_sft`` and ``rl.run_rl``, and what they share (``runtime``, ``model``,
``tokenizer``, ``checkpoints``, ``callbacks``, ``rewards``)."""
