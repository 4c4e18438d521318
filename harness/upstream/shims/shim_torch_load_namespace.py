"""rq/trainer.py saves checkpoints with the run's ``argparse.Namespace`` inside, and generate_indices_plus.py loads
them with a bare ``torch.load``; torch 2.6's ``weights_only=True`` default then refuses the Namespace, so
RQ-Kmeans+ could never produce an index. This allows exactly that one class; weights_only stays on for
everything else."""

import argparse

import torch

torch.serialization.add_safe_globals([argparse.Namespace])
