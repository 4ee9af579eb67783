"""Checks run for every registry entry: gradcheck (float64, CPU and CUDA), batched gradcheck,
forward-mode AD (gradcheck's check_forward_ad, and the tangents of both paths against the
reference's, with every input's tangent and with the last input's alone), double backward
(gradgradcheck, and a second derivative built through the backward with a constant incoming gradient,
by reverse-over-reverse and by eager forward-over-reverse, against central differences of the op's own
first-order backward, itself checked against the reference; or the op's clear refusal), and
forward/backward agreement with the entry's independent reference (float32 and float64, CPU and
CUDA, and on non-contiguous views of the samples)."""
from __future__ import annotations

import torch
import torch.autograd.forward_ad as fwAD

from manualbp.functional._function import RefusedDerivative

from .opinfo import OpInfo, Sample

CHECKS = ("gradcheck", "forward-ad", "jvp-ref", "gradgradcheck", "second-order", "ref-float32", "ref-float64",
          "ref-noncontiguous", "cuda-gradcheck", "cuda-float32", "cuda-float64")


def clone_args(args):
    return tuple(a.detach().clone().requires_grad_(a.requires_grad) if isinstance(a, torch.Tensor) else a
                 for a in args)


def _noncontiguous(a):
    """The same values in a non-contiguous layout: a transposed layout for 2-D and larger tensors
    (the last two dimensions), every second element of a wider buffer for 1-D ones; a tensor that
    required grad is a leaf that requires grad again."""
    if not isinstance(a, torch.Tensor) or a.dim() == 0 or a.numel() <= 1:
        return a
    d = a.detach()
    if d.dim() >= 2 and d.shape[-1] > 1 and d.shape[-2] > 1:
        v = d.mT.contiguous().mT
    else:
        base = d.new_zeros(*d.shape[:-1], 2 * d.shape[-1])
        base[..., ::2] = d
        v = base[..., ::2]
    assert not v.is_contiguous() and torch.equal(v, d)
    return v.requires_grad_(a.requires_grad)


def noncontiguous_args(args):
    return tuple(_noncontiguous(a) for a in args)


def _diff_inputs(args):
    return [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]


def _as_function(info: OpInfo, sample: Sample):
    args = clone_args(sample.args)
    pos = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor) and a.requires_grad]

    def fn(*diff):
        # fresh running buffers on each call (no requires_grad_: torch.func transforms forbid it)
        full = [a.detach().clone() if isinstance(a, torch.Tensor) and i not in pos else a for i, a in enumerate(args)]
        for i, d in zip(pos, diff, strict=True):
            full[i] = d
        return info.op(*full, **sample.kwargs)
    return fn, tuple(args[i] for i in pos)


def run_gradcheck(info: OpInfo, sample: Sample) -> None:
    """torch.autograd.gradcheck in float64 on the sample's device (and check_batched_grad where the
    entry allows)."""
    fn, inputs = _as_function(info, sample)
    if not info.gradient:   # a named backward that is not the gradient: gradcheck must see that
        ok = torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, raise_exception=False)
        assert not ok, f"{info.name} [{sample.desc}]: gradcheck passed, but this backward is not meant to be a gradient"
        return
    ok = torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3,
                                  check_batched_grad=info.batched_grad, raise_exception=True)
    assert ok


def run_gradgradcheck(info: OpInfo, sample: Sample) -> None:
    """Double backward: gradgradcheck in float64 where the entry's backward is differentiable; where
    it is not, the op must refuse a second differentiation (once_differentiable) instead of being
    silently wrong."""
    fn, inputs = _as_function(info, sample)
    if info.gradgrad:
        assert torch.autograd.gradgradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, raise_exception=True)
        return
    out = fn(*inputs)
    v = torch.ones_like(out, requires_grad=True)   # as gradgradcheck: the grad output is differentiated too
    (g,) = torch.autograd.grad(out, inputs[0], v, create_graph=True)
    try:
        g.sum().backward()
    except RefusedDerivative as e:
        assert "second derivative" in str(e) and "not provided" in str(e), f"{info.name}: unclear refusal {e}"
        return
    raise AssertionError(f"{info.name}: double backward ran, but the entry says the op refuses it")


