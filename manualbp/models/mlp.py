"""Fully connected network with an optional normalisation/whitening layer at a chosen depth."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

import manualbp.functional as MF
from manualbp.functional.dilated import DilationTape, dilation_rate, dilation_tap, make_dilation
from manualbp.nn import Activation, Linear, layer_act, make_norm


class MLP(nn.Module):
    """widths = (in, h1, ..., out). Layer i is Linear(widths[i], widths[i+1]) followed by the
    activation (the last layer only with ``final_activation``). ``norm`` (a name of
    ``manualbp.nn.NORMS``) is applied to the input of layer ``norm_at`` (0 = on the input).
    ``dilation`` ({"case": 1-6, "P": ..., "D": ...}, see ``manualbp.functional.dilated``) trains with
    dilated back-propagation: a tap on the input of every layer from the second on; the loop calls
    ``set_epoch`` so the rate follows r_t = P / (1 + D t). ``init_std`` / ``bias_init_std``: weights
    and biases drawn from N(0, std) (None: torch's default initialisation; with ``init_std`` alone
    the biases start at 0). ``activation``: a name of ``manualbp.functional.ACTIVATIONS``
    (``leaky_relu`` and ``tanh_sigmoid_derivative`` included) for every activated layer, or a list of
    one name per activated layer. ``numpy_init_seed``: draw those normal weights and biases with
    numpy's ``RandomState(numpy_init_seed).normal``, layer by layer (weights as (in, out), then the
    biases), as the zca article's script did; needs ``init_std`` (and ``bias_init_std`` with biases)."""

    def __init__(self, widths: Sequence[int], activation: str | Sequence[str] = "relu", bias: bool = True,
                 norm: str = "none", norm_at: int = 0, norm_kwargs: dict | None = None,
                 final_activation: bool = False, init_std: float | None = None, dilation: dict | None = None,
                 bias_init_std: float | None = None, numpy_init_seed: int | None = None):
        super().__init__()
        widths = list(widths)
        if len(widths) < 2 or any(not isinstance(w, int) or w < 1 for w in widths):
            raise ValueError(f"MLP: widths must be at least two positive ints (in, ..., out), got {widths}")
        if not 0 <= norm_at < len(widths) - 1:
            raise ValueError(f"MLP: norm_at must lie in [0, {len(widths) - 2}] (the input of a layer), got {norm_at}")
        self.widths, self.norm_at, self.final_activation = widths, norm_at, final_activation
        self.layers = nn.ModuleList(Linear(a, b, bias, init_std, bias_init_std)
                                    for a, b in zip(widths[:-1], widths[1:]))
        n_act = len(self.layers) if final_activation else len(self.layers) - 1
        acts = [activation] * n_act if isinstance(activation, str) else list(activation)
        if len(acts) != n_act:
            raise ValueError(f"MLP: activation must be one name or a list of one per activated layer ({n_act}), "
                             f"got {activation!r}")
        self.acts = nn.ModuleList(Activation(a) for a in acts)
        self.numpy_init_seed = numpy_init_seed
        if numpy_init_seed is not None:
            self.numpy_init()
        self.norm = make_norm(norm, widths[norm_at], **(norm_kwargs or {}))
        self.dilation = make_dilation(dilation, len(self.layers))
        self.epoch = 0

    @torch.no_grad()
    def numpy_init(self) -> None:
        """(Re)draw the weights and biases from ``numpy_init_seed`` in float64, cast to the parameters'
        dtype (the loop calls it again after moving the model to the run's dtype, so float64 runs hold
        numpy's draws exactly)."""
        seed = self.numpy_init_seed
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"MLP: numpy_init_seed must be None or an int >= 0, got {seed!r}")
        if any(lay.init_std is None or (lay.bias is not None and lay.bias_init_std is None) for lay in self.layers):
            raise ValueError("MLP: numpy_init_seed draws N(0, std) weights and biases; set init_std (and "
                             "bias_init_std when bias=True)")
        import numpy as np
        rng = np.random.RandomState(seed)
        for layer in self.layers:   # the script's order: W (in x out), b, next layer's W, b, ...
            w = rng.normal(0.0, layer.init_std, size=(layer.in_features, layer.out_features))
            layer.weight.copy_(torch.from_numpy(w.T.copy()).to(layer.weight))
            if layer.bias is not None:
                b = rng.normal(0.0, layer.bias_init_std, size=layer.out_features)
                layer.bias.copy_(torch.from_numpy(b).to(layer.bias))

    def set_epoch(self, epoch: int) -> None:
        """Called by the loop before each epoch (counted from 0): the dilation rate's t."""
        self.epoch = int(epoch)

    def dilation_rate(self) -> float:
        d = self.dilation
        return 0.0 if d is None else dilation_rate(d["P"], d["D"], self.epoch)

    def forward(self, x):
        if x.dim() > 2:
            x = MF.flatten(x)
        if x.dim() != 2 or x.shape[1] != self.widths[0]:
            raise ValueError(f"MLP: expected input of shape (N, {self.widths[0]}) (or images that flatten to it), "
                             f"got {tuple(x.shape)}")
        tape = None
        if self.dilation is not None and torch.is_grad_enabled():
            tape = DilationTape(self.dilation["rules"], self.dilation_rate())
        for i, layer in enumerate(self.layers):
            if tape is not None and i > 0:
                x = dilation_tap(x, tape, i + 1)   # the input of layer i + 1 (1-based)
            if self.norm is not None and i == self.norm_at:
                x = self.norm(x)
            x = layer_act(layer, self.acts[i] if i < len(self.acts) else None, x)
        return x

    def probe_points(self):
        """(name, layer, activation) per layer, for the training probes."""
        return [(f"layer{i + 1}", layer, self.acts[i] if i < len(self.acts) else None)
                for i, layer in enumerate(self.layers)]
