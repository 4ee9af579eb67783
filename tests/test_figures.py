"""The experiments' figures and the status figure, drawn from small synthetic runs: accuracies and IoU in %,
every drawn axis labelled, titles naming the experiment, the preset and the scale, counts on integer ticks,
no min-max band (and no band's words) for a single run, no empty panel."""
import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib.collections import PolyCollection

import manualbp.plotting
from manualbp.experiments import gradient_pov, optimizers, sparse_filtering, weights_pov, zca
from manualbp.plotting import sweep_title
from manualbp.train.probes import QUANTITIES, STATS

EPOCHS = 4
OUT = Path("unused.png")   # save is replaced: nothing is written


@pytest.fixture
def figures(monkeypatch):
    """Replace ``save`` in the figure modules: the figures are kept, not written."""
    kept = []

    def keep(fig, path, writer=None, tag=None):
        kept.append(fig)

    for module in (zca, weights_pov, gradient_pov, optimizers, sparse_filtering, manualbp.plotting):
        monkeypatch.setattr(module, "save", keep)
    yield kept
    import matplotlib.pyplot as pyplot
    for fig in kept:
        pyplot.close(fig)


def _config(experiment, preset, **extra):
    return {"experiment": experiment, "preset": preset, "epochs": EPOCHS, "seed": 0,
            "data": {"name": "cifar10", "train_limit": 5000, "test_limit": 8000}, **extra}


def _metrics(seed, keys=("train_acc", "test_acc"), loss=True):
    rng = np.random.default_rng(seed)
    rows = []
    for e in range(1, EPOCHS + 1):
        row = {"epoch": e, "time_s": 2.0 * e}
        row.update({k: float(0.5 + 0.1 * e + 0.01 * rng.random()) / 1.5 for k in keys})
        if loss:
            row.update(train_loss=1.0 / e, test_loss=1.2 / e)
        rows.append(row)
    return rows


def _drawn(fig):
    return [ax for ax in fig.axes if ax.get_visible() and ax.axison]


def _texts(fig):
    return [fig._suptitle.get_text() if fig._suptitle else ""] + [ax.get_title() for ax in fig.axes]


def _bands(fig):
    return [c for ax in fig.axes for c in ax.collections if isinstance(c, PolyCollection)]


def _max_y(ax):
    """The largest value of the panel's first curve (not of a reference line drawn after it)."""
    return float(np.nanmax(ax.get_lines()[0].get_ydata()))


def _assert_labelled(fig):
    for ax in _drawn(fig):
        if ax.name != "3d":
            assert ax.get_xlabel() and ax.get_ylabel(), ax.get_title()


def test_sweep_title_names_the_experiment_the_preset_and_the_scale():
    assert (sweep_title(_config("optimizers", "article-cpu"), "widths / 4, 3 runs per trial")
            == "optimizers, article-cpu: 4 epochs, CIFAR-10 (5000 / 8000 images), widths / 4, 3 runs per trial")
    # the article's MNIST: the last 55,000 training images (5000 held out), every test image
    cfg = {"experiment": "optimizers", "preset": "article-cpu", "epochs": 20,
           "data": {"name": "mnist", "options": {"validation": 5000}, "train_limit": None, "test_limit": None}}
    assert sweep_title(cfg) == "optimizers, article-cpu: 20 epochs, MNIST (all images less 5000 held out of training)"
    cfg["data"].update(train_limit=5000, test_limit=2000)
    assert sweep_title(cfg).endswith(": 20 epochs, MNIST (5000 / 2000 images, 5000 held out of training)")


@pytest.mark.parametrize("seeds", [1, 3])
def test_zca_curves_in_percent_with_a_band_only_over_several_seeds(figures, seeds):
    runs = [{"metrics": _metrics(s)} for s in range(seeds)]
    title = sweep_title(_config("zca", "sound"), f"{seeds} seeds per variant")
    zca.curves_figure({"none": runs, "iternorm": runs}, OUT, title=title)
    zca.eigh_svd_figure({"zca_dim": runs, "zca_dim_svd": runs}, {}, OUT, title=title)
    curves, bars = figures
    assert "zca, sound" in curves._suptitle.get_text() and "zca, sound" in bars._suptitle.get_text()
    for ax in curves.axes:
        if "accuracy" in ax.get_title():
            assert "%" in ax.get_ylabel() and _max_y(ax) > 1.5   # percent, not a fraction
    assert "%" in bars.axes[0].get_ylabel() and max(p.get_height() for p in bars.axes[0].patches) > 1.5
    assert len(bars.axes) == 2   # no timing: no empty third panel
    for fig in figures:
        _assert_labelled(fig)
    assert bool(_bands(curves)) == (seeds > 1)
    assert any("min-max" in t for t in _texts(curves)) == (seeds > 1)
    assert any("one run" in t for t in _texts(curves) + _texts(bars)) == (seeds == 1)


