"""``chain``: several ops run one after another as ONE autograd.Function.

Every Function costs a fixed amount of Python per call on the forward and on the backward (tens of
microseconds on a CPU: creating the node, saving tensors, the engine calling back into Python),
whatever its kernels cost. A model is a sequence of such ops, so the models run a run of
consecutive layers as one ``chain`` when nothing watches them (``manualbp.nn.run_sequence``).

A chain is a list of *stages* ``(F, args)``: ``F`` a ``ManualFunction`` of ``CHAINABLE`` and
``args`` its arguments with ``X`` in first place for the running input (the previous stage's
first output). The forward runs each stage's own ``forward`` and ``setup_context``; the backward
runs each stage's own hand-written ``backward`` in reverse order:

    x_0 = x,  x_{i+1} = F_i(x_i, theta_i)[0]
    dL/dx_i, dL/dtheta_i = F_i.backward(dL/dx_{i+1})      (i = n-1, ..., 0)

with gradients of a tensor used by several stages summed. The math is the stages' own kernels in
the same order, so outputs and gradients are bit-identical to calling the ops one by one (tested
on the models). Through ``apply`` (torch.func, torch.compile) each stage's intermediate outputs
are returned from the forward as non-differentiable outputs, so that ``setup_context`` can hand
them to the stages' own ``setup_context``; the eager twin (``ChainFunction.eager_forward``) runs each stage's
forward and setup_context in one pass and saves the intermediates directly. ``chain`` returns the
last stage's first output. Where a stage's backward made the incoming gradient of the stage before
it, that stage may overwrite it (``owns_grad``): the fused ops then write g act'(z) over g, one
activation-sized buffer less at the backward's peak.

Each stage's input is checked as the op's own function checks it (the same error on failure);
the settings (stride, padding, eps, ...) are checked by whoever builds the stage (the ``stage``
methods in ``manualbp.nn``). The chain's backward is once-differentiable.
"""
from __future__ import annotations

import torch

from ._checks import check_tensor
from ._function import ManualFunction, _plain_tensor, _transforms_active, once_differentiable
from .dense import Conv2dFunction, GlobalAvgPool2dFunction, LinearFunction, _check_conv, _check_linear
from .fused import Conv2dActFunction, ConvTranspose2dActFunction, LinearActFunction
from .norm import BatchNormFunction, _check_batch_norm
from .whitening import ZCAWhitenFunction

class _Input:
    """The placeholder for a stage's running input."""

    def __repr__(self):
        return "X"


X = _Input()


# The stage checks test shapes only: ``chain`` has checked that every tensor has x's dtype and
# device, and every stage keeps them. On failure they raise the op's own error.

def _linear_check(op):
    def check(x, w, b, *_):
        if not (x.dim() >= 1 and w.dim() == 2 and x.shape[-1] == w.shape[1]
                and (b is None or (b.dim() == 1 and b.shape[0] == w.shape[0]))):
            _check_linear(op, x, w, b)
    return check


def _conv_check(op, in_ch_dim, out_ch_dim):
    def check(x, w, b, *_):
        if not (x.dim() == 4 and w.dim() == 4 and x.shape[1] == w.shape[in_ch_dim]
                and (b is None or (b.dim() == 1 and b.shape[0] == w.shape[out_ch_dim]))):
            _check_conv(op, x, w, b, in_ch_dim, out_ch_dim)
    return check


def _gap_check(x):
    if x.dim() != 4:
        check_tensor("global_avg_pool2d", "x", x, ndim=4, shape_hint="(N, C, H, W)")


def _batch_norm_check(x, running_mean, running_var, training, momentum, eps):
    if not (x.dim() in (2, 4) and running_mean is not None and running_mean.shape == (x.shape[1],)
            and running_var.shape == (x.shape[1],) and (not training or x.numel() > x.shape[1])):
        _check_batch_norm(x, running_mean, running_var, training, momentum, eps)


def _zca_check(x, *_):
    if x.dim() != 2:
        check_tensor("zca_whiten", "x", x, ndim=2, shape_hint="(N, D)")


