"""Training: the one loop, run folders and checkpoints, TensorBoard probes, configs, sweeps."""
from .config import BASE, ConfigError, parse_overrides, resolve
from .loop import NonFiniteLoss, add_step_hook, pick_device, train
from .rundir import RunDir, RunDirError, RunDirHeld

__all__ = ["BASE", "ConfigError", "NonFiniteLoss", "RunDir", "RunDirError", "RunDirHeld", "add_step_hook",
           "parse_overrides", "pick_device", "resolve", "train"]
