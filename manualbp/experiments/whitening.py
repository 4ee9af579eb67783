"""Experiment ``whitening``: whitening of convolutional feature maps against batch norm (beyond the
articles).

The zca article builds on Decorrelated Batch Normalization (DBN; Huang et al., CVPR 2018) and the project's
``iter_norm`` on Iterative Normalization (IterNorm; Huang et al., CVPR 2019). Both papers whiten the feature
maps of convolutional networks one group of channels at a time, with running estimates and a per-channel
affine transform, and report convolutional networks on CIFAR-10 that train faster or generalise better than
with batch norm. This experiment puts the three layers in the same place of one network: CNN6 (3x3
convolutions of 32 channels, strides 2, 2, 2, 2, 1, 1, ReLU, global average pooling; ``manualbp.models.CNN6``)
with batch norm, DBN or IterNorm (T = 5) after the ReLU of layers 1-5, each with the affine transform, at two
group sizes for the whitening layers: 16 channels (DBN's CIFAR setting) and 32 (the whole layer, as
IterNorm-pytorch's CIFAR scripts, whose ``num_channels`` exceeds every layer's width). Paired by seed: a seed
fixes the initial convolution weights and the data order for every arm.

``report`` writes the training-loss curves per epoch and per second, test accuracy with paired intervals
against batch norm, the cost per epoch, and the papers' claims with whether they hold at the run's scale.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .report import group, load_runs, markdown_table, mean_ci, plt, save, status_figures, t_quantile

CHANNELS = [32, 32, 32, 32, 32, 10]
GROUP_SIZES = (16, 32)
_MODEL = {"name": "cnn6", "channels": CHANNELS, "init_std": 0.05}


def _arm(norm: str, **kw) -> dict:
    return {"model": {"norm": norm, "norm_kwargs": {"affine": True, **kw}}}


ARMS = {"bn": _arm("batch_norm")}
for _g in GROUP_SIZES:
    ARMS[f"dbn{_g}"] = _arm("dbn", group_size=_g)
for _g in GROUP_SIZES:
    ARMS[f"itn{_g}"] = _arm("iter_norm", group_size=_g, iterations=5)
BASELINE = "bn"


def _preset(epochs: int, train_limit=None, test_limit=None) -> dict:
    # SGD with momentum 0.9 and a cosine decay from 0.05 over the run, batch 128, no weight decay
    return {"model": _MODEL, "epochs": epochs, "batch_size": 128, "eval_batch_size": 1000,
            "data": {"name": "cifar10", "train_limit": train_limit, "test_limit": test_limit},
            "optim": {"name": "SGD", "lr": 0.05, "momentum": 0.9},
            "schedule": {"name": "CosineAnnealingLR", "T_max": epochs},
            "log": {"probe_every": 0}}


PRESETS = {
    # minutes on a 2-core CPU: a CIFAR-10 subset (2,000 / 1,000 images), 2 epochs, 2 seeds
    "quick": _preset(2, 2000, 1000),
    # the CPU scale: all 50,000 training and 10,000 test images, 10 epochs, 5 seeds
    "cpu": _preset(10),
    # the scale the papers' claims need (docs/experiments/whitening.md): 60 epochs, 10 seeds
    "full": _preset(60),
}
SEEDS = {"quick": [0, 1], "cpu": [0, 1, 2, 3, 4], "full": list(range(10))}


def grid(preset: str) -> dict:
    """Seeds outermost: a sweep cut short holds whole seeds, every arm of each (the pairs the report needs)."""
    return {"seed": SEEDS.get(preset, [0, 1]), "variant": ARMS}


GRID = grid("quick")
