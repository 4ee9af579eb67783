"""The same models written in plain torch (``torch.nn.functional`` and autograd), using a manual
model's own parameters and buffers: the reference for gradient-equality tests and benchmarks.

Each function takes a manualbp model and an input and returns what the model's forward returns,
differentiated by autograd alone.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

import manualbp.nn as mnn
from manualbp.models import CNN6, MLP, ArticleSegAE, SegmentationAE

from .opinfo import ref_channel_affine, ref_decorrelated_batch_norm, ref_iter_norm, ref_standardize

_ACT = {"relu": torch.relu, "elu": F.elu, "tanh": torch.tanh, "arctan": torch.atan, "sigmoid": torch.sigmoid,
        "soft_abs": lambda x: torch.sqrt(x * x + 1e-8)}


def _zca_autograd(x, eps=1e-5, mode="dim", backend="eigh"):
    """ZCA through torch.linalg.eigh / svd, differentiated by autograd."""
    A = x if mode == "dim" else x.T
    S = A.T @ A / A.shape[0]
    if backend == "eigh":
        lam, E = torch.linalg.eigh(S)
    else:
        E, lam, _ = torch.linalg.svd(S)
    Y = A @ ((E / torch.sqrt(lam.clamp_min(0) + eps)) @ E.T)
    return Y if mode == "dim" else Y.T


def apply_norm(norm, x):
    y = _normalise(norm, x)
    return ref_channel_affine(y, norm.weight, norm.bias) if getattr(norm, "affine", False) else y


def _normalise(norm, x):
    if isinstance(norm, mnn.Center):
        return x - x.mean(norm.dim, keepdim=True)
    if isinstance(norm, mnn.Standardize):
        return ref_standardize(x, norm.eps, norm.dim)
    if isinstance(norm, mnn.BatchNorm):
        return F.batch_norm(x, norm.running_mean, norm.running_var, None, None, norm.training, norm.momentum,
                            norm.eps)
    if isinstance(norm, mnn.ZCAWhiten):
        return _zca_autograd(x, norm.eps, norm.mode, norm.backend)
    if isinstance(norm, mnn.DecorrelatedBatchNorm):
        return ref_decorrelated_batch_norm(x, norm.running_mean, norm.running_whitening, norm.training,
                                           norm.momentum, norm.eps, norm.backend, norm.group_size)
    if isinstance(norm, mnn.IterNorm):
        return ref_iter_norm(x, norm.running_mean, norm.running_whitening, norm.training, norm.momentum,
                             norm.eps, norm.iterations, norm.group_size)
    raise TypeError(f"no plain-torch reference for {type(norm).__name__}")


def mlp_forward(model: MLP, x):
    x = x.reshape(x.shape[0], -1)
    for i, layer in enumerate(model.layers):
        if model.norm is not None and i == model.norm_at:
            x = apply_norm(model.norm, x)
        x = F.linear(x, layer.weight, layer.bias)
        if i < len(model.acts):
            x = _ACT[model.acts[i].name](x)
    return x


def cnn6_forward(model: CNN6, x):
    for i, conv in enumerate(model.convs):
        x = torch.relu(F.conv2d(x, conv.weight, None, conv.stride, 1))
        if model.bns is not None and i < len(model.bns):
            x = apply_norm(model.bns[i], x)
    return x.mean((2, 3))


def segae_forward(model: SegmentationAE, x):
    skips = []
    for conv in model.enc_convs:
        x = F.max_pool2d(F.elu(F.conv2d(x, conv.weight, conv.bias, 1, 1)), 2)
        skips.append(x)
    z = F.linear(x.flatten(1), model.proj.weight, model.proj.bias)
    g = model.size // 16
    d = F.interpolate(z.reshape(-1, 1, model.code_side, model.code_side), size=(g, g), mode="bilinear",
                      align_corners=False)
    for conv, skip in zip(model.dec_convs, skips[::-1]):
        d = F.elu(F.conv_transpose2d(torch.cat([d, skip], 1), conv.weight, conv.bias, 2, 1, 1))
    d = F.interpolate(torch.cat([d, skips[0]], 1), scale_factor=2, mode="bicubic", align_corners=False)
    d = F.elu(F.conv2d(d, model.final_conv.weight, model.final_conv.bias, 1, 1))
    return torch.sigmoid(F.conv2d(d, model.out_conv.weight, model.out_conv.bias, 1, 1)), z


def article_segae_forward(model: ArticleSegAE, x):
    skips = []
    for conv, w in zip(model.enc_convs, model.pool_mix):
        x = F.elu(F.conv2d(x, conv.weight, None, 1, 1))
        skips.append(x)
        x = w * F.max_pool2d(x, 2) + (1 - w) * F.avg_pool2d(x, 2)
    z = F.linear(x.flatten(1), model.code.weight)
    h = torch.sqrt(z * z + 1e-8) if model.code_act is not None else z
    g = model.size // 16
    d = F.interpolate(h.reshape(-1, 1, model.code_side, model.code_side), size=(g, g), mode="bilinear",
                      align_corners=False)
    d = F.elu(F.conv_transpose2d(d, model.dec_tconvs[0].weight, None, 1, 1))
    for i, (size, mode) in enumerate(zip(model.sizes, ("bicubic", "bilinear", "bilinear", "bicubic"))):
        d = F.interpolate(d, size=(size, size), mode=mode, align_corners=False)
        if i > 0:
            d = torch.cat([d, skips[3 - i]], 1)
        d = F.elu(F.conv_transpose2d(d, model.dec_tconvs[i + 1].weight, None, 1, 1))
        d = F.conv2d(d, model.dec_convs[i].weight, None, 1, 1)
        d = F.elu(d) if i < 3 else torch.sigmoid(d)
    return d, z


def reference_forward(model, x):
    """The plain-torch forward of any manualbp model."""
    for cls, fn in ((MLP, mlp_forward), (CNN6, cnn6_forward), (SegmentationAE, segae_forward),
                    (ArticleSegAE, article_segae_forward)):
        if isinstance(model, cls):
            return fn(model, x)
    raise TypeError(f"no plain-torch reference for {type(model).__name__}")


class TwinModule(torch.nn.Module):
    """A manualbp model's plain-torch forward as a module (``reference_forward``), holding the model as
    ``inner``: ``torch.func.functional_call`` can swap its parameters (names prefixed ``inner.``)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return reference_forward(self.inner, x)
