"""The upstream backend: the pinned MiniOneRec checkout (``upstream/`` submodule) and its provenance."""