def _tangents(inputs, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(a.shape, generator=gen, dtype=torch.float64).to(a) for a in inputs)


def run_forward_ad(info: OpInfo, sample: Sample) -> None:
    """gradcheck with check_forward_ad (float64): the hand-written jvp against finite differences, on
    the eager twin (plain forward-mode AD). An entry without a forward-mode rule must raise
    ``RefusedDerivative`` instead."""
    fn, inputs = _as_function(info, sample)
    if not info.jvp:
        with fwAD.dual_level():
            duals = [fwAD.make_dual(a.detach(), t) for a, t in zip(inputs, _tangents(inputs))]
            try:
                fn(*duals)
            except RefusedDerivative as e:
                assert "forward" in str(e), f"{info.name}: unclear refusal {e}"
                return
        raise AssertionError(f"{info.name}: forward mode ran, but the entry says the op refuses it")
    if not info.gradient:
        return   # a named backward that is not the gradient: its jvp is checked against the reference only
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, check_forward_ad=True,
                                    check_backward_ad=False, check_undefined_grad=False, check_batched_grad=False,
                                    raise_exception=True)


def compare_jvp_reference(info: OpInfo, sample: Sample) -> float:
    """The op's tangent on both paths (plain forward-mode AD runs the eager twin's jvp, torch.func.jvp
    runs ``apply``'s) against the reference's forward-mode tangent, for a random tangent of every
    differentiable input. Returns the largest difference."""
    if not info.jvp:
        return 0.0
    fn_m, inputs = _as_function(info, sample)
    fn_r, _ = _as_function(OpInfo(info.name, info.family, info.ref, info.ref, info.samples), sample)
    primals = tuple(a.detach() for a in inputs)
    tangents = _tangents(inputs)
    rtol, atol = info.tolerance(primals[0].dtype)
    _, t_ref = torch.func.jvp(fn_r, primals, tangents)
    _, t_func = torch.func.jvp(fn_m, primals, tangents)
    with fwAD.dual_level():
        t_eager = fwAD.unpack_dual(fn_m(*(fwAD.make_dual(p, t) for p, t in zip(primals, tangents)))).tangent
    if len(primals) > 1:   # the last input's tangent alone: the others arrive as None (or zeros) in the rules
        alone = tuple(torch.zeros_like(t) for t in tangents[:-1]) + (tangents[-1],)
        _, t_ref_alone = torch.func.jvp(fn_r, primals, alone)
        with fwAD.dual_level():
            args = [*primals[:-1], fwAD.make_dual(primals[-1], tangents[-1])]
            t_alone = fwAD.unpack_dual(fn_m(*args)).tangent
        t_alone = torch.zeros_like(t_ref_alone) if t_alone is None else t_alone
        torch.testing.assert_close(t_alone, t_ref_alone, rtol=rtol, atol=atol,
                                   msg=lambda m: f"{info.name} [{sample.desc}]: tangent of the last input alone "
                                                 f"differs from the reference's\n{m}")
    worst = 0.0
    for path, t in (("torch.func.jvp (apply)", t_func), ("forward_ad (eager twin)", t_eager)):
        assert t is not None, f"{info.name} [{sample.desc}]: {path} returned no tangent"
        worst = max(worst, (t - t_ref).abs().max().item() if t.numel() else 0.0)
        torch.testing.assert_close(t, t_ref, rtol=rtol, atol=atol,
                                   msg=lambda m: f"{info.name} [{sample.desc}]: {path} tangent differs from the "
                                                 f"reference's\n{m}")
    return worst


def _second(out, inputs, v, u):
    """d/dinputs < d<out, v>/dinputs, u >: a Hessian-vector product through the backward, v constant."""
    grads = torch.autograd.grad(out, inputs, v, create_graph=True, allow_unused=True)
    dot = sum((g * w).sum() for g, w in zip(grads, u) if g is not None and g.requires_grad)
    if not isinstance(dot, torch.Tensor):   # every gradient is a constant: the second derivative is 0
        return [torch.zeros_like(a) for a in inputs]
    second = torch.autograd.grad(dot, inputs, allow_unused=True)
    return [torch.zeros_like(a) if h is None else h for a, h in zip(inputs, second)]


