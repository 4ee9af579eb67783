"""Mutation run over the layer above the ops: the instruments, the run folder, the optimizers and
the articles' options. Each mutant is one wrong change (a wrong constant, a swapped moment, a step
taken at the wrong time, a dropped option) applied alone to a scratch copy of the repository; the
tests that cover its file run against it, and the mutant is killed when they fail. Prints a table
(mutant, file, killed or survived, seconds) and the share killed; ``--out FILE`` writes it as
Markdown.

    python scripts/mutate.py --workers 2 --out /tmp/mutation.md
    python scripts/mutate.py --list                  # check that every mutant applies, run nothing
    python scripts/mutate.py --only instruments      # mutants whose id starts with a prefix

A mutant that survives is either a gap in the tests (add a test that kills it) or equivalent to the
original (no input tells them apart): those carry ``equivalent="why"`` and are reported apart.
The ops themselves are mutation-tested by tests/test_references.py.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

INSTR = ("tests/test_instruments.py", "tests/test_errors.py")
HOLD = ("tests/test_train.py", "-k", "hold or racing or unreadable or held or pid or take")
RUNDIR = ("tests/test_train.py",)
OPTIM = ("tests/test_adamc.py", "tests/test_instruments.py", "tests/test_errors.py", "tests/test_optimizers.py",
         "-k", "not sweep and not killed and not presets")
NOISE = ("tests/test_optimizers.py", "-k", "noise")
ARTICLE = ("tests/test_article_options.py", "tests/test_errors.py")
ARTICLE_MODELS = ("tests/test_article_options.py", "tests/test_models.py", "tests/test_weights_pov.py", "-k",
                  "not sweep")
PRESETS = ("tests/test_article_options.py", "tests/test_gradient_pov.py", "tests/test_weights_pov.py",
           "tests/test_zca_experiment.py", "-k", "preset or article or coded or grid")
PADDING = ("tests/test_padding.py", "tests/test_article_options.py")
PROBE = ("tests/test_train.py", "-k", "moment")


def _indented(text: str, spaces: int = 20) -> str:
    return "".join(" " * spaces + line + "\n" for line in text.strip("\n").splitlines())




@dataclass
class Mutant:
    id: str
    path: str
    old: str
    new: str
    tests: tuple
    equivalent: str = ""


M = Mutant
MUTANTS = [
    # ---- manualbp/train/instruments/statistics.py
    M("instruments: tf1.Adam's first moment m read as its second moment", "manualbp/train/instruments/statistics.py",
      '"sum", "v", "ms"', '"sum", "m", "ms"', INSTR),
    M("instruments: tf1.Momentum's velocity read as a second moment", "manualbp/train/instruments/statistics.py",
      'NO_SECOND_MOMENT = ("Momentum", ', 'NO_SECOND_MOMENT = (', INSTR),
    M("instruments: per-example variance unbiased", "manualbp/train/instruments/statistics.py",
      "var = flat.var(0, unbiased=False)", "var = flat.var(0, unbiased=True)", INSTR),
    M("instruments: per-example norm sd unbiased", "manualbp/train/instruments/statistics.py",
      '"norm_sd": float(norms.std(unbiased=False))', '"norm_sd": float(norms.std(unbiased=True))', INSTR),
    M("instruments: GSNR with |mean| instead of mean^2", "manualbp/train/instruments/statistics.py",
      "gsnr = (mean[keep] ** 2 / var[keep])", "gsnr = (mean[keep].abs() / var[keep])", INSTR),
    M("instruments: GSNR over zero-variance parameters too", "manualbp/train/instruments/statistics.py",
      "keep = var > 0", "keep = var >= 0", INSTR),
    M("instruments: gradient variance summed, not averaged", "manualbp/train/instruments/statistics.py",
      '"grad_variance": float(var.mean())', '"grad_variance": float(var.sum())', INSTR),
    M("instruments: median norm reported as the mean", "manualbp/train/instruments/statistics.py",
      '"norm_mean": float(norms.mean())', '"norm_mean": float(norms.median())', INSTR),
    M("instruments: batch-norm statistics with the unbiased variance", "manualbp/train/instruments/statistics.py",
      'out[f"{name}.running_var"] = t.var(dims, unbiased=False)',
      'out[f"{name}.running_var"] = t.var(dims, unbiased=True)', INSTR),
    M("instruments: per-example pass in training mode (each example its own BN statistics)",
      "manualbp/train/instruments/statistics.py",
      "model.eval()   # batch norm reads the (swapped-in) batch statistics", "model.train()", INSTR),
    M("instruments: whitening layers not refused", "manualbp/train/instruments/statistics.py",
      'if kind in ("ZCAWhiten", "DecorrelatedBatchNorm", "IterNorm")', 'if kind in ("DecorrelatedBatchNorm", )',
      INSTR),
    M("instruments: per-example check skipped at start", "manualbp/train/instruments/statistics.py",
      'coupled = _batch_coupling_layers(model) if log.get("per_example") else []', "coupled = []", INSTR),
    M("instruments: update ratio over the weight after the step", "manualbp/train/instruments/statistics.py",
      "/ b.double().norm().clamp_min(1e-300)", "/ w.detach().double().norm().clamp_min(1e-300)", INSTR),
    M("instruments: global gradient norm over the probed layers only", "manualbp/train/instruments/statistics.py",
      "for p in self.model.parameters() if p.grad is not None]", "for _, p in self.points if p.grad is not None]",
      INSTR),
    M("instruments: second-moment sd unbiased", "manualbp/train/instruments/statistics.py",
      'float(v.double().std(unbiased=False))', 'float(v.double().std(unbiased=True))', INSTR),
    M("instruments: transposed convolution reshaped without moving its out axis",
      "manualbp/train/instruments/statistics.py",
      "    if transposed:\n        w = w.transpose(0, 1)", "    if False:\n        w = w.transpose(0, 1)", INSTR),
    M("instruments: stable rank from singular values, not their squares", "manualbp/train/instruments/statistics.py",
      '"stable_rank": float((s ** 2).sum() / s[0] ** 2)', '"stable_rank": float(s.sum() / s[0])', INSTR),
    M("instruments: power-law fit on singular values, not eigenvalues", "manualbp/train/instruments/statistics.py",
      "out.update(powerlaw_alpha(s ** 2))", "out.update(powerlaw_alpha(s))", INSTR),
    M("instruments: eigenvalue floor 1e-3 instead of WeightWatcher's 1e-5", "manualbp/train/instruments/statistics.py",
      "ev = ev[ev > 1e-5]", "ev = ev[ev > 1e-3]", INSTR),
    M("instruments: spectral norm is the smallest singular value", "manualbp/train/instruments/statistics.py",
      'out = {"spectral_norm": float(s[0])', 'out = {"spectral_norm": float(s[-1])', INSTR),
    # ---- manualbp/train/loop.py (the instruments' timing)
    M("optimizer_state: update snapshot taken after optimizer.step()",
      "manualbp/train/instruments/optimizer_state.py",
      "        if s.probe:\n            self.run.write_instruments(self.update_size.rows(",
      "        if s.probe:\n            self.update_size.snapshot()\n"
      "            self.run.write_instruments(self.update_size.rows(", INSTR),
    M("per_example: statistics on the weights after the step", "manualbp/train/instruments/per_example.py",
      "    def after_backward(self, s) -> None:\n        if s.probe:\n            self._rows(",
      "    def after_step(self, s) -> None:\n        if s.probe:\n            self._rows(", INSTR),
    M("loop: the instruments' after-backward hooks run after optimizer.step()", "manualbp/train/loop.py",
      '                    call("after_backward", s)\n                    optimizer.step()\n',
      '                    optimizer.step()\n                    call("after_backward", s)\n', INSTR),
    M("probes: gradient-pov's extra moment step with weight b1", "manualbp/train/instruments/probes.py",
      "m.mul_(b1).add_(p.grad, alpha=1 - b1)", "m.mul_(b1).add_(p.grad, alpha=b1)", PROBE),
    M("loop: the instruments' start check skipped", "manualbp/train/loop.py",
      "    check_instruments(model, cfg[\"log\"], task)", "    pass", INSTR),
    # ---- manualbp/train/rundir.py
    M("rundir: an unreadable hold taken as abandoned at once", "manualbp/train/rundir.py",
      'except ValueError:\n            return {"host": None, "pid": None, "age_s": age, "unreadable": True}',
      'except ValueError:\n            return {"host": None, "pid": None, "age_s": float("inf"), "unreadable": True}',
      HOLD),
    M("rundir: hold created empty, then written (no hard link)", "manualbp/train/rundir.py",
      "                os.link(tmp, self.hold_file)\n                return\n",
      "                raise OSError('no hard links')\n", HOLD),
    M("rundir: a hold from another host never goes stale", "manualbp/train/rundir.py",
      'return info["age_s"] > HOLD_STALE_S', "return False", HOLD),
    M("rundir: a dead process's hold on this host stays", "manualbp/train/rundir.py",
      "return started is None or now is None or now == started", "return True", HOLD),
    M("rundir: a reused pid (another start time) counts as the holder", "manualbp/train/rundir.py",
      "return started is None or now is None or now == started", "return started is None or now is None or True",
      HOLD),
    M("rundir: release leaves the hold file", "manualbp/train/rundir.py",
      '.get("token") == self.token:', '.get("token") != self.token:', HOLD),
    M("rundir: a live hold moved aside by a racing take-over is not put back", "manualbp/train/rundir.py",
      'if moved.get("token") != info.get("token"):', "if False:", HOLD),
    M("rundir: stale limit 30 s", "manualbp/train/rundir.py", "HOLD_STALE_S = 300.0", "HOLD_STALE_S = 30.0", HOLD),
    M("rundir: a different config accepted", "manualbp/train/rundir.py",
      "if canonical(_results_config(old)) != canonical(_results_config(cfg)):", "if False:", RUNDIR),
    M("rundir: the interrupted epoch's rows kept on resume", "manualbp/train/rundir.py",
      'if json.loads(line)["epoch"] <= epoch:', 'if json.loads(line)["epoch"] <= epoch + 1:', RUNDIR),
    M("rundir: DONE written for an unfinished run", "manualbp/train/rundir.py",
      "return self.done.is_file()", "return self.config.is_file()", RUNDIR),
    # ---- manualbp/optim/
    M("adamc: first moment with weight b1 on the gradient", "manualbp/optim/adamc.py",
      "m.mul_(b1).add_(g, alpha=1 - b1)", "m.mul_(b1).add_(g, alpha=b1)", OPTIM),
    M("adamc: second moment of |g|", "manualbp/optim/adamc.py",
      "v.mul_(b2).addcmul_(g, g, value=1 - b2)", "v.mul_(b2).add_(g.abs(), alpha=1 - b2)", OPTIM),
    M("adamc: textbook bias correction of v", "manualbp/optim/adamc.py",
      "denom = (v / (1 - b2)).sqrt_()", "denom = v.sqrt()", OPTIM),
    M("adamc: first moment not corrected", "manualbp/optim/adamc.py",
      "value=-group[\"lr\"] / (1 - b1)", "value=-group[\"lr\"]", OPTIM),
    M("adamc: eps inside the root", "manualbp/optim/adamc.py",
      "denom = (v / (1 - b2)).sqrt_().add_(group[\"eps\"])", "denom = (v / (1 - b2)).add_(group[\"eps\"]).sqrt_()",
      OPTIM),
    M("adamc: infinite eps accepted", "manualbp/optim/adamc.py",
      "not 0 <= eps < math.inf", "not 0 <= eps", OPTIM),
    M("tf1: step count starts at 1 before the first update", "manualbp/optim/tf1.py",
      'state["step"] = torch.zeros((), dtype=torch.float64)', 'state["step"] = torch.ones((), dtype=torch.float64)',
      OPTIM),
    M("tf1.Adam: lr_t without the square root", "manualbp/optim/tf1.py",
      "lr_t = group[\"lr\"] * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)",
      "lr_t = group[\"lr\"] * (1 - b2 ** t) / (1 - b1 ** t)", OPTIM),
    M("tf1.Adam: epsilon inside the root", "manualbp/optim/tf1.py",
      "p.addcdiv_(m, v.sqrt().add_(eps), value=-lr_t)", "p.addcdiv_(m, (v + eps).sqrt(), value=-lr_t)", OPTIM),
    M("tf1.RMSProp: mean square starts at 0", "manualbp/optim/tf1.py",
      's = {"ms": torch.ones_like(p)', 's = {"ms": torch.zeros_like(p)', OPTIM),
    M("tf1.RMSProp: centred with + mg^2", "manualbp/optim/tf1.py",
      "denom = ms - mg * mg + group[\"epsilon\"]", "denom = ms + mg * mg + group[\"epsilon\"]", OPTIM),
    M("tf1.Adagrad: accumulates g, not g^2", "manualbp/optim/tf1.py",
      "        accum = state[\"accum\"]\n        accum.addcmul_(g, g)\n        p.addcdiv_",
      "        accum = state[\"accum\"]\n        accum.add_(g.abs())\n        p.addcdiv_", OPTIM),
    M("tf1.AdagradDA: l2 term without the global step", "manualbp/optim/tf1.py",
      "denom = sq.sqrt().add_(l2 * t * lr)", "denom = sq.sqrt().add_(l2 * lr)", OPTIM),
    M("tf1.AdagradDA: l1 threshold without the global step", "manualbp/optim/tf1.py",
      "(acc.abs() - l1 * t)", "(acc.abs() - l1)", OPTIM),
    M("tf1.Adadelta: update average with weight rho", "manualbp/optim/tf1.py",
      "accum_update.mul_(rho).addcmul_(update, update, value=1 - rho)",
      "accum_update.mul_(rho).addcmul_(update, update, value=rho)", OPTIM),
    M("tf1.Momentum: Nesterov without the momentum factor", "manualbp/optim/tf1.py",
      "p.add_(g, alpha=-lr).add_(accum, alpha=-lr * mom)", "p.add_(g, alpha=-lr).add_(accum, alpha=-lr)", OPTIM),
    M("tf1.Ftrl: threshold |linear| >= l1", "manualbp/optim/tf1.py",
      "torch.where(linear.abs() > l1, pre", "torch.where(linear.abs() >= l1, pre", OPTIM,
      equivalent="differs only where |linear| equals l1 exactly, where pre = (l1 sign - linear) / q = 0 too"),
    M("tf1.Ftrl: shrinkage in the accumulator", "manualbp/optim/tf1.py",
      "new_accum = accum + g * g", "new_accum = accum + g_s * g_s", OPTIM),
    M("tf1.Ftrl: quadratic without 2 l2", "manualbp/optim/tf1.py",
      "quadratic = pw(new_accum) / lr + 2 * l2", "quadratic = pw(new_accum) / lr + l2", OPTIM),
    M("tf1 proximal: l2 shrink without the rate", "manualbp/optim/tf1.py",
      "p.copy_(prox / (1 + rate * l2))", "p.copy_(prox / (1 + l2))", OPTIM),
    M("tf1 proximal: l1 threshold without the rate", "manualbp/optim/tf1.py",
      "(prox.abs() - rate * l1)", "(prox.abs() - l1)", OPTIM),
    M("tf1.ProximalAdagrad: rate without the root", "manualbp/optim/tf1.py",
      "rate = group[\"lr\"] / accum.sqrt()", "rate = group[\"lr\"] / accum", OPTIM),
    M("transforms: noise std eta / (1 + t)^gamma (no root)", "manualbp/optim/transforms.py",
      "return math.sqrt(self.eta / (1 + t) ** self.gamma)", "return self.eta / (1 + t) ** self.gamma", NOISE),
    M("transforms: epoch clock counted from 1", "manualbp/optim/transforms.py",
      'self.sigma(step if self.clock == "step" else epoch - 1)', 'self.sigma(step if self.clock == "step" else epoch)',
      NOISE),
    M("transforms: scalar noise drawn per parameter", "manualbp/optim/transforms.py",
      "            for p in params:\n                p.grad.add_(noise)\n            return",
      "            for p in params:\n                p.grad.add_(torch.randn((), generator=generator, "
      "device=ref.device, dtype=ref.dtype) * sigma)\n            return", NOISE),
    # ---- the articles' options
    M("zca article backward: K not transposed", "manualbp/functional/whitening.py",
      "dS = E @ (K.mT * (E.mT @ dE)) @ E.mT", "dS = E @ (K * (E.mT @ dE)) @ E.mT", ARTICLE),
    M("zca article backward: 1 / n instead of 2 / n", "manualbp/functional/whitening.py",
      "(2.0 / A.shape[-2]) * (A @ dS)", "(1.0 / A.shape[-2]) * (A @ dS)", ARTICLE),
    M("zca article backward: eigenvectors left as the solver signs them", "manualbp/functional/whitening.py",
      "        if grad == \"article\":\n            E = _sign_convention(E)\n", "", ARTICLE),
    M("zca article backward: eps kept in the eigenvalues of K", "manualbp/functional/whitening.py",
      "    lam = s * s - eps\n", "    lam = s * s\n", ARTICLE,
      equivalent="K uses differences lam_j - lam_i, in which eps cancels (up to rounding)"),
    M("zca layer drops its grad option", "manualbp/nn/norm.py",
      "return MF.zca_whiten(x, self.eps, self.mode, self.backend, self.grad)\n",
      "return MF.zca_whiten(x, self.eps, self.mode, self.backend)\n", ARTICLE),
    M("tanh_sigmoid_derivative: 1 - sigmoid", "manualbp/functional/activations.py",
      "return g * (1 - sg * sg)", "return g * (1 - sg)", ARTICLE),
    M("regularizers: K's coded derivative 2 / w", "manualbp/functional/regularizers.py",
      "article_grad=lambda t: 2 / (t + EPS)", "article_grad=lambda t: 2 / t", ARTICLE),
    M("regularizers: G's coded derivative with + sqrt(t^2)", "manualbp/functional/regularizers.py",
      "(t * t / (torch.sqrt(t * t) + EPS) - torch.sqrt(t * t)) / (t * t + EPS)",
      "(t * t / (torch.sqrt(t * t) + EPS) + torch.sqrt(t * t)) / (t * t + EPS)", ARTICLE),
    M("regularizers: article_grad on a regularizer without one accepted", "manualbp/functional/regularizers.py",
      'if article_grad and (name == "none" or REGULARIZERS[name].article_grad is None):', "if False:", ARTICLE),
    M("Penn-Fudan article mask: threshold 0", "manualbp/data/formats.py",
      "ms.append(255 * m / max(float(inst.max()), 1e-12) > 10)", "ms.append(m > 0)", ARTICLE),
    M("Penn-Fudan article mask: not scaled by the maximum", "manualbp/data/formats.py",
      "ms.append(255 * m / max(float(inst.max()), 1e-12) > 10)", "ms.append(255 * m > 10)", ARTICLE),
    M("Penn-Fudan article mask: nearest-neighbour resize", "manualbp/data/formats.py",
      'big = Image.fromarray(inst, mode="F").resize((size, size), Image.BILINEAR)',
      'big = Image.fromarray(inst, mode="F").resize((size, size), Image.NEAREST)', ARTICLE),
    M("CNN6 equal_init: no copy", "manualbp/models/cnn6.py",
      "conv.weight.copy_(first.weight)", "pass", ARTICLE_MODELS),
    M("BatchNorm article: running variance unbiased", "manualbp/nn/norm.py",
      "self.running_var.lerp_(x.var(dims, unbiased=False), self.momentum)",
      "self.running_var.lerp_(x.var(dims, unbiased=True), self.momentum)", ARTICLE_MODELS),
    M("BatchNorm article: running variance starts at 1", "manualbp/nn/norm.py",
      'torch.zeros(num_features) if running_init == "zero"', 'torch.ones(num_features) if running_init == "zero"',
      ARTICLE_MODELS),
    M("tf_same: the odd pixel before, not after", "manualbp/functional/dense.py",
      "return total // 2, total - total // 2", "return total - total // 2, total // 2", PADDING),
    M("tf_same: symmetric padding sent down the asymmetric path with the pads swapped", "manualbp/functional/dense.py",
      "return pad2d(x, (top, bottom, left, right)), (0, 0)", "return pad2d(x, (left, right, top, bottom)), (0, 0)",
      PADDING),
    M("pad2d backward: slice from 0", "manualbp/functional/dense.py",
      "return g[..., top:top + h, left:left + w], None", "return g[..., :h, :w], None", PADDING),
    M("probes: passed gradients not scaled", "manualbp/train/probes.py",
      "return g if self.input_grad_scale == 1.0 else g * self.input_grad_scale", "return g", ARTICLE),
    M("probes: layer 1's passed gradient not recorded on probe steps", "manualbp/train/instruments/probes.py",
      "            if self.run.log[\"first_input_grad\"]:   # layer 1's passed gradient: the batch requires grad\n"
      "                s.x = s.x.detach().requires_grad_(True)\n", "", ARTICLE),
    M("ArticleSegAE equal_init: pool mixes drawn apart", "manualbp/models/segae.py",
      "            draws = draws[:1].repeat(4)\n", "            pass\n", ARTICLE),
    M("ArticleSegAE equal_init: weights drawn apart", "manualbp/models/segae.py",
      "                    w.copy_(next(v for v in weights[:i + 1] if v.shape == w.shape))", "                    pass",
      ARTICLE),
    M("gradient-pov article: lambda 1e-5", "manualbp/experiments/gradient_pov.py",
      "ARTICLE_LAMBDA = 1e-4", "ARTICLE_LAMBDA = 1e-5", ARTICLE),
    M("weights-pov article: symmetric padding", "manualbp/experiments/weights_pov.py",
      '"bn_running_variance": "biased",\n                      "padding": "tf_same"}',
      '"bn_running_variance": "biased",\n                      "padding": "same"}', ARTICLE),
    M("zca article: seed 0 on torch's draw", "manualbp/experiments/zca.py",
      '{"variant": {"article": {"model": {"numpy_init_seed": ARTICLE_NUMPY_SEED}}}, "seed": [0]}',
      '{"variant": {"article": {}}, "seed": [0]}', ARTICLE),
    M("weights-pov: data weight B / S", "manualbp/experiments/weights_pov.py",
      "return FINAL_MAP_AREA[dataset] / batch_size", "return batch_size / FINAL_MAP_AREA[dataset]", PRESETS),
    M("gradient-pov: coded derivatives never used", "manualbp/experiments/gradient_pov.py",
      "coded = article and not none and REGULARIZERS[name].article_grad is not None", "coded = False", PRESETS),
    M("zca article preset: exact backward", "manualbp/experiments/zca.py",
      '"norm_kwargs": {"eps": 0.06, "grad": "article"}', '"norm_kwargs": {"eps": 0.06, "grad": "exact"}', PRESETS),
]


def check(mutants) -> list[str]:
    """Every mutant's text occurs exactly once in its file (else the list is out of date)."""
    bad = []
    for m in mutants:
        n = (ROOT / m.path).read_text().count(m.old)
        if n != 1:
            bad.append(f"{m.id}: its text occurs {n} times in {m.path}")
    return bad


