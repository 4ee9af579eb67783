"""The activation / gradient probes as an instrument (``log.probe_every``): on probe steps the
statistics of every probed layer's weight, gradient, optimizer moment, pre- and post-activation and
passed gradient (``manualbp.train.probes.Probes``), rows in probes.jsonl; with
``log.probe_every=after_epoch`` an extra forward and backward on the epoch's last batch after its
last update. After the run, stats.npz holds the rows as one array."""
from __future__ import annotations

import os

import numpy as np
import torch

from ..probes import Probes, probes_to_arrays
from .base import Instrument


def after_epoch_probe(model, task, optimizer, weights, x, y, probes, moment_step: bool, step: int,
                      epoch: int, first_input_grad: bool = False) -> list[dict]:
    """``log.probe_every=after_epoch``: one extra forward and backward on the epoch's last batch (x, y) after
    its last update, recorded by the probes; the weights do not change and batch-norm running statistics
    are restored. ``moment_step`` (the gradient-pov article's code): that gradient also takes one
    moving-average step of the optimizer's first moment, m <- b1 m + (1 - b1) g, which stays in its state."""
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    probes.arm()
    optimizer.zero_grad(set_to_none=True)
    if first_input_grad:   # layer 1's passed gradient: the batch requires grad
        x = x.detach().requires_grad_(True)
    loss, _ = task.loss(model, x, y, weights)
    loss.backward()
    if moment_step:
        with torch.no_grad():
            for group in optimizer.param_groups:
                b1 = group["betas"][0]
                for p in group["params"]:
                    m = optimizer.state.get(p, {}).get("exp_avg")
                    if p.grad is not None and m is not None:
                        m.mul_(b1).add_(p.grad, alpha=1 - b1)
    rows = probes.collect(optimizer, step, epoch)
    optimizer.zero_grad(set_to_none=True)
    with torch.no_grad():
        for k, v in model.named_buffers():
            v.copy_(buffers[k])
    return rows


class ActivationProbes(Instrument):
    def __init__(self, run):
        self.run, lg = run, run.log
        self.probes = Probes(run.model, run.writer, lg["histograms"], lg["input_grad_scale"])

    def before_step(self, s) -> None:
        if s.probe:
            self.probes.arm()
            if self.run.log["first_input_grad"]:   # layer 1's passed gradient: the batch requires grad
                s.x = s.x.detach().requires_grad_(True)

    def after_backward(self, s) -> None:
        if s.probe:   # the probed forward and backward are captured; other instruments' passes must not be
            self.probes.disarm()

    def after_step(self, s) -> None:
        if s.probe:
            self.run.write_stats(self.probes.collect(s.optimizer, s.step, s.epoch))

    def end_of_steps(self, s) -> None:
        if self.run.after_epoch:
            lg = self.run.log
            self.run.write_stats(after_epoch_probe(self.run.model, self.run.task, s.optimizer, s.weights, s.x, s.y,
                                                   self.probes, lg["probe_moment_step"], s.step, s.epoch,
                                                   lg["first_input_grad"]))

    def finish(self, rd) -> None:
        """[probe, layer, quantity, statistic] in one compressed array."""
        arrays = probes_to_arrays(rd.read_jsonl(rd.stats), [name for name, _, _ in self.probes.points])
        tmp = rd.stats_npz.with_name("stats.tmp.npz")
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, rd.stats_npz)

    def close(self) -> None:
        self.probes.disarm()
