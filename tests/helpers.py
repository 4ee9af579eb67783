"""Test-only optimizer: SGD that poisons a weight with NaN at a given step (to test the NaN stop)."""
import torch


class NaNAtStep(torch.optim.SGD):
    def __init__(self, params, lr=0.01, nan_step=1):
        super().__init__(params, lr=lr)
        self.nan_step, self.count = nan_step, 0

    @torch.no_grad()
    def step(self, closure=None):
        super().step(closure)
        self.count += 1
        if self.count == self.nan_step:
            self.param_groups[0]["params"][0].fill_(float("nan"))