# stage Function: (the number of outputs its forward returns, the first being the running value;
# the check of the running input, the same test and error as the op's own function). A stage's
# backward returns a new tensor as the gradient of X (never g itself or a view of g), which the stage
# before it may then overwrite (``owns_grad``: the fused ops compute g act'(z) in place)
CHAINABLE = {LinearFunction: (1, _linear_check("linear")), LinearActFunction: (1, _linear_check("linear_act")),
             Conv2dFunction: (1, _conv_check("conv2d", 1, 0)), Conv2dActFunction: (1, _conv_check("conv2d_act", 1, 0)),
             ConvTranspose2dActFunction: (1, _conv_check("conv_transpose2d_act", 0, 1)),
             GlobalAvgPool2dFunction: (1, _gap_check), BatchNormFunction: (3, _batch_norm_check),
             ZCAWhitenFunction: (4, _zca_check)}


class _StageCtx:
    """What a stage's ``setup_context`` and ``backward`` use of ``ctx``."""

    saved = ()

    def save_for_backward(self, *tensors):
        self.saved = tensors

    def mark_non_differentiable(self, *tensors):   # the chain marks every output but its result
        pass


# a plan entry: (F, lo, hi, rest, F's output count, F's check, (False,) * len(rest)). The stage's
# arguments are (X, *inputs[lo:hi], *rest): ``inputs``, the chain's flat list of the stages' arguments
# from the second up to the last tensor (None and other values in between included), is what the
# chain Function takes after the plan, so that autograd sees every tensor; ``rest`` holds the
# settings after the last tensor (stride, padding, eps, ...).

def _run_stage(i, stage, x, inputs):
    """(args, output) of stage i on x: the op's own input check, then its forward."""
    args = (x, *inputs[stage[1]:stage[2]], *stage[3])
    stage[5](*args)   # the op's own argument checks and errors, on this stage's input
    try:
        return args, stage[0].forward(*args)
    except (RuntimeError, ValueError, IndexError) as e:
        raise ValueError(f"chain: stage {i} ({stage[0].__name__}) failed on an input of shape "
                         f"{tuple(x.shape)}: {e}") from e


def _setup_stage(stage, args, out, stages, saved):
    """Run the stage's own setup_context on a ``_StageCtx``; collect what it saved."""
    sctx = _StageCtx()
    stage[0].setup_context(sctx, args, out)
    n = len(saved)
    saved.extend(sctx.saved)
    stages.append((sctx, n, len(saved)))
    sctx.saved = ()   # the stage contexts live as long as the graph: only the chain's saved variables hold them


