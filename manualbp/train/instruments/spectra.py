"""``log.spectra`` as an instrument: the probed layers' weight spectra (``statistics.spectra_rows``) after
every epoch (``"epoch"``) or the last (``"end"``), rows in instruments.jsonl."""
from __future__ import annotations

from .base import Instrument
from .statistics import spectra_rows


class Spectra(Instrument):
    def __init__(self, run):
        self.run = run

    def after_epoch(self, e) -> None:
        r = self.run
        if r.log["spectra"] == "epoch" or (r.log["spectra"] == "end" and e.epoch == r.epochs):
            r.write_instruments(spectra_rows(r.model, e.row["step"], e.epoch, r.writer))
