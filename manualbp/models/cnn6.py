"""CNN6: six 3x3 convolutions without bias, ReLU after each (the last too), an optional normalisation
(batch norm, decorrelated batch norm or IterNorm) after the ReLU of layers 1-5, global average pooling,
logits (softmax in the loss)."""
from __future__ import annotations

import inspect
from typing import Sequence

import torch
from torch import nn

from manualbp.nn import Activation, BatchNorm, Conv2d, GlobalAvgPool2d, layer_act, make_norm

# the normalisations CNN6 can place after the ReLU of layers 1-5 (names of manualbp.nn.NORMS)
CNN6_NORMS = ("none", "batch_norm", "decorrelated_batch_norm", "dbn", "iter_norm")


class CNN6(nn.Module):
    """Six 3x3 convolutions without bias, ReLU after each, optional batch norm after the ReLU of
    layers 1-5, global average pooling; returns logits.

    Args:
        in_channels: input channels (3 for RGB).
        channels, strides: one entry per layer (default 16 x 5 then 10; strides 2, 2, 2, 2, 1, 1).
        batch_norm: batch norm (no affine) after the ReLU of every layer but the last, with the ``bn_*``
            settings below (the articles' layer).
        norm, norm_kwargs: instead, any of ``CNN6_NORMS`` by name, placed where batch norm is, with its
            settings (``manualbp.nn.make_norm``): e.g. ``norm="iter_norm", norm_kwargs={"group_size": 8,
            "affine": True}`` whitens each layer's feature maps in groups of 8 channels, as the whitening
            papers' convolutional networks.
        init_std: weights N(0, init_std).
        bn_eps, bn_momentum: the batch norms' settings (momentum in torch's convention).
        bn_running_init, bn_running_variance: ``"zero"`` / ``"biased"`` for the weights-pov article's
            running statistics (``manualbp.nn.BatchNorm``).
        equal_init: every layer whose weight has the shape of an earlier one starts as a copy of it
            (with the default channels: layers 2-5 start equal), as in the weights-pov article's code,
            whose same-seeded draws repeated for equal shapes.
        padding: ``"same"`` (one pixel on every side) or ``"tf_same"`` (TensorFlow's "SAME", as the
            articles' ``tf.nn.conv2d(..., padding='SAME')``: at stride 2 on an even input the one
            pixel goes to the bottom and right only, a grid shifted by a pixel; see
            ``manualbp.functional.tf_same_padding``).

    Input ``(N, in_channels, H, W)``; output ``(N, channels[-1])``."""

    def __init__(self, in_channels: int = 3, channels: Sequence[int] = (16, 16, 16, 16, 16, 10),
                 strides: Sequence[int] = (2, 2, 2, 2, 1, 1), batch_norm: bool = False, init_std: float = 0.05,
                 bn_eps: float = 1e-8, bn_momentum: float = 0.1, bn_running_init: str = "torch",
                 bn_running_variance: str = "unbiased", equal_init: bool = False, padding: str = "same",
                 norm: str = "none", norm_kwargs: dict | None = None):
        super().__init__()
        if norm not in CNN6_NORMS:
            raise ValueError(f"CNN6: norm must be one of {list(CNN6_NORMS)}, got {norm!r}")
        if batch_norm and norm != "none":
            raise ValueError(f"CNN6: batch_norm=True and norm={norm!r} both place a layer after the ReLUs; give one "
                             "(batch_norm=True is the articles' batch norm with the bn_* settings)")
        if norm_kwargs and norm == "none":
            raise ValueError("CNN6: norm_kwargs given without a norm; set norm too")
        defaults = inspect.signature(CNN6.__init__).parameters
        bn_set = [k for k, v in (("bn_eps", bn_eps), ("bn_momentum", bn_momentum), ("bn_running_init", bn_running_init),
                                 ("bn_running_variance", bn_running_variance)) if v != defaults[k].default]
        if norm != "none" and bn_set:
            raise ValueError(f"CNN6: {sorted(bn_set)} set the layers of batch_norm=True only; with norm={norm!r} "
                             "give the layer's settings in norm_kwargs (e.g. norm_kwargs={'eps': 1e-5})")
        if padding not in ("same", "tf_same"):
            raise ValueError(f"CNN6: padding must be 'same' or 'tf_same' (TensorFlow's SAME), got {padding!r}")
        if len(channels) != len(strides):
            raise ValueError(f"CNN6: channels ({len(channels)}) and strides ({len(strides)}) must have one entry "
                             "per layer")
        chans = [in_channels, *channels]
        self.convs = nn.ModuleList(Conv2d(a, b, 3, s, padding, bias=False, init_std=init_std)
                                   for a, b, s in zip(chans[:-1], chans[1:], strides))
        self.acts = nn.ModuleList(Activation("relu") for _ in self.convs)
        if equal_init:
            with torch.no_grad():
                for i, conv in enumerate(self.convs):
                    first = next(c for c in self.convs[:i + 1] if c.weight.shape == conv.weight.shape)
                    conv.weight.copy_(first.weight)
        # bn_momentum in torch's convention: the seeds' TensorFlow decay 0.9 is momentum 0.1
        self.bns = nn.ModuleList(BatchNorm(c, bn_eps, bn_momentum, bn_running_init, bn_running_variance)
                                 for c in channels[:-1]) if batch_norm else None
        if norm != "none":
            self.bns = nn.ModuleList(make_norm(norm, c, **dict(norm_kwargs or {})) for c in channels[:-1])
        self.pool = GlobalAvgPool2d()
        self.in_channels = in_channels

    def forward(self, x):
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"CNN6: expected images of shape (N, {self.in_channels}, H, W), got {tuple(x.shape)}")
        for i, (conv, act) in enumerate(zip(self.convs, self.acts)):
            x = layer_act(conv, act, x)   # one fused conv + relu Function unless probes watch the pair
            if self.bns is not None and i < len(self.bns):
                x = self.bns[i](x)
        return self.pool(x)

    def probe_points(self):
        """(name, layer, activation) per convolution, for the training probes."""
        return [(f"conv{i + 1}", conv, act) for i, (conv, act) in enumerate(zip(self.convs, self.acts))]
