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


def test_article_preset_matches_the_authors_code():
    """SPEC's numbers: the article's auto-encoder (4-8-16-8 channels, 9-d code, no biases, float64),
    batch 5; plain / L1 (0.005) / L2 (0.0025) for 801 epochs at 5e-3 on BCE + MSE; the sparse-filtering
    model 201 epochs of the mean sparse-filtering cost (eps 1e-20) at 5e-4 on the encoder, pool mixes
    and code, then 600 at 5e-3 on BCE + MSE + 1.75 x the cost; the article's mask rule."""
    from .helpers import built_run
    exp = get_experiment("sparse-filtering")
    specs = {s.labels["model"]: s.config for s in expand(preset("sparse-filtering", "article"), exp.grid("article"),
                                                          Path("/tmp/x"))}
    assert sorted(specs) == ["ae", "ae_l1", "ae_l2", "sf"]
    for name, c in specs.items():
        assert (c["batch_size"], c["epochs"], c["dtype"], c["optim"]["lr"]) == (5, 801, "float64", 5e-3), name
        assert c["data"]["options"]["mask_rule"] == "article" and c["model"]["name"] == "segae_article"
    assert specs["ae"]["objective"] == {"data": 1.0, "mse": 1.0} and specs["ae"]["phases"] is None
    assert (specs["ae_l1"]["regularizer"]["name"], specs["ae_l1"]["regularizer"]["lam"]) == ("l1", 0.005)
    assert (specs["ae_l2"]["regularizer"]["name"], specs["ae_l2"]["regularizer"]["lam"]) == ("l2", 0.0025)
    pre, sup = specs["sf"]["phases"]
    assert (pre["epochs"], pre["objective"], pre["optim"]["lr"]) == (201, {"sparse_filtering": 1.0}, 5e-4)
    assert pre["train"] == ["enc_convs", "pool_mix", "code"]
    assert (sup["epochs"], sup["objective"], sup["optim"]["lr"]) == \
        (600, {"data": 1.0, "mse": 1.0, "sparse_filtering": 1.75}, 5e-3)
    task, model, _ = built_run(specs["sf"])
    assert [c.weight.shape[0] for c in model.enc_convs] == [4, 8, 16, 8] and model.code.weight.shape == (9, 288)
    assert all(getattr(m, "bias", None) is None for m in model.modules() if hasattr(m, "weight"))
    assert abs(model.code.weight.std().item() - 1.0) < 0.1 and model.code_act is None
    assert abs(model.enc_convs[2].weight.std().item() - 0.05) < 0.005
    assert model.sparse_eps == 1e-20 and model.sparse_reduction == "mean"
    _, plain, _ = built_run(specs["ae_l1"])
    assert plain.code_act is not None and abs(plain.code.weight.std().item() - 0.05) < 0.01
    assert len(plain.penalized_parameters()) == 4 + 5 + 4     # convolutions and transposed convolutions only


def test_sound_preset_trains_every_model_alike():
    """The sound preset: every model the same supervised epochs at the same learning rate; the
    sparse-filtering models add their pre-training, with and without the 1.75 term; three seeds."""
    exp = get_experiment("sparse-filtering")
    specs = expand(preset("sparse-filtering", "sound"), exp.grid("sound"), Path("/tmp/x"))
    assert len(specs) == 6 * 3 and {s.labels["model"] for s in specs} == set(MODELS)
    cfg = {s.labels["model"]: s.config for s in specs if s.labels["seed"] == "seed0"}
    supervised = {n: (c["phases"][1]["epochs"], c["phases"][1]["optim"]["lr"]) if c["phases"]
                  else (c["epochs"], c["optim"]["lr"]) for n, c in cfg.items()}
    assert set(supervised.values()) == {(600, 5e-3)}
    assert cfg["sf"]["phases"][1]["objective"]["sparse_filtering"] == 1.75
    assert "sparse_filtering" not in cfg["sf_no_term"]["phases"][1]["objective"]
    assert cfg["sf_elu"]["model"]["sparse_activation"] == "elu"
    assert resolve(cfg["sf"])["epochs"] == 801 and cfg["ae"]["dtype"] == "float32"


def test_mall_scores():
    masks = torch.zeros(2, 1, 8, 8)
    masks[0, 0, :4, :] = 1.0        # top half of frame 0 is "pedestrian"
    points = [[[1.0, 1.0], [2.0, 6.0]], [[3.0, 3.0]]]     # (x, y): only the first point of frame 0 is inside
    s = mall_scores(masks, points)
    assert s["mall_hit_rate"] == pytest.approx(1 / 3) and s["mall_foreground"] == pytest.approx(0.25)
    assert s["mall_probability"] == pytest.approx(0.25)


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
    assert "Mall: the first 6 frames" in text
    for fig in ("test-rows.png", "curves.png", "code-histograms.png"):
        assert (s / fig).stat().st_size > 5000, fig
    from PIL import Image
    with Image.open(s / "mall.gif") as gif:
        assert gif.n_frames == 6
    import json
    rows = [json.loads(line) for line in (s / "seed0-sf_no_term" / "metrics.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in rows] == ["sparse-filtering"] * 2 + ["end-to-end"] * 2
    # phase 1 optimizes the sparse-filtering cost (a mean of entries in (0, 1]), phase 2 the masks' BCE + MSE
    assert all(0 < r["train_objective"] <= 1 and r["train_objective"] != r["train_loss"] for r in rows[:2])
    assert all(r["train_objective"] > r["train_loss"] for r in rows[2:])
    plain = [json.loads(line) for line in (s / "seed0-ae" / "metrics.jsonl").read_text().splitlines()]
    assert len(plain) == 2      # the same supervised epochs
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "sweep.py"), "sparse-filtering", "--preset",
                          "article-quick", "--data-root", str(tmp_path / "data"), "--sweep-dir", str(tmp_path / "a"),
                          "--device", "cpu", "log.progress=false", "data.options.n_train=8"],
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "| sf | 1 |" in (tmp_path / "a" / "results.md").read_text()       # the float64 models evaluate
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "verdicts.py"), "sparse-filtering", "--article",
                          str(tmp_path / "a"), "--sound", str(s)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = (s / "verdicts.md").read_text()
    assert "| IoU of sf - ae (paired by seed) |" in text and "| sf_no_term | not in the article's code |" in text
