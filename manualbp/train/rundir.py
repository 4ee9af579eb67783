"""A run folder: resolved config, metrics, TensorBoard events, checkpoints and a DONE marker that
is written only when the run finished. Every file that a crash could cut in half is written to a
temporary name first and moved into place (``os.replace`` is atomic)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from .config import canonical, differences


class RunDirError(RuntimeError):
    pass


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_torch_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class RunDir:
    def __init__(self, path):
        self.path = Path(path)
        self.config = self.path / "config.json"
        self.metrics = self.path / "metrics.jsonl"
        self.checkpoint = self.path / "checkpoint.pt"
        self.done = self.path / "DONE.json"
        self.tb = self.path / "tb"
        self.stats = self.path / "probes.jsonl"
        self.stats_npz = self.path / "stats.npz"   # the probes as one array, written when the run finishes

    def finished(self) -> bool:
        return self.done.is_file()

    def read_done(self) -> dict:
        return json.loads(self.done.read_text())

    def check_config(self, cfg: dict) -> None:
        """Refuse to mix runs: an existing folder must hold the same resolved config."""
        if not self.config.is_file():
            return
        try:
            old = json.loads(self.config.read_text())
        except json.JSONDecodeError:
            raise RunDirError(f"{self.config} is not valid JSON; delete the run folder {self.path} to start "
                              "over") from None
        if canonical(old) != canonical(cfg):
            diff = "; ".join(differences(old, cfg)[:8])
            raise RunDirError(f"run folder {self.path} holds a run with a different config ({diff}); choose another "
                              "--run-dir, or delete that folder to start over")

    def start(self, cfg: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        if not self.config.is_file():
            atomic_write_text(self.config, json.dumps(cfg, indent=2, sort_keys=True) + "\n")

    def load_checkpoint(self, map_location):
        if not self.checkpoint.is_file():
            return None
        try:
            return torch.load(self.checkpoint, map_location=map_location, weights_only=True)
        except Exception as e:
            raise RunDirError(f"checkpoint {self.checkpoint} cannot be read ({e!r}); delete the run folder "
                              f"{self.path} to start over") from None

    def save_checkpoint(self, state: dict) -> None:
        atomic_torch_save(state, self.checkpoint)

    def read_metrics(self) -> list[dict]:
        return self.read_jsonl(self.metrics)

    def read_jsonl(self, path: Path) -> list[dict]:
        if not path.is_file():
            return []
        rows = []
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break
        return rows

    def keep_metrics_until(self, epoch: int, path: Path | None = None) -> None:
        """Drop rows written after the checkpoint (the epoch a crash interrupted)."""
        path = path or self.metrics
        if not path.is_file():
            return
        rows = []
        for line in path.read_text().splitlines():
            try:
                if json.loads(line)["epoch"] <= epoch:
                    rows.append(line)
            except (json.JSONDecodeError, KeyError):
                break
        atomic_write_text(path, "".join(r + "\n" for r in rows))

    def append_jsonl(self, path: Path, rows: list[dict]) -> None:
        with open(path, "a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def finish(self, summary: dict) -> None:
        atomic_write_text(self.done, json.dumps(summary, indent=2, sort_keys=True) + "\n")