def _forward_over_reverse(fn, inputs, v, u):
    """H u of <fn(inputs), v> by eager forward-over-reverse: inputs dual with tangents u, a plain first-order
    grad, the tangent of the result (an input whose gradient carries no tangent: 0)."""
    leaves = [a.detach().clone().requires_grad_() for a in inputs]
    with fwAD.dual_level():
        out = fn(*(fwAD.make_dual(x, t) for x, t in zip(leaves, u)))
        grads = torch.autograd.grad(out, leaves, v, allow_unused=True)
        tangents = [None if g is None else fwAD.unpack_dual(g).tangent for g in grads]
    return [torch.zeros_like(a) if t is None else t for a, t in zip(inputs, tangents)]


def run_second_order(info: OpInfo, sample: Sample, eps: float = 1e-6) -> float:
    """A second derivative built through the op's backward with a constant incoming gradient v (what
    ``torch.autograd.grad(loss, params, create_graph=True)`` hands the last op): where the entry is
    differentiable twice, the Hessian-vector product H u of <op(inputs), v> equals the central
    difference (grad(inputs + eps u) - grad(inputs - eps u)) / (2 eps) of the op's own first-order
    backward (float64); otherwise the op raises ``RefusedDerivative``, never a silent constant.
    Returns the largest difference."""
    fn, inputs = _as_function(info, sample)
    out = fn(*inputs)
    gen = torch.Generator().manual_seed(2)
    v = torch.randn(out.shape, generator=gen, dtype=torch.float64).to(out)
    u = _tangents(inputs, seed=3)
    if not info.gradgrad:
        for how, run in (("reverse-over-reverse", lambda: _second(out, inputs, v, u)),
                         ("forward-over-reverse", lambda: _forward_over_reverse(fn, inputs, v, u))):
            try:
                run()
            except RefusedDerivative as e:
                assert "not provided" in str(e), f"{info.name}: unclear refusal {e}"
                continue
            raise AssertionError(f"{info.name} [{sample.desc}]: a second derivative ({how}) through a refusing op ran")
        return 0.0
    hvp = _second(out, inputs, v, u)
    fwd = _forward_over_reverse(fn, inputs, v, u)

    def first(sign):
        shifted = [(a.detach() + sign * eps * w).requires_grad_() for a, w in zip(inputs, u)]
        grads = torch.autograd.grad(fn(*shifted), shifted, v, allow_unused=True)
        return [torch.zeros_like(a) if g is None else g for a, g in zip(shifted, grads)]
    fd = [(p - m) / (2 * eps) for p, m in zip(first(1.0), first(-1.0))]
    worst = 0.0
    for how, result in (("reverse-over-reverse", hvp), ("forward-over-reverse", fwd)):
        for k, (a, b) in enumerate(zip(result, fd)):
            worst = max(worst, (a - b).abs().max().item() if a.numel() else 0.0)
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5,
                                       msg=lambda m: f"{info.name} [{sample.desc}]: second derivative {k} ({how}, "
                                                     f"constant incoming gradient) differs from central differences "
                                                     f"of the backward\n{m}")
    return worst


