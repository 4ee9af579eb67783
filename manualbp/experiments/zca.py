"""Experiment ``zca``: back-propagating through ZCA whitening (seed 001).

A three-layer fully connected network with a whitening layer on Fashion-MNIST, compared over
whitening variants (none, centering, ZCA per dimension and per example, decorrelated batch
norm, IterNorm; eigh against SVD), several seeds each.
"""
from __future__ import annotations

_MODEL = {"name": "mlp", "widths": [784, 1024, 512, 10], "activation": "relu", "bias": True,
          "norm": "zca_dim", "norm_at": 1, "norm_kwargs": {"eps": 1e-3}}

PRESETS = {
    "full": {"epochs": 15, "batch_size": 100, "data": {"name": "fashion_mnist"}, "model": _MODEL,
             "optim": {"name": "Adam", "lr": 1e-3}},
    "quick": {"epochs": 3, "batch_size": 100, "data": {"name": "fashion_mnist", "train_limit": 10000,
                                                       "test_limit": 2000},
              "model": {**_MODEL, "widths": [784, 256, 128, 10]}, "optim": {"name": "Adam", "lr": 1e-3}},
}


def _norm(norm, **kw):
    return {"model": {"norm": norm, "norm_kwargs": kw}}


GRID = {
    "variant": {
        "none": _norm("none"),
        "center": _norm("center"),
        "zca_dim": _norm("zca_dim", eps=1e-3, backend="eigh"),
        "zca_dim_svd": _norm("zca_dim", eps=1e-3, backend="svd"),
        "zca_example": _norm("zca_example", eps=1e-3, backend="eigh"),
        "zca_example_svd": _norm("zca_example", eps=1e-3, backend="svd"),
        "dbn": _norm("decorrelated_batch_norm", eps=1e-3, backend="eigh"),
        "iternorm": _norm("iter_norm", eps=1e-3, iterations=5),
    },
    "seed": [0, 1, 2],
}
