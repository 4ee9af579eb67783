"""``log.optimizer_state`` as an instrument: on probe steps the second moment, the update-to-weight ratio of
the step and the gradient norms (``statistics.UpdateSize``), rows in instruments.jsonl; with
``log.probe_every=after_epoch``, of each epoch's last step."""
from __future__ import annotations

from .base import Instrument
from .statistics import UpdateSize


class OptimizerState(Instrument):
    def __init__(self, run):
        self.run = run
        self.update_size = UpdateSize(run.model)

    def after_backward(self, s) -> None:
        if s.probe or (self.run.after_epoch and s.index == self.run.steps_per_epoch - 1):
            self.update_size.snapshot()

    def after_step(self, s) -> None:
        if s.probe:
            self.run.write_instruments(self.update_size.rows(s.optimizer, s.step, s.epoch, self.run.writer))

    def end_of_steps(self, s) -> None:
        if self.run.after_epoch:   # the update of the epoch's last step, its gradient and state
            self.run.write_instruments(self.update_size.rows(s.optimizer, s.step, s.epoch, self.run.writer))
