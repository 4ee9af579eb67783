"""The articles' coded derivatives checked by value inside the models that use them: the zca article's
network (its ZCA backward and its tanh with the derivative 1 - sigmoid^2) against a hand chain through
the article's formulas, the zca article backward of the op in both modes against the same formulas,
weights-pov's letter K (log_sq) and gradient-pov's G (ratio) through a configured model, and the
Penn-Fudan article mask recomputed pixel by pixel from its rule."""
import numpy as np
import pytest
import torch

import manualbp.functional as MF
from manualbp.data import load_dataset
from manualbp.experiments import preset
from manualbp.models import build_model
from manualbp.train import resolve

from .fakedata import write_penn_fudan


def _signed(E):
    """Each eigenvector (column) with its entry of largest magnitude positive (the article backward's
    sign convention)."""
    idx = E.abs().argmax(0)
    return E * torch.sign(E[idx, torch.arange(E.shape[1])])


def article_whiten_grad(A, GA, eps):
    """The zca article script's backward of Y = A (A^T A / n + eps I)^{-1/2}, written from its
    formulas (not a gradient): with S = A^T A / n = E diag(lam) E^T, s = sqrt(lam + eps), L = diag(1 / s):
    dU = A^T G, dE = dU E L + E L dU, K_ij = 1 / (lam_j - lam_i) (0 on the diagonal),
    dS = E (K^T o (E^T dE)) E^T, dA = G U^T + (2 / n) A dS."""
    n = A.shape[0]
    lam, E = torch.linalg.eigh(A.T @ A / n)
    E = _signed(E)
    s = torch.sqrt(lam + eps)
    U = E @ torch.diag(1 / s) @ E.T
    L = torch.diag(1 / s)
    dU = A.T @ GA
    dE = dU @ E @ L + E @ L @ dU
    d = lam[None, :] - lam[:, None]
    K = torch.where(torch.eye(len(lam), dtype=torch.bool), torch.zeros_like(d), 1 / d)
    dS = E @ (K.T * (E.T @ dE)) @ E.T
    return GA @ U.T + (2.0 / n) * A @ dS


@pytest.mark.parametrize("mode", ["dim", "example"])
def test_zca_article_backward_equals_the_scripts_formulas(mode):
    """The op's grad="article" against the formulas, per dimension (x 7 x 5) and per example (x 5 x 7): both
    whiten a full-rank 5 x 5 covariance (the script's 1 / (lam_j - lam_i) is unbounded for a rank-deficient
    one); and far from the exact backward."""
    g = torch.Generator().manual_seed(0)
    shape = (7, 5) if mode == "dim" else (5, 7)
    x = torch.randn(*shape, dtype=torch.float64, generator=g, requires_grad=True)
    G = torch.randn(*shape, dtype=torch.float64, generator=g)
    (got,) = torch.autograd.grad(MF.zca_whiten(x, eps=0.06, mode=mode, grad="article"), x, G)
    if mode == "dim":
        want = article_whiten_grad(x.detach(), G, 0.06)
    else:
        want = article_whiten_grad(x.detach().T, G.T, 0.06).T
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    (exact,) = torch.autograd.grad(MF.zca_whiten(x, eps=0.06, mode=mode), x, G)
    assert float((got - exact).norm() / exact.norm()) > 0.1


