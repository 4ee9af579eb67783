"""Training: the one loop, run folders and checkpoints, TensorBoard probes, configs, sweeps."""
from .config import BASE, ConfigError, parse_overrides, resolve
from .loop import NonFiniteLoss, pick_device, train
from .rundir import RunDir, RunDirError

__all__ = ["BASE", "ConfigError", "NonFiniteLoss", "RunDir", "RunDirError", "parse_overrides", "pick_device",
           "resolve", "train"]
