"""The segmentation auto-encoder of the sparse-filtering experiment.

Encoder: four [3x3 conv, ``channels`` channels, ELU, 2x2 max-pool] blocks (96 -> 6; 6x6x11 = 396
features). Projection 396 -> ``code`` (25) on which the sparse-filtering cost acts. Decoder: the
code reshaped to 5x5 and resized to the encoder's last grid, then at each scale a concatenation
with the encoder's skip connection and a stride-2 transposed convolution + ELU; the last scale is
a bicubic x2 resize and two 3x3 convolutions down to one channel and a sigmoid (the mask).
"""
from __future__ import annotations

import math

import torch
from torch import nn

import manualbp.functional as MF
from manualbp.nn import Activation, Conv2d, ConvTranspose2d, Interpolate, Linear, MaxPool2d, layer_act


class SegmentationAE(nn.Module):
    """The segmentation auto-encoder of the sparse-filtering experiment (see the module docstring).

    Args:
        in_channels: input channels.
        size: the square input side, a multiple of 16.
        channels: channels of every encoder block.
        code: the code's size, a perfect square (reshaped to a grid for the decoder).
        sparse_activation: None, ``"soft_abs"`` or ``"elu"``: the activation of the
            sparse-filtering cost on the code (``sparse_cost``).
        sparse_eps: that cost's eps.

    ``forward(x)`` with x ``(N, in_channels, size, size)`` returns (mask probabilities
    ``(N, 1, size, size)``, code ``(N, code)``)."""

    def __init__(self, in_channels: int = 3, size: int = 96, channels: int = 11, code: int = 25,
                 sparse_activation: str | None = None, sparse_eps: float = 1e-8):
        super().__init__()
        side = math.isqrt(code)
        if size % 16 or size < 16:
            raise ValueError(f"SegmentationAE: size must be a multiple of 16 (four 2x2 pools), got {size}")
        if side * side != code:
            raise ValueError(f"SegmentationAE: code must be a perfect square (reshaped to a grid), got {code}")
        if sparse_activation not in (None, "soft_abs", "elu"):
            raise ValueError(f"SegmentationAE: sparse_activation must be None, 'soft_abs' or 'elu', "
                             f"got {sparse_activation!r}")
        self.in_channels, self.size, self.code_side = in_channels, size, side
        self.sparse_activation, self.sparse_eps = sparse_activation, sparse_eps
        grid = size // 16
        self.enc_convs = nn.ModuleList(Conv2d(c, channels, 3, 1, "same") for c in [in_channels] + [channels] * 3)
        self.enc_acts = nn.ModuleList(Activation("elu") for _ in range(4))
        self.pools = nn.ModuleList(MaxPool2d(2) for _ in range(4))
        self.proj = Linear(grid * grid * channels, code)
        self.code_resize = Interpolate(size=(grid, grid), mode="bilinear")
        self.dec_convs = nn.ModuleList([ConvTranspose2d(1 + channels, channels, 3, 2, 1, 1),
                                        ConvTranspose2d(2 * channels, channels, 3, 2, 1, 1),
                                        ConvTranspose2d(2 * channels, channels, 3, 2, 1, 1)])
        self.dec_acts = nn.ModuleList(Activation("elu") for _ in range(4))
        self.final_resize = Interpolate(scale_factor=2, mode="bicubic")
        self.final_conv = Conv2d(2 * channels, channels, 3, 1, "same")
        self.out_conv = Conv2d(channels, 1, 3, 1, "same")
        self.out_act = Activation("sigmoid")

    def forward(self, x):
        """Returns (mask probabilities (N, 1, size, size), code z (N, code))."""
        if x.dim() != 4 or x.shape[1] != self.in_channels or tuple(x.shape[2:]) != (self.size, self.size):
            raise ValueError(f"SegmentationAE: expected images of shape (N, {self.in_channels}, {self.size}, "
                             f"{self.size}), got {tuple(x.shape)}")
        skips = []
        for conv, act, pool in zip(self.enc_convs, self.enc_acts, self.pools):
            x = pool(layer_act(conv, act, x))
            skips.append(x)
        z = self.proj(MF.flatten(x))
        d = self.code_resize(MF.reshape(z, (z.shape[0], 1, self.code_side, self.code_side)))
        for conv, act, skip in zip(self.dec_convs, self.dec_acts, skips[::-1]):
            d = layer_act(conv, act, MF.concat([d, skip], dim=1))
        d = self.final_resize(MF.concat([d, skips[0]], dim=1))
        d = layer_act(self.final_conv, self.dec_acts[3], d)
        return layer_act(self.out_conv, self.out_act, d), z

    def sparse_cost(self, z):
        """The sparse-filtering cost on the code (only for models built with a sparse_activation)."""
        if self.sparse_activation is None:
            raise ValueError("SegmentationAE.sparse_cost: this model was built without sparse_activation")
        return MF.sparse_filtering(z, self.sparse_eps, self.sparse_activation)

    def probe_points(self):
        """(name, layer, activation) per weight layer, for the training probes."""
        pts = [(f"enc{i + 1}", c, a) for i, (c, a) in enumerate(zip(self.enc_convs, self.enc_acts))]
        pts.append(("proj", self.proj, None))
        pts += [(f"dec{i + 1}", c, a) for i, (c, a) in enumerate(zip(self.dec_convs, self.dec_acts))]
        return pts + [("final", self.final_conv, self.dec_acts[3]), ("out", self.out_conv, self.out_act)]


