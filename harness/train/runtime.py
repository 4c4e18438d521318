"""What the training stages share: the Trainer settings every run uses."""

from __future__ import annotations


def runtime_args(seed: int) -> dict:
    """Trainer settings every stage shares: seeded data order, no trackers, CPU when no GPU, our own progress."""
    import torch

    return {"seed": seed, "data_seed": seed, "report_to": "none", "use_cpu": not torch.cuda.is_available(),
            "dataloader_num_workers": 0, "disable_tqdm": True}
