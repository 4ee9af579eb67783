"""Experiment sparse-filtering: the two-phase schedule, the quick sweep and its report (Penn-Fudan and
Mall written here in their on-disk formats), and the Mall scores."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from manualbp.experiments import get_experiment, preset
from manualbp.experiments.sparse_filtering import MODELS, mall_scores
from manualbp.train import resolve
from manualbp.train.sweep import expand

from .fakedata import write_mall, write_penn_fudan

ROOT = Path(__file__).resolve().parents[1]


def test_sparse_filtering_models_run_in_two_phases():
    exp = get_experiment("sparse-filtering")
    specs = expand(preset("sparse-filtering", "full"), exp.grid("full"), Path("/tmp/x"))
    assert len(specs) == 5 * 3 and {s.labels["model"] for s in specs} == set(MODELS)
    cfg = {s.labels["model"]: s.config for s in specs if s.labels["seed"] == "seed0"}
    sf = cfg["sf_elu"]
    assert sf["phases"][0] == {"name": "sparse-filtering", "epochs": 200, "objective": ["sparse_filtering"],
                               "train": ["enc_convs", "proj"]}
    assert sf["phases"][1]["lr_scale"] == 10.0 and sf["model"]["sparse_activation"] == "elu"
    assert cfg["ae"]["phases"] is None and cfg["ae_l1"]["regularizer"]["name"] == "l1"
    lrs = {name: c["optim"]["lr"] for name, c in cfg.items()}
    assert len(set(lrs.values())) == 1 and len({c["batch_size"] for c in cfg.values()}) == 1   # same lr and batch
    assert resolve(sf)["epochs"] == 300


def test_mall_scores():
    masks = torch.zeros(2, 1, 8, 8)
    masks[0, 0, :4, :] = 1.0        # top half of frame 0 is "pedestrian"
    points = [[[1.0, 1.0], [2.0, 6.0]], [[3.0, 3.0]]]     # (x, y): only the first point of frame 0 is inside
    s = mall_scores(masks, points)
    assert s["mall_hit_rate"] == pytest.approx(1 / 3) and s["mall_foreground"] == pytest.approx(0.25)


def test_quick_sweep_writes_the_table_figures_and_gif(tmp_path):
    write_penn_fudan(tmp_path / "data", n=14)
    write_mall(tmp_path / "data", n_frames=6)
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "sweep.py"), "sparse-filtering", "--data-root",
                          str(tmp_path / "data"), "--sweep-dir", str(tmp_path / "s"), "--seeds", "0,1", "--device",
                          "cpu", "log.progress=false", "data.options.n_train=8"],
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    s = tmp_path / "s"
    text = (s / "results.md").read_text()
    for name in MODELS:
        assert f"| {name} | 2 |" in text
    assert "Mall: 6 frames" in text
    for fig in ("test-rows.png", "curves.png", "code-histograms.png"):
        assert (s / fig).stat().st_size > 5000, fig
    from PIL import Image
    with Image.open(s / "mall.gif") as gif:
        assert gif.n_frames == 6
    import json
    rows = [json.loads(line) for line in (s / "sf_soft_abs-seed0" / "metrics.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in rows] == ["sparse-filtering"] * 3 + ["end-to-end"] * 3
    # phase 1 optimizes the sparse-filtering cost (positive with soft-abs), phase 2 the masks' BCE
    assert all(r["train_objective"] > 0 and r["train_objective"] != r["train_loss"] for r in rows[:3])
    assert all(r["train_objective"] == pytest.approx(r["train_loss"], rel=1e-5) for r in rows[3:])
