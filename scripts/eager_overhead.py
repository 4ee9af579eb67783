#!/usr/bin/env python
"""Where the rest of an eager CNN6 step's time goes: one training step (forward, cross-entropy,
backward, Adam) of the same CNN6 in five builds, timed in rounds in one process (order shuffled per
round), each against plain torch in the same round (paired ratio, median [quartiles]):

    plain                     the model in plain torch (autograd's C++ nodes)
    as trained                the manual model as trained: one conv2d_act_stack Function (6 conv +
                              relu and the pool) + the loss Function
    as trained + plain loss   the same with torch's cross-entropy (isolates the loss Function)
    generic chain             the same layers as one generic ``chain`` of their stages (per-stage
                              dispatch; what CNN6 ran before conv2d_act_stack) + the loss Function
    minimal Function          a hand-written single Function for this CNN6 only: 6 conv + relu,
                              average pool and the cross-entropy, no checks, no stage dispatch (the
                              floor for a Python backward with these kernels; not part of the library)

    python scripts/eager_overhead.py --rounds 200

Run it with the bench's malloc settings (``MALLOC_MMAP_THRESHOLD_=33554432
MALLOC_TRIM_THRESHOLD_=1073741824``; see scripts/bench.py) for comparable numbers.
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import manualbp.functional as M  # noqa: E402
from manualbp.functional.dense import conv_backward  # noqa: E402
from manualbp.models import CNN6  # noqa: E402
from manualbp.testing.reference_models import reference_forward  # noqa: E402

aten = torch.ops.aten
_NO_IGNORE = -(2 ** 63)


class MinimalCNN6(torch.autograd.Function):
    """relu(conv(...)) x 6, mean over H and W, cross-entropy: forward and backward by hand, no checks."""

    @staticmethod
    def forward(ctx, x, target, strides, *ws):
        acts = [x]
        for w, s in zip(ws, strides):
            x = F.conv2d(x, w, None, s, 1).clamp_min_(0)
            acts.append(x)
        logp = torch.log_softmax(x.mean((-2, -1)), 1)
        loss, total_weight = aten.nll_loss_forward(logp, target, None, 1, _NO_IGNORE)
        ctx.save_for_backward(*acts, *ws, logp, target, total_weight)
        ctx.conf = (len(ws), strides)
        return loss

    @staticmethod
    def backward(ctx, g):
        # dL/dz = softmax - onehot (nll_loss_backward, _log_softmax_backward_data); mean backward;
        # then per layer, last first: dL/dz_i = g [y_i > 0], (dL/dx_i, dL/dw_i) = convolution_backward
        n, strides = ctx.conf
        saved = ctx.saved_tensors
        acts, ws, (logp, t, total_weight) = saved[:n + 1], saved[n + 1:2 * n + 1], saved[2 * n + 1:]
        gz = aten._log_softmax_backward_data(aten.nll_loss_backward(g, logp, t, None, 1, _NO_IGNORE, total_weight),
                                             logp, 1, logp.dtype)
        h, w = acts[-1].shape[-2:]
        g = gz[..., None, None].expand(acts[-1].shape) / (h * w)
        gws = [None] * n
        for i in reversed(range(n)):
            gx, gws[i], _ = conv_backward((i > 0, True, False), False, acts[i], ws[i],
                                          aten.threshold_backward(g, acts[i + 1], 0), strides[i], (1, 1))
            g = gx
        return (None, None, None, *gws)


def build(kind: str, x, y):
    torch.manual_seed(0)
    model = CNN6()
    opt = torch.optim.Adam(model.parameters(), 1e-4)
    ws = [c.weight for c in model.convs]
    strides = tuple((c.stride, c.stride) for c in model.convs)

    def step():
        opt.zero_grad(set_to_none=True)
        if kind == "plain":
            loss = F.cross_entropy(reference_forward(model, x), y)
        elif kind == "as trained + plain loss":
            loss = F.cross_entropy(model(x), y)
        elif kind == "generic chain":
            stages = [c.stage(a) for c, a in zip(model.convs, model.acts)] + [model.pool.stage()]
            loss = M.softmax_cross_entropy(M.chain(x, stages), y)
        elif kind == "minimal Function":
            loss = MinimalCNN6.apply(x, y, strides, *ws)
        else:
            loss = M.softmax_cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss.detach()
    return step


KINDS = ("plain", "as trained", "as trained + plain loss", "generic chain", "minimal Function")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--size", type=int, default=96, help="image side (batch 20, 3 channels)")
    args = ap.parse_args(argv)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(20, 3, args.size, args.size, generator=g)
    y = torch.randint(0, 10, (20,), generator=g)
    steps = {k: build(k, x, y) for k in KINDS}
    losses = {k: f() for k, f in steps.items()}
    for k in KINDS[1:]:   # the same model and data: every build computes the plain model's loss
        if not torch.allclose(losses[k], losses["plain"], rtol=1e-5, atol=1e-6):
            raise SystemExit(f"{k}: loss {losses[k].item()} differs from plain torch's {losses['plain'].item()}")
    for _ in range(3):
        for f in steps.values():
            f()
    times = {k: [] for k in KINDS}
    order, rng = list(KINDS), random.Random(1)
    for _ in range(args.rounds):
        rng.shuffle(order)
        for k in order:
            t0 = time.perf_counter()
            steps[k]()
            times[k].append(time.perf_counter() - t0)
    print(f"CNN6 step, 20x3x{args.size}x{args.size}, {args.rounds} rounds, {torch.get_num_threads()} threads")
    for k in KINDS:
        r = sorted(a / b for a, b in zip(times[k], times["plain"]))
        n = len(r)
        print(f"{k:26s} {1e3 * sorted(times[k])[n // 2]:7.2f} ms   vs plain {r[n // 2]:.3f} "
              f"[{r[n // 4]:.3f}, {r[(3 * n) // 4]:.3f}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
