"""SID stage: item embeddings -> semantic IDs. Entry point: ``stage.run_sid``; the builders are listed in
``registry`` (one module each), the index.json contract is ``index``, the token spelling ``tokens``, the quality
figures ``quality``."""