def test_zca_article_network_backward_is_the_scripts_chain():
    """The zca `article` preset's network (784-676-256-10; tanh with the derivative 1 - sigmoid^2, ZCA per
    example with eps 0.06 and the script's backward, leaky ReLU; 0.5 sum (y - t)^2), float64: the
    layer-1 weight gradient of a batch of 6 equals the hand chain: autograd of plain torch from the
    whitening's output to the loss, the script's whitening backward (article_whiten_grad), the coded
    derivative 1 - sigmoid(z1)^2, then dW1 = dz1^T x; and differs from the exact network's."""
    cfg = resolve(preset("zca", "article"))
    assert cfg["model"]["norm_kwargs"]["grad"] == "article"
    torch.manual_seed(0)
    model = build_model(cfg["model"]).double()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(6, 784, dtype=torch.float64, generator=g)
    y = torch.randint(0, 10, (6,), generator=g)
    t = torch.nn.functional.one_hot(y, 10).double()
    MF.sum_squared_error(model(x), t).backward()
    got = model.layers[0].weight.grad.clone()

    W = [lay.weight.detach() for lay in model.layers]
    b = [lay.bias.detach() for lay in model.layers]
    z1 = x @ W[0].T + b[0]
    h1 = torch.tanh(z1)
    A = h1.T                                           # per example: A = h1^T, an N x N covariance
    lam, E = torch.linalg.eigh(A.T @ A / A.shape[0])
    U = E @ torch.diag((lam + 0.06) ** -0.5) @ E.T
    yw = (A @ U).T.clone().requires_grad_(True)
    out = torch.nn.functional.leaky_relu(torch.nn.functional.leaky_relu(yw @ W[1].T + b[1], 0.01) @ W[2].T + b[2],
                                         0.01)
    (G,) = torch.autograd.grad(0.5 * ((out - t) ** 2).sum() / 6, yw)
    dh1 = article_whiten_grad(A, G.T, 0.06).T
    dz1 = dh1 * (1 - torch.sigmoid(z1) ** 2)
    torch.testing.assert_close(got, dz1.T @ x, rtol=1e-8, atol=1e-14)

    exact = build_model({**cfg["model"], "norm_kwargs": {"eps": 0.06, "grad": "exact"},
                         "activation": ["tanh", "leaky_relu", "leaky_relu"]}).double()
    exact.load_state_dict(model.state_dict())
    MF.sum_squared_error(exact(x), t).backward()
    ref = exact.layers[0].weight.grad
    assert float((got - ref).norm() / ref.norm()) > 0.1


@pytest.mark.parametrize("name, coded", [
    ("log_sq", lambda w: 2 / (w + 1e-7)),                                             # weights-pov's K
    ("ratio", lambda w: (w ** 2 / (w.abs() + 1e-7) - w.abs()) / (w ** 2 + 1e-7)),    # gradient-pov's G
])
def test_coded_regularizer_derivatives_reach_a_configured_model(name, coded):
    """regularizer.article_grad=true: every weight's gradient is lam times the coded derivative, by value
    (weights near 1e-5, where the coded and the true derivatives differ most, and ordinary ones)."""
    from .helpers import built_run
    cfg = resolve({"device": "cpu", "dtype": "float64", "model": {"name": "mlp", "widths": [6, 4, 3]},
                   "data": {"name": "mnist"}, "regularizer": {"name": name, "lam": 0.3, "article_grad": True}})
    task, model, _ = built_run(cfg)
    w1 = model.layers[0].weight
    with torch.no_grad():
        w1[0, :3] = torch.tensor([2e-5, -3e-5, 0.5], dtype=torch.float64)
    task.regularizer(model).backward()
    for lay in model.layers:
        w = lay.weight.detach()
        torch.testing.assert_close(lay.weight.grad, 0.3 * coded(w), rtol=1e-12, atol=0)
        assert lay.bias.grad is None   # biases are not penalized


def _pil_bilinear(a: np.ndarray, out: int) -> np.ndarray:
    """Pillow's BILINEAR resize of a float image, written from its definition: each output pixel a
    normalised triangle-filter average of the input pixels around its centre ((i + 0.5) scale), the
    filter widened by the scale when shrinking (support = max(scale, 1)); rows, then columns."""
    def axis(n_in):
        scale = n_in / out
        fs = max(scale, 1.0)
        W = np.zeros((out, n_in))
        for i in range(out):
            c = (i + 0.5) * scale
            lo, hi = max(int(c - fs + 0.5), 0), min(int(c + fs + 0.5), n_in)
            j = np.arange(lo, hi)
            w = np.clip(1 - np.abs((j - c + 0.5) / fs), 0, None)
            W[i, lo:hi] = w / w.sum()
        return W
    h, w = a.shape
    return axis(h) @ a.astype(np.float64) @ axis(w).T