def test_optimizers_counts_on_integer_ticks_and_titles_naming_the_preset(figures):
    w = {"n": {1: 3, 2: 3}, "width": {1: 256, 2: 206},
         1: {"cost": {7: 3}, "train_acc": {7: 1, 11: 2}, "test_acc": {14: 3}},
         2: {"cost": {11: 3}, "train_acc": {0: 3}, "test_acc": {7: 2, 14: 1}}}
    runs = [{"trial": t, "case": c, "run": s, "metrics": _metrics(s + c, ("train_acc", "test_acc"))}
            for t in (1, 2) for c in (0, 7) for s in range(3)]
    for preset in ("article-cpu", "sound-cpu"):
        title = sweep_title(_config("optimizers", preset), "widths / 4, 3 runs per trial")
        optimizers.bar_figure(w, OUT, title=title)
        optimizers.curve_figure(runs, OUT, title=title)
    bars_a, curves_a, bars_s, curves_s = figures
    assert "article-cpu" in bars_a._suptitle.get_text() and "sound-cpu" in bars_s._suptitle.get_text()
    assert bars_a._suptitle.get_text() != bars_s._suptitle.get_text()
    for ax in bars_a.axes:
        assert "3 runs" in ax.get_ylabel()
        assert all(float(t).is_integer() for t in ax.get_yticks())
    for ax in curves_a.axes:
        if "accuracy" in ax.get_title():
            assert "%" in ax.get_ylabel() and _max_y(ax) > 1.5
    for fig in figures:
        _assert_labelled(fig)


def _weights(seed):
    rng = np.random.default_rng(seed)
    return [rng.normal(0, 0.1, 432) for _ in range(6)]


@pytest.mark.parametrize("episodes", [1, 3])
def test_weights_pov_figures(figures, episodes):
    runs = [{"weights": _weights(s), "metrics": _metrics(s)} for s in range(episodes)]
    groups = {("bn", "Z"): runs, ("nobn", "Z"): runs, ("nobn", "A"): runs}
    title = sweep_title(_config("weights-pov", "article-cpu"), "one run per case")
    weights_pov.case_figure(runs, title, OUT)
    weights_pov.summary_figure(groups, ["Z", "A"], OUT, title=title)
    weights_pov.mean_weights_figure(groups, ["Z", "A"], "nobn", OUT, title=title)
    weights_pov.histogram_3d_figure(runs, 2, OUT, title=title)
    case, summary, means, hist3d = figures
    accuracy = case.axes[6]
    assert "%" in accuracy.get_ylabel() and _max_y(accuracy) > 1.5
    assert bool(_bands(case)) == (episodes > 1)
    assert any("min-max" in t for t in _texts(case)) == (episodes > 1)
    _assert_labelled(case)
    for fig in (summary, means):   # the grids: one label per figure
        assert fig._supxlabel.get_text() and fig._supylabel.get_text()
    for fig in figures:
        assert any("weights-pov, article-cpu" in t for t in _texts(fig))
    assert all(float(t).is_integer() for t in hist3d.axes[0].get_zticks())


def test_regularizer_figure_labels_every_panel(figures):
    weights_pov.regularizer_figure(OUT)
    fig, = figures
    assert len(fig.axes) == len([k for k in weights_pov.LETTERS if weights_pov.LETTERS[k] != "none"])
    _assert_labelled(fig)
    assert "weights-pov" in fig._suptitle.get_text()


def _gradient_run(seed, epochs=EPOCHS):
    rng = np.random.default_rng(seed)
    stats = rng.random((epochs, len(gradient_pov.LAYERS), len(QUANTITIES), len(STATS)))
    stats[..., STATS.index("nonzero")] = np.round(2000 + 3 * stats[..., STATS.index("nonzero")])
    stats[:, 0, QUANTITIES.index("input_grad")] = np.nan   # the data needs no gradient
    return {"stats": stats, "epochs": np.arange(1, epochs + 1), "metrics": _metrics(seed),
            "labels": {"seed": seed}, "dir": None}


