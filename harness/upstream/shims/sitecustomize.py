"""Loaded into upstream's interpreter (via PYTHONPATH) only when a wrapper names shims in MINIONEREC_SHIMS; each
is recorded in upstream_run.json. Upstream's files are never edited: a shim changes one library default in
that one process, where upstream's hard-coded choice cannot run at all. One module per shim, beside this file.
"""

import importlib
import os

for _name in filter(None, os.environ.get("MINIONEREC_SHIMS", "").split(",")):
    importlib.import_module(f"shim_{_name}")