def scratch_copy(dest: Path) -> Path:
    """The tracked files of the working tree (as they are now) under ``dest``."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for rel in filter(None, files.decode().split("\0")):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def run_tests(copy: Path, tests: tuple, timeout: float) -> tuple[str, float]:
    env = {**os.environ, "PYTHONPATH": str(copy), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    try:
        out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
                             cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
        code = out.returncode
        verdict = "survived" if code == 0 else ("killed" if code == 1 else f"error {code}")
        if out.returncode not in (0, 1):
            verdict += ": " + (out.stdout + out.stderr).strip().splitlines()[-1][:200]
    except subprocess.TimeoutExpired:
        verdict = "timeout"
    return verdict, time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=1, help="scratch copies tested in parallel (one thread each)")
    ap.add_argument("--only", default=None, help="run the mutants whose id starts with this prefix")
    ap.add_argument("--list", action="store_true", help="check that every mutant applies and list them")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per mutant's tests")
    ap.add_argument("--out", default=None, help="write the table as Markdown to this file")
    args = ap.parse_args(argv)
    mutants = [m for m in MUTANTS if args.only is None or m.id.startswith(args.only)]
    bad = check(mutants)
    if bad:
        print("mutants that no longer apply:\n  " + "\n  ".join(bad), file=sys.stderr)
        return 2
    if args.list:
        for m in mutants:
            print(f"{m.id}  [{m.path}]")
        print(f"{len(mutants)} mutants apply")
        return 0
    base = Path(tempfile.mkdtemp(prefix="manualbp-mutate-"))
    copies = [scratch_copy(base / f"w{i}") for i in range(max(1, args.workers))]
    free = list(copies)
    import threading
    lock = threading.Lock()

    def one(m: Mutant):
        with lock:
            copy = free.pop()
        target = copy / m.path
        original = target.read_text()
        try:
            target.write_text(original.replace(m.old, m.new, 1))
            verdict, secs = run_tests(copy, m.tests, args.timeout)
        finally:
            target.write_text(original)
            with lock:
                free.append(copy)
        print(f"{verdict:>9}  {secs:6.1f} s  {m.id}", flush=True)
        return m, verdict, secs

    # the unmutated tests must pass first, or every mutant would look killed
    groups = sorted({m.tests for m in mutants})
    for tests in groups:
        verdict, secs = run_tests(copies[0], tests, args.timeout)
        if verdict != "survived":
            print(f"the unmutated tests fail ({' '.join(tests)}): {verdict}; fix them first", file=sys.stderr)
            return 2
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(copies)) as pool:
        results = list(pool.map(one, mutants))
    shutil.rmtree(base, ignore_errors=True)
    killed = [r for r in results if r[1] == "killed"]
    timeouts = [r for r in results if r[1] == "timeout"]
    survived = [r for r in results if r[1] == "survived"]
    equivalent = [r for r in survived if r[0].equivalent]
    gaps = [r for r in survived if not r[0].equivalent]
    errors = [r for r in results if r[1].startswith("error")]
    lines = ["| mutant | file | result | s |", "|---|---|---|---|"]
    for m, verdict, secs in results:
        note = f" (equivalent: {m.equivalent})" if verdict == "survived" and m.equivalent else ""
        mid, result = (t.replace("|", "\\|") for t in (m.id, verdict + note))   # a | inside a cell
        lines.append(f"| {mid} | `{m.path}` | {result} | {secs:.0f} |")
    counted = len(results) - len(equivalent)
    summary = (f"{len(killed)} of {len(results)} mutants killed ({100 * len(killed) / max(1, len(results)):.0f}%); "
               f"{len(equivalent)} survivors shown equivalent; {len(gaps)} survivors not explained; "
               f"{len(timeouts)} timed out (not counted as killed); {len(errors)} errors. Killed among the "
               f"non-equivalent: {len(killed)} of {counted} "
               f"({100 * len(killed) / max(1, counted):.0f}%). {time.perf_counter() - t0:.0f} s with "
               f"{len(copies)} workers.")
    print("\n".join(lines) + "\n\n" + summary)
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n\n" + summary + "\n")
    return 0 if not gaps and not errors and not timeouts else 1


if __name__ == "__main__":
    sys.exit(main())
