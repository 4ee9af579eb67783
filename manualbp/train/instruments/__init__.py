"""The training loop's instruments: one class per measurement, each switched on by one ``log.*`` setting and
called by the loop through the hooks of ``base.Instrument`` (``base`` says when each runs).

| ``log`` setting | class | what |
|---|---|---|
| ``optimizer_state`` | ``OptimizerState`` | second moment, update-to-weight ratio, gradient norms |
| ``probe_every`` | ``ActivationProbes`` | weights, gradients, activations, passed gradients of every probed layer |
| ``per_example`` | ``PerExample`` | per-example gradient norms, variance, GSNR |
| ``curvature`` | ``Curvature`` | the Hessian's top eigenvalue and trace (data term, objective) |
| ``spectra`` | ``Spectra`` | singular-value spectra of the weights |

The loop calls them in this order at each hook. The statistics themselves are in ``statistics``.
"""
from __future__ import annotations

from .base import EpochState, Instrument, RunContext, StepState
from .curvature import (Curvature, check_curvature, curvature, exact_derivatives, hutchinson, hvp,
                        hvp_finite_difference, kinked_ops, lanczos, refusing_layers)
from .optimizer_state import OptimizerState
from .per_example import PerExample
from .probes import ActivationProbes, after_epoch_probe
from .spectra import Spectra
from .statistics import (HIST_BINS, MIN_SINGULAR_VALUES, NO_SECOND_MOMENT, SECOND_MOMENT_KEYS, UpdateSize, _wwfit,
                         as_matrix, batch_statistics, check_instruments, gradient_statistics, layer_spectrum,
                         per_example_gradients, per_example_rows, powerlaw_alpha, second_moment, spectra_rows)

# (log setting, class): built when the setting is on, called in this order at every hook
INSTRUMENTS = (("optimizer_state", OptimizerState), ("probe_every", ActivationProbes), ("per_example", PerExample),
               ("curvature", Curvature), ("spectra", Spectra))


def _on(value) -> bool:
    return value not in (False, None, 0, "off")


def build_instruments(run: RunContext) -> list[Instrument]:
    """The instruments a run's ``log`` settings switch on, in ``INSTRUMENTS`` order."""
    return [cls(run) for key, cls in INSTRUMENTS if _on(run.log[key])]


__all__ = ["ActivationProbes", "Curvature", "EpochState", "HIST_BINS", "INSTRUMENTS", "Instrument",
           "MIN_SINGULAR_VALUES", "NO_SECOND_MOMENT", "OptimizerState", "PerExample", "RunContext",
           "SECOND_MOMENT_KEYS", "Spectra", "StepState", "UpdateSize", "_wwfit", "after_epoch_probe", "as_matrix",
           "batch_statistics", "build_instruments", "check_curvature", "check_instruments", "curvature",
           "exact_derivatives", "gradient_statistics", "hutchinson", "hvp", "hvp_finite_difference", "kinked_ops",
           "lanczos", "layer_spectrum", "per_example_gradients", "per_example_rows", "powerlaw_alpha",
           "refusing_layers", "second_moment", "spectra_rows"]
