"""``log.per_example`` as an instrument: on probe steps (after the backward, on the probed batch and the
current weights) the per-example gradient statistics of every probed layer (``statistics.per_example_rows``),
rows in instruments.jsonl."""
from __future__ import annotations

from .base import Instrument
from .statistics import per_example_rows


class PerExample(Instrument):
    def __init__(self, run):
        self.run = run

    def _rows(self, x, s) -> None:
        r = self.run
        r.write_instruments(per_example_rows(r.model, r.task, x, s.y, s.step, s.epoch, r.writer, r.log["histograms"]))

    def after_backward(self, s) -> None:
        if s.probe:
            self._rows(s.x.detach(), s)

    def end_of_steps(self, s) -> None:
        if self.run.after_epoch:
            self._rows(s.x, s)
