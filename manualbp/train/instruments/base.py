"""The interface between the training loop and its instruments.

The loop (``manualbp.train.loop``) builds one ``Instrument`` per switched-on ``log.*`` setting
(``build_instruments``) and calls each, in the list's order, at five points of a run:

- ``before_step(s)``: before a training step's forward (``s.x`` may be replaced, e.g. to require grad);
- ``after_backward(s)``: after its backward and the gradient transforms, before ``optimizer.step()``;
- ``after_step(s)``: after ``optimizer.step()``;
- ``end_of_steps(s)``: after the epoch's last step, before the evaluation (``s`` is that step's state);
- ``after_epoch(e)``: after the epoch's metrics row is written, before the checkpoint;

then ``finish(run_dir)`` after a completed run and ``close()`` always. ``s`` is a ``StepState``: the
epoch, the step (counted from 1 over the run), its index in the epoch, the batch (x, y), the
objective's weights, the optimizer, whether the step is a probe step (``log.probe_every``) and the
loss. An instrument writes rows through ``loop.write_stats`` (probes.jsonl) and
``loop.write_instruments`` (instruments.jsonl) and scalars to ``loop.writer``. A new instrument is
one class and one config key.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class StepState:
    epoch: int
    step: int
    index: int
    x: Any
    y: Any
    weights: dict
    optimizer: Any
    probe: bool
    loss: Any = None


@dataclass
class EpochState:
    epoch: int
    step: int
    row: dict


class Instrument:
    """Base class: every hook does nothing."""

    def before_step(self, s: StepState) -> None:
        pass

    def after_backward(self, s: StepState) -> None:
        pass

    def after_step(self, s: StepState) -> None:
        pass

    def end_of_steps(self, s: StepState) -> None:
        pass

    def after_epoch(self, e: EpochState) -> None:
        pass

    def finish(self, run_dir) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class RunContext:
    """What the instruments of one run share: the model, the task, the TensorBoard writer, the run folder,
    the ``log`` settings, the seed and the steps per epoch."""
    model: Any
    task: Any
    writer: Any
    rd: Any
    log: dict
    seed: int
    steps_per_epoch: int
    epochs: int

    @property
    def after_epoch(self) -> bool:
        """``log.probe_every=after_epoch``: the instruments measure after each epoch's last update."""
        return self.log["probe_every"] == "after_epoch"

    def write_stats(self, rows: list) -> None:
        self.rd.append_jsonl(self.rd.stats, rows)

    def write_instruments(self, rows: list) -> None:
        self.rd.append_jsonl(self.rd.instruments, rows)
