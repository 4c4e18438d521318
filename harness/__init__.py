"""minionerec-audit: a reproducibility-audit harness for MiniOneRec.

Importing the package switches off every network side channel the stack has
(hub downloads, telemetry, analytics), so a user who calls ``harness`` directly
is offline exactly like a ``dvc repro`` run.
"""

from __future__ import annotations

import os

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DVC_NO_ANALYTICS": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "TOKENIZERS_PARALLELISM": "false",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
}

# Forced, not defaulted: the harness never reaches a hub, whatever the caller's shell says.
os.environ.update(OFFLINE_ENV)

__version__ = "0.1.0"
