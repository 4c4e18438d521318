"""Embed stage: item text -> one vector per item (row i = item i). Entry point: ``stage.run_embed``; the encoder
(``encoder``), the text each item is read as (``text``) and the vector cache (``cache``)."""
