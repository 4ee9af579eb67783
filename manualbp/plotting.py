"""The figure style and the PNG + TensorBoard image writer shared by the status figure
(``manualbp.train.status``) and the experiments' reports (``manualbp.experiments.report``); below both, so
that neither imports the other."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot
    pyplot.rcParams.update({"figure.dpi": 110, "axes.grid": True, "grid.alpha": 0.3, "font.size": 9,
                            "axes.titlesize": 9})
    return pyplot


DATASETS = {"fashion_mnist": "Fashion-MNIST", "mnist": "MNIST", "cifar10": "CIFAR-10", "stl10": "STL-10",
            "penn_fudan": "Penn-Fudan", "mall": "Mall"}


def integer_ticks(ax, axis: str = "y") -> None:
    """Integer ticks only on ``axis`` ("x" or "y"): for counts (wins out of n runs, non-zero counts) and epochs."""
    from matplotlib.ticker import MaxNLocator
    getattr(ax, f"{axis}axis").set_major_locator(MaxNLocator(integer=True))


def runs_text(n: int, unit: str = "seeds") -> str:
    """"3 seeds", or "one run" for a single run (nothing to spread over)."""
    return "one run" if n == 1 else f"{n} {unit}"


def band_text(n: int, unit: str = "seeds") -> str:
    """The words for a curve over n runs: "mean, min-max band over 3 seeds", or "one run" (no band)."""
    return "one run" if n == 1 else f"mean, min-max band over {n} {unit}"


def data_text(cfg: dict) -> str:
    """The data a config trains on, as a title names it: "CIFAR-10 (5000 / 8000 images)", "MNIST (all images)",
    "MNIST (all images less 5000 held out of training)", "MNIST (5000 / 2000 images, 5000 held out of training)"
    (``data.options.validation``)."""
    d = cfg.get("data", {})
    name = DATASETS.get(d.get("name"), d.get("name", "?"))
    train, test = d.get("train_limit"), d.get("test_limit")
    held = (d.get("options") or {}).get("validation")
    if train is None and test is None:
        return f"{name} (all images{f' less {held} held out of training' if held else ''})"
    return f"{name} ({train or 'all'} / {test or 'all'} images{f', {held} held out of training' if held else ''})"


def sweep_title(cfg: dict, scale: str = "", epochs: int | str | None = None) -> str:
    """A figure title naming the experiment, the preset and the scale: "<experiment>, <preset>: <epochs> epochs,
    <data>[, <scale>]" (``scale``: e.g. "3 seeds", "widths / 4, 3 runs per trial"; ``epochs``: the number
    of epochs, default the config's, or a text that replaces "<epochs> epochs")."""
    epochs = cfg.get("epochs") if epochs is None else epochs
    parts = [epochs if isinstance(epochs, str) else f"{epochs} epochs", data_text(cfg)] + ([scale] if scale else [])
    return f"{cfg.get('experiment', '?')}, {cfg.get('preset', '?')}: " + ", ".join(parts)


def save(fig, path: Path, writer=None, tag=None):
    """Write the figure as PNG and, with a writer, the same PNG to TensorBoard as an image (rendered once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    import matplotlib.pyplot as pyplot
    pyplot.close(fig)
    if writer is not None:
        from PIL import Image
        with Image.open(path) as im:
            writer.add_image(tag or path.stem, np.asarray(im.convert("RGB")), dataformats="HWC")
