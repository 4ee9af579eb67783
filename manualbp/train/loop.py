"""The one training loop shared by every experiment and model family.

``train(cfg, run_dir)`` trains a run described by a resolved config into a run folder: automatic
device choice, seeding that makes a CPU run repeatable bit for bit (the weight initialisation has
its own ``init_seed``, so runs that differ in data order can start from identical weights), runs in
phases (each with its objective, trained parameters, optimizer settings and epochs), per-step
gradient transforms, per-epoch evaluation, ``metrics.jsonl``, TensorBoard scalars, probes and
hparams, an atomic checkpoint after each epoch, a DONE marker at the end. Re-running a finished run
does nothing; re-running an interrupted run resumes from its last checkpoint and ends with the same
metrics as an uninterrupted one. A NaN or Inf loss (or a whitening that fails on non-finite values)
stops the run with the epoch and step, keeping the last good checkpoint.
"""
from __future__ import annotations

import math
import random
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch

from manualbp.functional._checks import NonFiniteError
from manualbp.optim import make_optimizer, make_scheduler
from manualbp.optim.transforms import make_grad_transforms

from .config import phase_list, validate
from .instruments import EpochState, RunContext, StepState, build_instruments, check_instruments
from .rundir import RunDir, RunDirHeld
from .tasks import make_task


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or Inf: the run stopped, its last good checkpoint kept."""


def pick_device(name: str) -> torch.device:
    """``"auto"`` (CUDA when present, else the CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` as a
    ``torch.device``; a CUDA device that is not there is an error that says so."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but torch sees no CUDA device; use --device cpu or auto")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


# RNG states in a form that torch.load(weights_only=True) accepts (tensors, numbers, lists)

def _rng_state() -> dict:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, mt, gauss_next = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
             "python": [version, list(mt), gauss_next]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, mt, gauss_next = state["python"]
    random.setstate((version, tuple(mt), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The data order of an epoch depends on (seed, epoch) only, so a resumed run sees the same batches."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def _is_probe_step(every, step: int, index: int, steps_per_epoch: int) -> bool:
    if every == "after_epoch":   # probed by a separate pass after the epoch (_after_epoch_probe)
        return False
    if every == "epoch":
        return index == steps_per_epoch - 1
    return bool(every) and step % every == 0


_STEP_HOOKS: list = []


def add_step_hook(fn):
    """Call ``fn(run_dir, epoch, step)`` before every training step of every run in this process
    (``step`` counted from 1 over the run). Returns a function that removes the hook. Used by tests
    to stop a process at a chosen step; also a place for custom instrumentation."""
    _STEP_HOOKS.append(fn)
    return lambda: _STEP_HOOKS.remove(fn) if fn in _STEP_HOOKS else None


def metrics_row(task, epoch: int, steps: int, tr: dict, te: dict, objective_sum: float, lr: float, elapsed: float,
                phase: str | None = None) -> dict:
    """One epoch's row of metrics.jsonl: train and test metrics, the optimized objective (mean over the
    epoch's steps), the learning rate and the training time so far."""
    row = {"epoch": epoch, "step": epoch * steps, **({"phase": phase} if phase is not None else {}),
           **{f"train_{k}": tr[k] for k in task.METRICS}, **{f"test_{k}": te[k] for k in task.METRICS},
           "train_objective": objective_sum / steps, "lr": lr, "time_s": round(elapsed, 3)}
    return row


def build_initial_model(cfg: dict, task, device) -> torch.nn.Module:
    """The model with its initial weights, drawn from ``init_seed`` (``seed`` when None) plus
    ``init_seed_offset`` alone."""
    init_seed = (cfg["seed"] if cfg["init_seed"] is None else cfg["init_seed"]) + cfg.get("init_seed_offset", 0)
    torch.manual_seed(init_seed)
    model = task.build_model().to(device=device, dtype=getattr(torch, cfg["dtype"]))
    if getattr(model, "numpy_init_seed", None) is not None:   # numpy's float64 draws, not their float32 rounding
        model.numpy_init()
    return model


@dataclass
class Phase:
    index: int
    spec: dict
    first_epoch: int
    last_epoch: int
    weights: dict


def plan_phases(cfg: dict, task) -> list[Phase]:
    out, first = [], 1
    for i, spec in enumerate(phase_list(cfg)):
        try:
            weights = task.objective_weights(spec["objective"])
        except ValueError as e:
            raise ValueError(f"phase {spec['name']!r}: {e}") from None
        out.append(Phase(i, spec, first, first + spec["epochs"] - 1, weights))
        first += spec["epochs"]
    return out


def trained_names(model, train) -> list[str]:
    """Names of the parameters a phase trains: all, or those starting with one of the prefixes."""
    names = [n for n, _ in model.named_parameters()]
    if train == "all":
        return names
    for prefix in train:
        if not any(n.startswith(prefix) for n in names):
            tops = sorted({n.split(".")[0] for n in names})
            raise ValueError(f"phase train prefix {prefix!r} matches no parameter; the model's parameters start "
                             f"with {tops}")
    return [n for n in names if any(n.startswith(p) for p in train)]


def _phase_optimizer(cfg: dict, phase: Phase, model):
    names = set(trained_names(model, phase.spec["train"]))
    params = []
    for n, p in model.named_parameters():
        p.requires_grad_(n in names)
        if n in names:
            params.append(p)
    ocfg = dict(cfg["optim"])
    over = phase.spec["optim"] or {}
    if "name" in over and over["name"] != ocfg.get("name"):
        ocfg = {}
    ocfg.update(over)
    for key in ("lr", "learning_rate"):   # torch's name and TF1's (manualbp.optim.tf1)
        if key in ocfg and phase.spec["lr_scale"] != 1.0:
            ocfg[key] = ocfg[key] * phase.spec["lr_scale"]
    scfg = {**cfg["schedule"], **(phase.spec["schedule"] or {})}
    optimizer = make_optimizer(ocfg["name"], params, **{k: v for k, v in ocfg.items() if k != "name"})
    scheduler = make_scheduler(scfg["name"], optimizer, **{k: v for k, v in scfg.items() if k != "name"})
    return optimizer, scheduler, params


def _all_finite(model) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def hparam_value(v):
    return v if isinstance(v, (bool, int, float, str)) else str(v)


def lookup(cfg: dict, dotted: str):
    cur = cfg
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def write_hparams(writer, cfg: dict, keys, final: dict, metrics) -> None:
    """TensorBoard hparams for this run: the config values ``keys`` (those that vary across its sweep)
    and its final metrics (the ``train/*`` and ``test/*`` scalars), so the HParams tab compares runs."""
    from torch.utils.tensorboard.summary import hparams
    hp = {k: hparam_value(lookup(cfg, k)) for k in keys}
    metric_dict = {f"{split}/{m}": final[f"{split}_{m}"] for split in ("test", "train") for m in metrics}
    exp, ssi, sei = hparams(hp, metric_dict)
    for s in (exp, ssi, sei):
        writer.file_writer.add_summary(s)


def train(cfg: dict, run_dir, log=print, hparams=None) -> dict:
    """Train (or resume, or skip) the run; returns the DONE summary. ``hparams``: the dotted config keys
    to report in TensorBoard's HParams tab (default: seed).

    The run folder is held by this process while it trains (``RunDir.hold``): a second process given
    the same folder raises ``RunDirHeld`` at once, naming the holder."""
    cfg = validate(cfg)
    rd = RunDir(run_dir)
    rd.check_config(cfg)
    if rd.finished():
        log(f"{rd.path}: finished already; nothing to do (delete the folder to run it again)")
        return rd.read_done()
    existed = rd.path.exists()
    try:
        with rd.hold():
            rd.check_config(cfg)   # again: another process may have started or finished it meanwhile
            if rd.finished():
                log(f"{rd.path}: finished already; nothing to do (delete the folder to run it again)")
                return rd.read_done()
            return _train(cfg, rd, log, hparams)
    except BaseException as e:
        # a folder made by this call that never got its config (the data or a setting failed) is removed
        if not existed and not isinstance(e, RunDirHeld) and rd.path.is_dir() and not any(rd.path.iterdir()):
            rd.path.rmdir()
        raise


def _check_settings(cfg: dict, phases, model) -> None:
    """Settings errors (optimizer, schedule, train prefixes, the moment step) before the run folder is made."""
    for ph in phases:
        opt, _, _ = _phase_optimizer(cfg, ph, model)
        if cfg["log"]["probe_moment_step"] and not all("betas" in g for g in opt.param_groups):
            raise ValueError(f"log.probe_moment_step=true needs an optimizer with a first moment (betas: Adam, "
                             f"ConstantBiasAdam, ...), not {type(opt).__name__}; set log.probe_moment_step=false")


def _resume(rd: RunDir, model, noise, device, log, epochs: int):
    """(checkpoint or None, first epoch to run, training time so far): the model, RNG and noise state restored
    from the checkpoint; rows after it dropped from the run's jsonl files."""
    ckpt = rd.load_checkpoint(device)
    start_epoch, elapsed = 0, 0.0
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        _set_rng_state(ckpt["rng"])
        noise.set_state(ckpt["noise"])
        start_epoch, elapsed = ckpt["epoch"], ckpt["elapsed_s"]
        log(f"{rd.path}: resuming after epoch {start_epoch} of {epochs}")
    for path in (rd.metrics, rd.stats, rd.instruments):
        rd.keep_metrics_until(start_epoch, path)
    return ckpt, start_epoch, elapsed


def _enter_phase(cfg: dict, ph: Phase, phases, model, ckpt, first: bool, rd: RunDir, log):
    """The phase's optimizer and scheduler (their state from the checkpoint when it resumes inside it)."""
    optimizer, scheduler, params = _phase_optimizer(cfg, ph, model)
    if ckpt is not None and ckpt["phase"] == ph.index and ckpt["epoch"] < ph.last_epoch and first:
        optimizer.load_state_dict(ckpt["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(ckpt["scheduler"])
    elif len(phases) > 1:
        log(f"{rd.path.name}: phase {ph.index + 1}/{len(phases)} {ph.spec['name']!r}: epochs "
            f"{ph.first_epoch}-{ph.last_epoch}, objective {ph.weights}")
    return optimizer, scheduler, params


def _epoch_scalars(writer, task, row: dict) -> None:
    for k in task.METRICS:
        writer.add_scalar(f"train/{k}", row[f"train_{k}"], row["step"])
        writer.add_scalar(f"test/{k}", row[f"test_{k}"], row["step"])
    writer.add_scalar("lr", row["lr"], row["step"])
    writer.add_scalar("train/objective", row["train_objective"], row["step"])
    writer.flush()


def _train_metrics(cfg: dict, task, model, train_data, sums, seen: int, ebs: int) -> dict:
    tr = task.summarize(sums, seen)
    if cfg["train_metrics"] == "full_pass":   # the articles' code: accuracy of the trained model on all of it
        tr = task.evaluate(model, train_data, ebs)
    elif cfg["train_metrics"] == "full_pass_accuracy":   # running cost, full-pass accuracy
        tr = {**tr, "acc": task.evaluate(model, train_data, ebs)["acc"]}
    return tr


def _train(cfg: dict, rd: RunDir, log, hparams) -> dict:
    device = pick_device(cfg["device"])
    task = make_task(cfg, device)
    train_data, test_data = task.load_data()   # data errors surface before the run folder is made
    model = build_initial_model(cfg, task, device)
    check_instruments(model, cfg["log"], task)   # before any training and before the run folder is made
    seed_everything(cfg["seed"])
    phases = plan_phases(cfg, task)
    transforms = make_grad_transforms(cfg["grad_transforms"])
    noise = torch.Generator(device=device)
    noise.manual_seed(cfg["seed"] * 7919 + 17)
    _check_settings(cfg, phases, model)
    rd.start(cfg)
    bs, ebs, spe, lg = cfg["batch_size"], cfg["eval_batch_size"] or cfg["batch_size"], train_data.num_batches(
        cfg["batch_size"]), cfg["log"]
    ckpt, start_epoch, elapsed = _resume(rd, model, noise, device, log, cfg["epochs"])
    from torch.utils.tensorboard import SummaryWriter
    writer = SummaryWriter(str(rd.tb), purge_step=start_epoch * spe + 1 if start_epoch else None)
    instruments = build_instruments(RunContext(model, task, writer, rd, lg, cfg["seed"], spe, cfg["epochs"]))

    def call(hook, state):
        for instrument in instruments:
            getattr(instrument, hook)(state)
    # compile=true: the forward and the objective as one graph (fullgraph: a graph break is an error);
    # AOTAutograd compiles the manual backward with it. Probe steps run eagerly (their hooks).
    step_loss = torch.compile(task.loss, fullgraph=True) if cfg["compile"] else task.loss
    row, phase, optimizer, scheduler, params = None, None, None, None, []

    def non_finite(epoch, step, cause=""):
        return _non_finite(rd, spe, epoch, step, cause)
    try:
        for epoch in range(start_epoch + 1, cfg["epochs"] + 1):
            ph = next(p for p in phases if p.first_epoch <= epoch <= p.last_epoch)
            if phase is not ph:
                optimizer, scheduler, params = _enter_phase(cfg, ph, phases, model, ckpt, phase is None, rd, log)
                phase = ph
            t0 = time.perf_counter()
            model.train()
            if hasattr(model, "set_epoch"):   # epoch-dependent models (dilated back-propagation's rate)
                model.set_epoch(epoch - 1)
            sums, seen, objective, bad_step, step = None, 0, None, torch.tensor(-1, device=device), (epoch - 1) * spe
            bar = _progress_bar(epoch, cfg["epochs"], spe) if lg["progress"] and sys.stderr.isatty() else None
            try:
                for i, (x, y) in enumerate(train_data.batches(bs, shuffle=cfg["data"]["shuffle"], dtype=task.dtype,
                                                              generator=epoch_generator(cfg["seed"], epoch))):
                    step = (epoch - 1) * spe + i + 1
                    for hook in _STEP_HOOKS:
                        hook(rd.path, epoch, step)
                    s = StepState(epoch, step, i, x, y, ph.weights, optimizer,
                                  bool(lg["probe_every"]) and _is_probe_step(lg["probe_every"], step, i, spe))
                    call("before_step", s)
                    optimizer.zero_grad(set_to_none=True)
                    loss, stats = (task.loss if s.probe else step_loss)(model, s.x, s.y, ph.weights)
                    loss.backward()
                    if transforms:
                        with_grad = [p for p in params if p.grad is not None]
                        for t in transforms:
                            t(with_grad, step - 1, epoch, noise)
                    s.loss = loss
                    call("after_backward", s)
                    optimizer.step()
                    call("after_step", s)
                    sums = stats.double() if sums is None else sums + stats
                    objective = loss.detach().double() if objective is None else objective + loss.detach()
                    seen += y.shape[0]
                    bad_step = torch.where((bad_step < 0) & ~torch.isfinite(loss.detach()), step, bad_step)
                    if step % cfg["check_finite_every"] == 0 and int(bad_step) >= 0:   # one host sync per check
                        break
                    if bar is not None:
                        bar.update(1)
                        if (i + 1) % lg["progress_every"] == 0:
                            bar.set_postfix(loss=f"{loss.item():.4f}")
                if int(bad_step) >= 0:
                    raise non_finite(epoch, int(bad_step))
                call("end_of_steps", s)
                te = task.evaluate(model, test_data, ebs)
            except (NonFiniteError, torch.linalg.LinAlgError) as e:
                # a whitening's eigh / SVD failed on non-finite input: the NaN / Inf reached it before the loss
                bad = int(bad_step)
                if not isinstance(e, NonFiniteError) and bad < 0 and _all_finite(model):
                    raise
                raise non_finite(epoch, bad if bad >= 0 else step, f" ({str(e).splitlines()[0]})")
            finally:
                if bar is not None:
                    bar.close()
            tr = _train_metrics(cfg, task, model, train_data, sums, seen, ebs)
            if not all(math.isfinite(v) for v in te.values()):
                raise non_finite(epoch, step, "; the evaluation gave non-finite values")
            elapsed += time.perf_counter() - t0
            row = metrics_row(task, epoch, spe, tr, te, float(objective), optimizer.param_groups[0]["lr"], elapsed,
                              phase=ph.spec["name"])
            if scheduler is not None:
                scheduler.step()
            rd.append_jsonl(rd.metrics, [row])
            _epoch_scalars(writer, task, row)
            call("after_epoch", EpochState(epoch, row["step"], row))
            rd.save_checkpoint({"epoch": epoch, "phase": ph.index, "model": model.state_dict(),
                                "optimizer": optimizer.state_dict(),
                                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                                "rng": _rng_state(), "noise": noise.get_state(), "elapsed_s": elapsed})
            _log_epoch(log, rd, task, epoch, cfg["epochs"], tr, te, elapsed)
        if row is None:  # every epoch was done before a crash between the last checkpoint and DONE
            row = rd.read_metrics()[-1]
        write_hparams(writer, cfg, hparams or ["seed"], row, task.METRICS)
    finally:
        for instrument in instruments:
            instrument.close()
        for p in model.parameters():
            p.requires_grad_(True)
        writer.close()
    summary = {"final": row, "epochs": cfg["epochs"], "device": str(device), "wall_time_s": round(elapsed, 3),
               "params": sum(p.numel() for p in model.parameters())}
    for instrument in instruments:
        instrument.finish(rd)
    rd.finish(summary)
    return summary


def _non_finite(rd: RunDir, spe: int, epoch: int, step: int, cause: str = "") -> NonFiniteLoss:
    kept = f"the last good checkpoint (epoch {epoch - 1}) is kept in {rd.checkpoint}" \
        if rd.checkpoint.is_file() else "no checkpoint was written yet"
    return NonFiniteLoss(f"{rd.path}: the loss became NaN or Inf at epoch {epoch}, step {step} "
                         f"(step {step - (epoch - 1) * spe} of the epoch){cause}; {kept}. Lower optim.lr or "
                         "check the regularizer.")


def _log_epoch(log, rd: RunDir, task, epoch: int, epochs: int, tr: dict, te: dict, elapsed: float) -> None:
    extra = "".join(f" {k} {te[k]:.4f}" for k in task.METRICS if k not in ("loss", "acc"))
    log(f"{rd.path.name} epoch {epoch}/{epochs}: train loss {tr['loss']:.4f} acc {tr['acc']:.4f} | "
        f"test loss {te['loss']:.4f} acc {te['acc']:.4f}{extra} | {elapsed:.1f}s")


def _progress_bar(epoch: int, epochs: int, steps: int):
    from tqdm import tqdm
    return tqdm(total=steps, desc=f"epoch {epoch}/{epochs}", leave=False, dynamic_ncols=True)