class ArticleSegAE(nn.Module):
    """The sparse-filtering article's segmentation auto-encoder, as its code built it (no biases anywhere).

    Encoder: four [3x3 conv ("same"), ELU] blocks with ``channels`` (4, 8, 16, 8), each followed by a
    learnable mix of 2x2 max and average pooling (``manualbp.functional.pool_mix``; 96 -> 6). Each
    mix is one scalar ``pool_mix.i``, the weight on the max pool: the code drew the weight of the
    pool it named first from N(0, 0.05^2), max first in blocks 1 and 3, average first in blocks 2
    and 4, so blocks 2 and 4 start at 1 - N(0, 0.05^2) (the same function and, under Adam, the same
    steps). Code: the 6x6x8 = 288 features -> ``code`` (9) by a linear map (``code``), weights
    N(0, ``code_init_std``^2); ``code_activation`` ``"soft_abs"`` (the plain, L1 and L2 models) or
    None (the sparse-filtering models, whose cost acts on the linear code). Decoder: the code as a
    3x3 map, bilinear to 6x6, a stride-1 3x3 transposed convolution (1 -> ``dec_channels``); then
    bicubic to 12, transposed conv and conv; bilinear to 24, concatenated with encoder block 3's
    output, transposed conv and conv; bilinear to 48 with block 2's, transposed conv and conv;
    bicubic to 96 with block 1's, transposed conv, and a 3x3 conv to one channel with a sigmoid.
    ELU after every other convolution. Convolution weights N(0, ``init_std``^2). ``equal_init``: as the
    script's ``tf.random_normal(..., seed=2)`` drew them, weights of the same shape start equal (a 3 -> 3
    convolution and a 3 -> 3 transposed convolution too: TensorFlow's filters [k, k, in, out] and
    [k, k, out, in] map to torch's (out, in, k, k) and (in, out, k, k) by the same permutation) and the
    four pool mixes share one draw.

    ``forward(x)`` with x ``(N, 3, 96, 96)`` returns (mask probabilities ``(N, 1, 96, 96)``, code
    ``(N, code)`` before its activation). ``sparse_cost(z)``: the sparse-filtering cost of the code
    (``sparse_activation``, ``sparse_eps``, ``sparse_reduction``: the article's soft absolute value,
    1e-20 and the mean)."""

    def __init__(self, in_channels: int = 3, size: int = 96, channels=(4, 8, 16, 8), code: int = 9,
                 dec_channels: int = 3, code_activation: str | None = "soft_abs", code_init_std: float = 0.05,
                 init_std: float = 0.05, sparse_eps: float = 1e-20, sparse_reduction: str = "mean",
                 sparse_activation: str = "soft_abs", equal_init: bool = False):
        super().__init__()
        if not isinstance(equal_init, bool):
            raise ValueError(f"ArticleSegAE: equal_init must be true or false, got {equal_init!r}")
        side = math.isqrt(code)
        if size % 16 or size < 16:
            raise ValueError(f"ArticleSegAE: size must be a multiple of 16 (four 2x2 pools), got {size}")
        if side * side != code:
            raise ValueError(f"ArticleSegAE: code must be a perfect square (reshaped to a grid), got {code}")
        if len(channels) != 4:
            raise ValueError(f"ArticleSegAE: channels must name the four encoder blocks, got {channels!r}")
        if code_activation not in (None, "soft_abs"):
            raise ValueError(f"ArticleSegAE: code_activation must be None or 'soft_abs', got {code_activation!r}")
        if sparse_activation not in ("soft_abs", "elu"):
            raise ValueError(f"ArticleSegAE: sparse_activation must be 'soft_abs' or 'elu', got {sparse_activation!r}")
        self.sparse_activation = sparse_activation
        self.in_channels, self.size, self.code_side = in_channels, size, side
        self.code_activation, self.sparse_eps, self.sparse_reduction = code_activation, sparse_eps, sparse_reduction
        grid = size // 16
        chans = [in_channels, *channels]
        self.enc_convs = nn.ModuleList(Conv2d(a, b, 3, 1, "same", bias=False, init_std=init_std)
                                       for a, b in zip(chans[:-1], chans[1:]))
        self.enc_acts = nn.ModuleList(Activation("elu") for _ in range(4))
        draws = torch.randn(4) * 0.05
        if equal_init:   # the script's tf.random_normal([], seed=2): one draw for the four pool mixes
            draws = draws[:1].repeat(4)
        self.pool_mix = nn.ParameterList(nn.Parameter((d if i % 2 == 0 else 1 - d).reshape(1))
                                         for i, d in enumerate(draws))
        self.code = Linear(grid * grid * channels[-1], code, bias=False, init_std=code_init_std)
        self.code_act = Activation("soft_abs") if code_activation else None
        c = dec_channels
        self.sizes = [2 * grid * 2 ** i for i in range(4)]       # 12, 24, 48, 96 for size 96
        self.first_resize = Interpolate(size=(grid, grid), mode="bilinear")
        self.resizes = nn.ModuleList(Interpolate(size=(s, s), mode=m)
                                     for s, m in zip(self.sizes, ("bicubic", "bilinear", "bilinear", "bicubic")))
        skip = [0, channels[2], channels[1], channels[0]]
        self.dec_tconvs = nn.ModuleList([ConvTranspose2d(1, c, 3, 1, 1, 0, bias=False)]
                                        + [ConvTranspose2d(c + s, c, 3, 1, 1, 0, bias=False) for s in skip])
        self.dec_convs = nn.ModuleList([Conv2d(c, c, 3, 1, "same", bias=False, init_std=init_std) for _ in range(3)]
                                       + [Conv2d(c, 1, 3, 1, "same", bias=False, init_std=init_std)])
        for t in self.dec_tconvs:
            nn.init.normal_(t.weight, 0.0, init_std)
        if equal_init:   # tf.random_normal(shape, seed=2) per layer: weights of one (TensorFlow) shape start equal
            with torch.no_grad():
                weights = [m.weight for m in [*self.enc_convs, *self.dec_tconvs, *self.dec_convs]]
                for i, w in enumerate(weights):
                    w.copy_(next(v for v in weights[:i + 1] if v.shape == w.shape))
        self.dec_acts = nn.ModuleList(Activation("elu") for _ in range(8))
        self.out_act = Activation("sigmoid")

    def forward(self, x):
        """Returns (mask probabilities (N, 1, size, size), code z (N, code) before its activation)."""
        if x.dim() != 4 or x.shape[1] != self.in_channels or tuple(x.shape[2:]) != (self.size, self.size):
            raise ValueError(f"ArticleSegAE: expected images of shape (N, {self.in_channels}, {self.size}, "
                             f"{self.size}), got {tuple(x.shape)}")
        skips = []
        for conv, act, w in zip(self.enc_convs, self.enc_acts, self.pool_mix):
            x = layer_act(conv, act, x)
            skips.append(x)             # the block's output before its pool (96, 48, 24, 12)
            x = MF.pool_mix(x, w, 2)
        z = self.code(MF.flatten(x))
        h = self.code_act(z) if self.code_act is not None else z
        d = self.first_resize(MF.reshape(h, (h.shape[0], 1, self.code_side, self.code_side)))
        d = layer_act(self.dec_tconvs[0], self.dec_acts[0], d)
        skip_for = [None, skips[2], skips[1], skips[0]]
        for i in range(4):
            d = self.resizes[i](d)
            if skip_for[i] is not None:
                d = MF.concat([d, skip_for[i]], dim=1)
            d = layer_act(self.dec_tconvs[i + 1], self.dec_acts[2 * i + 1], d)
            d = layer_act(self.dec_convs[i], self.dec_acts[2 * i + 2] if i < 3 else self.out_act, d)
        return d, z

    def sparse_cost(self, z):
        """The sparse-filtering cost of the linear code; by default the article's: soft absolute value with
        eps 1e-20, columns then rows normalised, the mean of the entries (``sparse_activation="elu"``:
        the ELU variant the article described but did not publish)."""
        return MF.sparse_filtering(z, self.sparse_eps, self.sparse_activation, self.sparse_reduction)

    def penalized_parameters(self):
        """The weights the L1 / L2 penalties act on: every convolution and transposed convolution
        (not the code layer or the pool mixes), as in the article's code."""
        return [m.weight for m in [*self.enc_convs, *self.dec_tconvs, *self.dec_convs]]

    def probe_points(self):
        """(name, layer, activation) per weight layer, for the training probes."""
        pts = [(f"enc{i + 1}", c, a) for i, (c, a) in enumerate(zip(self.enc_convs, self.enc_acts))]
        pts.append(("code", self.code, self.code_act))
        pts += [(f"dect{i + 1}", t, None) for i, t in enumerate(self.dec_tconvs)]
        return pts + [(f"dec{i + 1}", c, None) for i, c in enumerate(self.dec_convs)]
