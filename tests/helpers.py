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


def fault_env(env: dict, kill_at=None, kill_once=None, sleep_per_step=None) -> dict:
    """``env`` for a child process with the tests' fault injection (tests/hooks/sitecustomize.py) on
    its PYTHONPATH: SIGKILL at global step ``kill_at`` (only the first process to create the file
    ``kill_once``, when given), or a sleep before every step."""
    from pathlib import Path
    hooks = str(Path(__file__).resolve().parent / "hooks")
    env = {k: v for k, v in env.items() if not k.startswith("TEST_KILL") and k != "TEST_SLEEP_PER_STEP"}
    env["PYTHONPATH"] = hooks + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if kill_at:
        env["TEST_KILL_AT_STEP"] = str(kill_at)
    if kill_once:
        env["TEST_KILL_ONCE"] = str(kill_once)
    if sleep_per_step:
        env["TEST_SLEEP_PER_STEP"] = str(sleep_per_step)
    return env


def built_run(cfg: dict):
    """What ``train`` builds from ``cfg`` before its first step: (task, model, optimizer of phase 1)."""
    import torch as _torch

    from manualbp.train.loop import _phase_optimizer, build_initial_model, plan_phases
    from manualbp.train.tasks import make_task
    task = make_task(cfg, _torch.device("cpu"))
    model = build_initial_model(cfg, task, "cpu")
    optimizer = _phase_optimizer(cfg, plan_phases(cfg, task)[0], model)[0]
    return task, model, optimizer



def devices():
    """pytest parameters: cpu, and cuda (skipped without a CUDA device)."""
    import pytest
    import torch as _torch
    return ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not _torch.cuda.is_available(),
                                                                   reason="no CUDA device"))]
