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