def test_penn_fudan_article_mask_recomputed_pixel_by_pixel(tmp_path):
    """mask_rule=article: the instance map (0, 1, 2) resized bilinearly to 32 x 32, scaled to 0-255 by its
    maximum, > 10, pixel for pixel (pixels within 1e-3 of the threshold, where float32 rounding decides,
    are left out and must be few)."""
    from PIL import Image
    write_penn_fudan(tmp_path, n=6)
    data = load_dataset("penn_fudan", "train", tmp_path, size=32, n_train=3, mask_rule="article")
    compared = 0
    for name, got in zip(data.extra["names"], data.y):
        with Image.open(tmp_path / "PennFudanPed" / "PedMasks" / f"{name}_mask.png") as mk:
            inst = np.asarray(mk, dtype=np.float64)
        v = 255 * _pil_bilinear(inst, 32) / inst.max()
        sure = np.abs(v - 10) > 1e-3
        assert (~sure).sum() <= 4
        np.testing.assert_array_equal(got[0].numpy()[sure], (v > 10)[sure])
        compared += int(sure.sum())
        # the rule differs from the nearest-neighbour mask on the blended borders only
        near = np.asarray(Image.fromarray(inst.astype(np.uint8)).resize((32, 32), Image.NEAREST)) > 0
        assert 0 < (got[0].numpy() != near).sum() < 0.2 * near.size
    assert compared >= 3 * 32 * 32 - 12


def _article_configs(experiment, preset_name):
    from pathlib import Path

    from manualbp.experiments import get_experiment
    from manualbp.train.sweep import expand
    exp = get_experiment(experiment)
    return {tuple(sorted(s.labels.items())): s.config
            for s in expand(preset(experiment, preset_name), exp.grid(preset_name), Path("/nonexistent"))}


def test_tensorflow_script_options_are_set_by_the_article_presets_only():
    """gradient-pov: lambda 1e-4 (the notebook whose logs the article shows), TensorFlow's SAME padding, the
    passed gradients at the script's scale (x B = 20) with layer 1's; weights-pov: SAME padding;
    sparse-filtering: the seeded equal draws; zca: seed 0 on the script's numpy draw. The sound presets
    set none of them."""
    for name, cfg in _article_configs("gradient-pov", "article-cpu").items():
        letter = dict(name)["case"]
        assert cfg["regularizer"]["lam"] == (0.0 if letter == "Z" else 1e-4)
        assert cfg["model"]["padding"] == "tf_same" and cfg["model"]["equal_init"]
        assert cfg["log"]["input_grad_scale"] == 20.0 == cfg["batch_size"] and cfg["log"]["first_input_grad"]
    for name, cfg in _article_configs("gradient-pov", "sound-cpu").items():
        assert cfg["regularizer"]["lam"] in (0.0, 1e-5) and cfg["model"].get("padding", "same") == "same"
        assert cfg["log"]["input_grad_scale"] == 1.0 and not cfg["log"]["first_input_grad"]
    for pre, padding in (("article-cpu", "tf_same"), ("sound-cpu", "same")):
        assert {c["model"].get("padding", "same") for c in _article_configs("weights-pov", pre).values()} == {padding}
    for pre, equal in (("article-cpu", True), ("sound-cpu", False)):
        assert {c["model"].get("equal_init", False) for c in _article_configs("sparse-filtering", pre).values()} \
            == {equal}
    zca = {dict(k)["seed"]: c["model"].get("numpy_init_seed") for k, c in _article_configs("zca", "article").items()}
    assert zca == {"seed0": 1234, **{f"seed{s}": None for s in range(1, 10)}}


