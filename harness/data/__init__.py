"""Data stage: the canonical dataset (items, interactions with their split, shipped SIDs) from the synthetic
generator or an upstream-format dir. Entry point: ``stage.run_data``; the contract of the canonical files is
``schema``, upstream's file formats ``upstream_format``, its sample protocol ``protocol``."""