class ChainFunction(ManualFunction):
    """The stages of ``plan`` (see ``make_plan``) as one Function. Returns every stage's outputs,
    flattened; only the last stage's first output is differentiable."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, plan, *inputs):
        outs = []
        for i, stage in enumerate(plan):
            _, out = _run_stage(i, stage, x, inputs)
            if stage[4] == 1:
                outs.append(out)
                x = out
            else:
                outs.extend(out)
                x = out[0]
        return tuple(outs)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, plan = inputs[0], inputs[1]
        inputs = inputs[2:]
        stages, saved, pos = [], [], 0
        for stage in plan:
            k = stage[4]
            _setup_stage(stage, (x, *inputs[stage[1]:stage[2]], *stage[3]),
                         output[pos] if k == 1 else output[pos:pos + k], stages, saved)
            x = output[pos]
            pos += k
        result = pos - plan[-1][4]
        ctx.mark_non_differentiable(*(o for i, o in enumerate(output) if i != result and o is not None))
        ctx.set_materialize_grads(False)   # no zero-filled gradients for the intermediate outputs
        ctx.save_for_backward(*saved)
        ctx.conf = (plan, stages, result)

    @staticmethod
    def eager_forward(ctx, x, plan, *inputs):
        """The eager twin's forward (see ``ManualFunction``): each stage's forward and setup_context in
        one pass, the intermediates saved directly, one output (``apply`` must return every
        intermediate for ``setup_context``). The backward is ``backward`` (result index 0)."""
        stages, saved = [], []
        for i, stage in enumerate(plan):
            args, out = _run_stage(i, stage, x, inputs)
            _setup_stage(stage, args, out, stages, saved)
            x = out if stage[4] == 1 else out[0]
        ctx.save_for_backward(*saved)
        ctx.conf = (plan, stages, 0)
        return x

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads):
        # stage by stage in reverse: (dL/dx_i, dL/dtheta_i) = F_i.backward(dL/dx_{i+1});
        # dL/dtheta summed over the stages that use theta
        plan, stages, result = ctx.conf
        need = ctx.needs_input_grad
        need_t = need[2:]
        # dep[i]: whether stage i's running input depends on something that needs a gradient
        dep, d = [], need[0]
        for stage in plan:
            dep.append(d)
            d = d or any(need_t[stage[1]:stage[2]])
        saved = ctx.saved_tensors
        g = grads[result]
        tgrads = [None] * len(need_t)
        last = len(plan) - 1
        own = g is not None and not _transforms_active() and _plain_tensor(g)
        for i in range(last, -1, -1):
            if g is None:
                break
            fn, lo, hi, _, k, _, rest_false = plan[i]
            sctx, s0, s1 = stages[i]
            sctx.saved_tensors = saved[s0:s1]
            sctx.needs_input_grad = (dep[i], *need_t[lo:hi], *rest_false)
            # g was made by the backward of stage i + 1: the chain holds the only reference (out= kernels
            # have no vmap rule, so not under a transform)
            sctx.owns_grad = i < last and own
            gs = fn.backward(sctx, g) if k == 1 else fn.backward(sctx, g, *((None,) * (k - 1)))
            sctx.saved_tensors = None   # the stage context outlives the backward (it lives with the graph)
            if type(gs) is not tuple:
                gs = (gs,)
            for j in range(lo, hi):
                if need_t[j]:
                    ga = gs[1 + j - lo]
                    if ga is not None:
                        tgrads[j] = ga if tgrads[j] is None else tgrads[j] + ga
            g = gs[0] if dep[i] else None
        return (g if need[0] else None, None, *tgrads)


def make_plan(stages) -> tuple[tuple, list]:
    """(plan, inputs) of a list of stages ``(F, args)``: each stage's arguments from the second up to
    its last tensor moved to the flat list ``inputs`` (see the plan entry above). Refuses Functions
    outside ``CHAINABLE`` and stages without ``X`` first."""
    plan, inputs = [], []
    for i, (fn, args) in enumerate(stages):
        spec = CHAINABLE.get(fn)
        if spec is None:
            raise ValueError(f"chain: stage {i} is {getattr(fn, '__name__', fn)!r}, which cannot be chained; "
                             f"chainable: {sorted(f.__name__ for f in CHAINABLE)}")
        if not args or args[0] is not X:
            raise ValueError(f"chain: stage {i} ({fn.__name__}) must take X (the running input) as its first "
                             "argument")
        m = len(args) - 1   # the position of the last tensor argument (0: none)
        while m and not isinstance(args[m], torch.Tensor):
            m -= 1
        lo = len(inputs)
        inputs.extend(args[1:m + 1])
        rest = tuple(args[m + 1:])
        plan.append((fn, lo, len(inputs), rest, spec[0], spec[1], (False,) * len(rest)))
    if not plan:
        raise ValueError("chain: give at least one stage")
    return tuple(plan), inputs


def chain(x: torch.Tensor, stages) -> torch.Tensor:
    """Run ``stages`` (``(F, args)`` pairs, ``X`` first in ``args`` for the running input; see the
    module docstring) on ``x`` as one autograd.Function; returns the last stage's first output.
    Every tensor must have x's dtype and device."""
    plan, inputs = make_plan(stages)
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError(f"chain: x must be a floating-point tensor, got "
                         f"{x.dtype if isinstance(x, torch.Tensor) else type(x).__name__}")
    dtype, device = x.dtype, x.device
    for t in inputs:
        if isinstance(t, torch.Tensor) and (t.dtype != dtype or t.device != device):
            raise ValueError(f"chain: every tensor must have x's dtype and device ({x.dtype}, {x.device}); "
                             f"got a {tuple(t.shape)} tensor of {t.dtype} on {t.device} (convert the input, "
                             f"x.to(dtype, device), or the model, model.to(dtype, device))")
    out = ChainFunction.call(x, plan, *inputs)
    return out[len(out) - plan[-1][4]] if type(out) is tuple else out   # apply returns every stage's outputs