def test_article_segae_equal_init_repeats_the_scripts_seeded_draws():
    """equal_init: every weight of a shape seen before is a copy of the first (three 3 -> 3 decoder
    convolutions and the 3 -> 3 transposed convolution: one (3, 3, 3, 3) tensor), the four pool mixes
    share one draw (max-first blocks d, average-first ones 1 - d); other weights as without it."""
    torch.manual_seed(0)
    plain = build_model({"name": "segae_article"})
    torch.manual_seed(0)
    eq = build_model({"name": "segae_article", "equal_init": True})
    weights = [m.weight for m in [*eq.enc_convs, *eq.dec_tconvs, *eq.dec_convs]]
    shapes = [tuple(w.shape) for w in weights]
    same = [w for w in weights if tuple(w.shape) == (3, 3, 3, 3)]
    assert len(same) == 4 and all(torch.equal(w, same[0]) for w in same)
    for i, w in enumerate(weights):
        if shapes.index(tuple(w.shape)) == i:   # the first of its shape: drawn as without equal_init
            p = [m.weight for m in [*plain.enc_convs, *plain.dec_tconvs, *plain.dec_convs]][i]
            assert torch.equal(w, p)
    mix = [float(p.detach()) for p in eq.pool_mix]
    d = mix[0]
    assert mix == pytest.approx([d, 1 - d, d, 1 - d], rel=1e-6)
    assert len({round(float(p.detach()), 9) for p in plain.pool_mix}) == 4
    torch.testing.assert_close(eq.code.weight, plain.code.weight)


@pytest.mark.parametrize("probe_every", ["epoch", "after_epoch"])
def test_probe_passed_gradients_at_the_scripts_scale_with_layer_one(tmp_path, probe_every):
    """log.input_grad_scale=20 and log.first_input_grad=true: each layer's recorded passed gradient (layer 1's
    included, the gradient at the images) is 20 x the objective's gradient at that layer's input, at the
    probed weights: one step per epoch, recomputed in the test from the initial weights (probe_every=epoch,
    before the step) or the checkpoint (after_epoch, after it)."""
    import json

    import torch.nn.functional as F

    from manualbp.train import train
    from manualbp.train.loop import build_initial_model, epoch_generator
    from manualbp.train.probes import tensor_stats
    from manualbp.train.tasks import make_task

    from .fakedata import write_cifar_batches
    write_cifar_batches(tmp_path / "data", n_per_batch=2)
    cfg = resolve({"device": "cpu", "epochs": 1, "batch_size": 10, "dtype": "float64",
                   "data": {"name": "cifar10", "root": str(tmp_path / "data")},
                   "model": {"name": "cnn6", "padding": "tf_same"}, "optim": {"name": "Adam", "lr": 1e-2},
                   "log": {"probe_every": probe_every, "input_grad_scale": 20.0, "first_input_grad": True,
                           "histograms": False, "progress": False}})
    train(cfg, tmp_path / "run", log=lambda *_: None)
    rows = {r["layer"]: r for r in map(json.loads, (tmp_path / "run" / "probes.jsonl").read_text().splitlines())
            if r["quantity"] == "input_grad"}
    assert sorted(rows) == [f"conv{i}" for i in range(1, 7)]
    task = make_task(cfg, torch.device("cpu"))
    data, _ = task.load_data()
    model = build_initial_model(cfg, task, "cpu")
    if probe_every == "after_epoch":
        model.load_state_dict(torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["model"])
    x, y = next(iter(data.batches(10, shuffle=True, dtype=task.dtype, generator=epoch_generator(0, 1))))
    h = x.clone().requires_grad_(True)
    inputs = []
    for conv, s in zip(model.convs, (2, 2, 2, 2, 1, 1)):
        inputs.append(h)
        pad = (0, 1, 0, 1) if s == 2 else (1, 1, 1, 1)
        h = torch.relu(F.conv2d(F.pad(h, pad), conv.weight.detach(), stride=s))
    loss = F.cross_entropy(h.mean((2, 3)), y)
    grads = torch.autograd.grad(loss, inputs)
    for i, g in enumerate(grads):
        want = tensor_stats(20.0 * g).tolist()
        got = [rows[f"conv{i + 1}"][k] for k in ("mean", "std", "skewness", "kurtosis", "nonzero")]
        assert got == pytest.approx(want, rel=1e-7, abs=1e-12), f"conv{i + 1}"