def compare_reference(info: OpInfo, sample: Sample, seed: int = 0, noncontiguous: bool = False) -> tuple[float, float]:
    """Run the op and its reference on copies of the sample; assert that outputs, updated buffers
    and input gradients agree within the entry's tolerance. ``noncontiguous``: the op gets
    non-contiguous views of the sample's tensors (the reference contiguous copies). Returns
    (forward, backward) max error."""
    a_m, a_r = clone_args(sample.args), clone_args(sample.args)
    if noncontiguous:
        a_m = noncontiguous_args(a_m)
    out_m = info.op(*a_m, **sample.kwargs)
    out_r = info.ref(*a_r, **sample.kwargs)
    dtype = out_r.dtype
    rtol, atol = info.tolerance(dtype)
    where = f"{info.name} [{sample.desc}] {dtype} {out_r.device}"
    assert out_m.shape == out_r.shape, f"{where}: output shape {out_m.shape} != reference {out_r.shape}"
    fwd = (out_m.detach() - out_r.detach()).abs().max().item() if out_m.numel() else 0.0
    torch.testing.assert_close(out_m.detach(), out_r.detach(), rtol=rtol, atol=atol,
                               msg=lambda m: f"{where}: forward differs from the reference\n{m}")
    for i, (bm, br) in enumerate(zip(a_m, a_r, strict=True)):  # in-place updated buffers (running statistics)
        if isinstance(bm, torch.Tensor) and not bm.requires_grad:
            torch.testing.assert_close(bm, br, rtol=rtol, atol=atol,
                                       msg=lambda m: f"{where}: buffer argument {i} differs after the call\n{m}")
    gen = torch.Generator().manual_seed(seed)
    g = torch.randn(out_r.shape, generator=gen, dtype=torch.float64).to(dtype=dtype, device=out_r.device)
    dm, dr = _diff_inputs(a_m), _diff_inputs(a_r)
    gm = torch.autograd.grad(out_m, dm, g)
    gr = torch.autograd.grad(out_r, dr, g)
    bwd = 0.0
    for k, (x, y) in enumerate(zip(gm, gr, strict=True)):
        assert torch.isfinite(x).all(), f"{where}: gradient {k} is not finite"
        bwd = max(bwd, (x - y).abs().max().item())
        torch.testing.assert_close(x, y, rtol=rtol, atol=atol,
                                   msg=lambda m: f"{where}: gradient of input {k} differs from the reference\n{m}")
    return fwd, bwd


def refusal(info: OpInfo, kind: str) -> str:
    """The message an entry's op raises when ``kind`` ("second" order or "forward" mode) is refused, on
    its first float64 sample."""
    sample = info.samples(torch.float64, torch.device("cpu"))[0]
    fn, inputs = _as_function(info, sample)
    try:
        if kind == "forward":
            with fwAD.dual_level():
                fn(*(fwAD.make_dual(a.detach(), t) for a, t in zip(inputs, _tangents(inputs))))
        else:
            out = fn(*inputs)
            _second(out, inputs, torch.ones_like(out), _tangents(inputs))
    except RefusedDerivative as e:
        return str(e)
    raise AssertionError(f"{info.name}: {kind} differentiation ran; the op does not refuse it")


def backward_node_names(t: torch.Tensor) -> list[str]:
    """Class names of every node in the autograd graph behind ``t`` (each node once)."""
    seen, stack, names = set(), [t.grad_fn], []
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        names.append(type(fn).__name__)
        stack.extend(f for f, _ in fn.next_functions)
    return names


def run_check(info: OpInfo, check: str) -> float:
    """Run one check over all samples of an entry; returns the largest backward error seen."""
    if check in ("gradcheck", "cuda-gradcheck"):
        for s in info.samples(torch.float64, torch.device("cuda" if check.startswith("cuda") else "cpu")):
            run_gradcheck(info, s)
        return 0.0
    if check == "ref-noncontiguous":
        worst = 0.0
        for s in info.samples(torch.float64, torch.device("cpu")):
            worst = max(worst, compare_reference(info, s, noncontiguous=True)[1])
        return worst
    if check == "gradgradcheck":
        for s in info.samples(torch.float64, torch.device("cpu")):
            if s.gradgrad:
                run_gradgradcheck(info, s)
        return 0.0
    if check == "forward-ad":
        for s in info.samples(torch.float64, torch.device("cpu")):
            run_forward_ad(info, s)
        return 0.0
    if check == "jvp-ref":
        return max([compare_jvp_reference(info, s) for s in info.samples(torch.float64, torch.device("cpu"))],
                   default=0.0)
    if check == "second-order":
        return max([run_second_order(info, s) for s in info.samples(torch.float64, torch.device("cpu"))
                    if s.gradgrad or not info.gradgrad], default=0.0)
    device = torch.device("cuda" if check.startswith("cuda") else "cpu")
    dtype = torch.float64 if check.endswith("64") else torch.float32
    worst = 0.0
    for s in info.samples(dtype, device):
        worst = max(worst, compare_reference(info, s)[1])
    return worst