@pytest.mark.parametrize("seeds", [1, 3])
def test_gradient_pov_overlay_and_statistics(figures, tmp_path, seeds, monkeypatch):
    groups = {c: [_gradient_run(s + i) for s in range(seeds)] for i, c in enumerate("ZABCDEFGHIJ")}
    head = sweep_title(_config("gradient-pov", "article-cpu"), "one run per case")
    for stat in ("nonzero", "std"):
        gradient_pov.overlay_figure(groups, stat, OUT, head=head)
    monkeypatch.setattr(gradient_pov, "_last_histograms", lambda d: {})
    gradient_pov.case_figures(groups["G"], "G", tmp_path, head=head)
    nonzero, std, hists, statistics = figures
    for fig in (nonzero, std):
        assert "article-cpu" in fig._suptitle.get_text()
        empty = fig.axes[QUANTITIES.index("input_grad") * len(gradient_pov.LAYERS)]
        assert not empty.axison and not empty.get_lines()   # the blank panel says so, without axes
        colours = [line.get_color() for line in fig.axes[0].get_lines()]
        assert len(set(map(str, colours))) == len(groups)   # one colour per case
        assert bool(_bands(fig)) == (seeds > 1)
        assert any("min-max" in t for t in _texts(fig)) == (seeds > 1)
        for ax in fig.axes[-len(gradient_pov.LAYERS):]:
            assert ax.get_xlabel() == "epoch" or not ax.axison
    for ax in nonzero.axes:
        if ax.axison:
            assert all(float(t).is_integer() for t in ax.get_yticks())
    accuracy = next(ax for ax in statistics.axes if ax.get_title().startswith("accuracy"))
    assert "%" in accuracy.get_ylabel() and _max_y(accuracy) > 1.5
    assert "article-cpu" in statistics._suptitle.get_text() and "article-cpu" in hists._suptitle.get_text()


@pytest.mark.parametrize("seeds", [1, 3])
def test_sparse_filtering_iou_in_percent(figures, seeds):
    def run(s):
        rows = [{"epoch": e, "phase": "sparse-filtering", "train_objective": 0.3 - 0.01 * e, "test_iou": 0.0}
                for e in (1, 2)]
        return {"metrics": rows + [{"epoch": e, "phase": "supervised", "test_iou": 0.1 * e + 0.01 * s}
                                   for e in (3, 4)]}
    groups = {"ae": [run(s) for s in range(seeds)], "sf": [run(s) for s in range(seeds)]}
    title = sweep_title(_config("sparse-filtering", "article-cpu"), "one run per model")
    sparse_filtering.sf_cost_figure(groups, OUT, title=title)
    fig, = figures
    assert "article-cpu" in fig._suptitle.get_text()
    assert "%" in fig.axes[1].get_ylabel() and _max_y(fig.axes[1]) > 1.5
    _assert_labelled(fig)
    assert bool(_bands(fig)) == (seeds > 1)
    assert any("min-max" in t for t in _texts(fig)) == (seeds > 1)


def test_status_figure_leaves_out_panels_not_recorded(figures, tmp_path):
    from manualbp.train.status import status_figure
    run = tmp_path / "seed0-Z"
    run.mkdir()
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(m) for m in _metrics(0)) + "\n")
    (run / "config.json").write_text(json.dumps(_config("gradient-pov", "article-cpu")))
    status_figure(run)
    rows = [{"instrument": "optimizer", "layer": "conv1", "step": s, "epoch": s, "grad_norm": 1.0 / s,
             "update_ratio": 1e-3 / s} for s in (1, 2, 3)]
    (run / "instruments.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    status_figure(run)
    bare, instrumented = figures
    assert len(bare.axes) == 2 and len(instrumented.axes) == 4
    for fig in figures:
        title = fig._suptitle.get_text()
        assert "gradient-pov, article-cpu" in title and "seed0-Z" in title and f"{EPOCHS} epochs" in title
        _assert_labelled(fig)
        accuracy = next(ax for ax in fig.axes if ax.get_title().startswith("accuracy"))
        assert "%" in accuracy.get_ylabel() and _max_y(accuracy) > 1.5
    assert "log.curvature=true" in instrumented._supxlabel.get_text()
