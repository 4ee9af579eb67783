"""The one training loop shared by every experiment.

``train(cfg, run_dir)`` trains a run described by a resolved config into a run folder: automatic
device choice, seeding that makes a CPU run repeatable bit for bit, per-epoch evaluation,
``metrics.jsonl``, TensorBoard scalars and probes, an atomic checkpoint after each epoch, a DONE
marker at the end. Re-running a finished run does nothing; re-running an interrupted run resumes
from its last checkpoint and ends with the same metrics as an uninterrupted one.
"""
from __future__ import annotations

import os
import random
import signal
import sys
import time

import numpy as np
import torch

from manualbp.optim import make_optimizer, make_scheduler

from .config import validate
from .probes import Probes
from .rundir import RunDir
from .tasks import make_task


class NonFiniteLoss(RuntimeError):
    pass


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but torch sees no CUDA device; use --device cpu or auto")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The data order of an epoch depends on (seed, epoch) only, so a resumed run sees the same batches."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def _is_probe_step(every, step: int, index: int, steps_per_epoch: int) -> bool:
    if every == "epoch":
        return index == steps_per_epoch - 1
    return bool(every) and step % every == 0


def train(cfg: dict, run_dir, log=print) -> dict:
    """Train (or resume, or skip) the run; returns the DONE summary."""
    cfg = validate(cfg)
    rd = RunDir(run_dir)
    rd.check_config(cfg)
    if rd.finished():
        log(f"{rd.path}: finished already; nothing to do (delete the folder to run it again)")
        return rd.read_done()

    device = pick_device(cfg["device"])
    seed_everything(cfg["seed"])
    task = make_task(cfg, device)
    train_data, test_data = task.load_data()   # data errors surface before the run folder is made
    model = task.build_model().to(device)
    optimizer = make_optimizer(cfg["optim"]["name"], model.parameters(),
                               **{k: v for k, v in cfg["optim"].items() if k != "name"})
    scheduler = make_scheduler(cfg["schedule"]["name"], optimizer,
                               **{k: v for k, v in cfg["schedule"].items() if k != "name"})
    rd.start(cfg)

    bs = cfg["batch_size"]
    ebs = cfg["eval_batch_size"] or bs
    spe = train_data.num_batches(bs)
    start_epoch, elapsed = 0, 0.0
    ckpt = rd.load_checkpoint(device)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(ckpt["scheduler"])
        _set_rng_state(ckpt["rng"])
        start_epoch, elapsed = ckpt["epoch"], ckpt["elapsed_s"]
        log(f"{rd.path}: resuming after epoch {start_epoch} of {cfg['epochs']}")
    rd.keep_metrics_until(start_epoch)
    rd.keep_metrics_until(start_epoch, rd.stats)

    from torch.utils.tensorboard import SummaryWriter
    writer = SummaryWriter(str(rd.tb), purge_step=start_epoch * spe + 1 if start_epoch else None)
    lg = cfg["log"]
    probes = Probes(model, writer, lg["histograms"]) if lg["probe_every"] else None
    # crash simulation for tests of resuming: SIGKILL this process at that global step
    kill_at = int(os.environ.get("MANUALBP_KILL_AT_STEP", "0")) or None
    show = lg["progress"] and sys.stderr.isatty()
    row = None
    try:
        for epoch in range(start_epoch + 1, cfg["epochs"] + 1):
            t0 = time.perf_counter()
            model.train()
            sums = torch.zeros(2, dtype=torch.float64, device=device)
            seen = 0
            bad_step = torch.tensor(-1, device=device)
            bar = None
            if show:
                from tqdm import tqdm
                bar = tqdm(total=spe, desc=f"epoch {epoch}/{cfg['epochs']}", leave=False, dynamic_ncols=True)
            for i, (x, y) in enumerate(train_data.batches(bs, shuffle=True, generator=epoch_generator(cfg["seed"],
                                                                                                      epoch))):
                step = (epoch - 1) * spe + i + 1
                if kill_at == step:
                    os.kill(os.getpid(), signal.SIGKILL)
                probe = probes is not None and _is_probe_step(lg["probe_every"], step, i, spe)
                if probe:
                    probes.arm()
                optimizer.zero_grad(set_to_none=True)
                loss, stats = task.loss(model, x, y)
                loss.backward()
                optimizer.step()
                sums += stats.double()
                seen += y.shape[0]
                bad_step = torch.where((bad_step < 0) & ~torch.isfinite(loss.detach()), step, bad_step)
                if probe:
                    rd.append_jsonl(rd.stats, probes.collect(optimizer, step, epoch))
                if bar is not None:
                    bar.update(1)
                    if (i + 1) % lg["progress_every"] == 0:
                        bar.set_postfix(loss=f"{loss.item():.4f}")
            if bar is not None:
                bar.close()
            bad = int(bad_step)
            if bad >= 0:
                kept = f"the last good checkpoint (epoch {epoch - 1}) is kept in {rd.checkpoint}" \
                    if rd.checkpoint.is_file() else "no checkpoint was written yet"
                raise NonFiniteLoss(f"{rd.path}: the loss became NaN or Inf at epoch {epoch}, step {bad} "
                                    f"(step {bad - (epoch - 1) * spe} of the epoch); {kept}. Lower optim.lr or check "
                                    "the regularizer.")
            tr = task.summarize(sums, seen)
            te = task.evaluate(model, test_data, ebs)
            elapsed += time.perf_counter() - t0
            row = {"epoch": epoch, "step": epoch * spe, "train_loss": tr["loss"], "train_acc": tr["acc"],
                   "test_loss": te["loss"], "test_acc": te["acc"], "lr": optimizer.param_groups[0]["lr"],
                   "time_s": round(elapsed, 3)}
            if scheduler is not None:
                scheduler.step()
            rd.append_jsonl(rd.metrics, [row])
            for k in ("train_loss", "train_acc", "test_loss", "test_acc", "lr"):
                writer.add_scalar(k.replace("_", "/", 1) if k != "lr" else "lr", row[k], row["step"])
            writer.flush()
            rd.save_checkpoint({"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                                "rng": _rng_state(), "elapsed_s": elapsed})
            log(f"{rd.path.name} epoch {epoch}/{cfg['epochs']}: train loss {tr['loss']:.4f} acc {tr['acc']:.4f} | "
                f"test loss {te['loss']:.4f} acc {te['acc']:.4f} | {elapsed:.1f}s")
    finally:
        if probes is not None:
            probes.disarm()
        writer.close()
    if row is None:  # every epoch was done before a crash between the last checkpoint and DONE
        row = rd.read_metrics()[-1]
    summary = {"final": row, "epochs": cfg["epochs"], "device": str(device), "wall_time_s": round(elapsed, 3),
               "params": sum(p.numel() for p in model.parameters())}
    rd.finish(summary)
    return summary
