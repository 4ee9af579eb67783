"""The segmentation auto-encoder of the sparse-filtering experiment.

Encoder: four [3x3 conv, ``channels`` channels, ELU, 2x2 max-pool] blocks (96 -> 6; 6x6x11 = 396
features). Projection 396 -> ``code`` (25) on which the sparse-filtering cost acts. Decoder: the
code reshaped to 5x5 and resized to the encoder's last grid, then at each scale a concatenation
with the encoder's skip connection and a stride-2 transposed convolution + ELU; the last scale is
a bicubic x2 resize and two 3x3 convolutions down to one channel and a sigmoid (the mask).
"""
from __future__ import annotations

import math

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
