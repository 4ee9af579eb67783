"""A run folder: resolved config, metrics, TensorBoard events, checkpoints and a DONE marker that
is written only when the run finished. Every file that a crash could cut in half is written to a
temporary name first and moved into place (``os.replace`` is atomic).

A run folder is held by one process at a time: ``RunDir.hold()`` writes its record (host, process
id, the process's start time) to a temporary file and hard-links it to ``HOLD.json`` (``os.link``
fails when ``HOLD.json`` exists, atomically on local disks and on NFS), so the hold file appears with
its record already in it; a background thread refreshes its modification time every
``HOLD_REFRESH_S`` seconds. A second process refuses with ``RunDirHeld``, naming the holder. A hold
left by a process that died is taken over: on the same host as soon as the process is gone (its pid
no longer exists, or now belongs to a process started at another time), on other hosts once the
hold has not been refreshed for ``HOLD_STALE_S`` seconds. A hold file that cannot be read (garbled,
or written by hand) is treated as live until it is ``HOLD_STALE_S`` seconds old. On a file system
without hard links the hold falls back to ``O_CREAT | O_EXCL`` and a write.

Limits: taking over an abandoned hold moves it aside and checks it; if a third process creates a hold
in that moment while the moved one turns out live, the live one cannot be put back and two processes
hold the folder (it needs a dead holder and three processes within microseconds). A process killed
between writing its temporary record and linking it leaves a ``HOLD.*.tmp`` file behind, which no
hold reads.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

import torch

from .config import canonical, differences, with_defaults


class RunDirError(RuntimeError):
    """A run folder that cannot be used: a different config, an unreadable checkpoint or config."""


class RunDirHeld(RunDirError):
    """Another live process holds the run folder."""


HOLD_REFRESH_S = 30.0
HOLD_STALE_S = 300.0   # a hold from another host not refreshed for this long is taken as abandoned


def _process_start(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int, started: str | None) -> bool:
    """Whether process ``pid`` on this host exists and is the one that started at ``started``."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass   # it exists, owned by someone else
    now = _process_start(pid)
    return started is None or now is None or now == started


class _Hold:
    """A held run folder: the refresh thread and the release."""

    def __init__(self, path: Path, token: str):
        self.path, self.token = path, token
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._refresh, name="manualbp-hold", daemon=True)
        self._thread.start()

    def _refresh(self):
        while not self._stop.wait(HOLD_REFRESH_S):
            try:
                os.utime(self.path)
            except OSError:
                pass

    def release(self) -> None:
        self._stop.set()
        try:
            if json.loads(self.path.read_text()).get("token") == self.token:
                self.path.unlink()
        except (OSError, ValueError):
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


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


# settings that change what a run shows on the terminal, not what it computes
DISPLAY_ONLY = (("log", "progress"), ("log", "progress_every"))


def _results_config(cfg: dict) -> dict:
    """``cfg`` with the defaults of settings added since it was saved, and without its display-only
    settings (a run started with a progress bar resumes without one)."""
    out = with_defaults(cfg)
    for section, key in DISPLAY_ONLY:
        if isinstance(out.get(section), dict):
            out[section].pop(key, None)
    return out


class RunDir:
    """A run folder: the paths of its files and the operations on them (config check, hold,
    checkpoints, metrics, the DONE marker). ``RunDir(path).finished()`` tells whether a run completed."""

    def __init__(self, path):
        self.path = Path(path)
        self.config = self.path / "config.json"
        self.metrics = self.path / "metrics.jsonl"
        self.checkpoint = self.path / "checkpoint.pt"
        self.done = self.path / "DONE.json"
        self.tb = self.path / "tb"
        self.stats = self.path / "probes.jsonl"
        self.stats_npz = self.path / "stats.npz"   # the probes as one array, written when the run finishes
        self.instruments = self.path / "instruments.jsonl"   # per-example, optimizer-state and spectra rows
        self.hold_file = self.path / "HOLD.json"

    def holder(self) -> dict | None:
        """The hold's record (host, pid, started, since, age_s), or None when nobody holds the folder. A
        hold file that cannot be read gives {"unreadable": True, "age_s": its age}: live until it is older
        than ``HOLD_STALE_S``."""
        try:
            age = time.time() - self.hold_file.stat().st_mtime
        except FileNotFoundError:
            return None
        except OSError:
            age = 0.0
        try:
            text = self.hold_file.read_text()
        except FileNotFoundError:
            return None
        except OSError:   # a directory, no permission: live until stale, as a garbled record
            return {"host": None, "pid": None, "age_s": age, "unreadable": True}
        try:
            info = json.loads(text)
            if not isinstance(info, dict):
                raise ValueError("not a JSON object")
        except ValueError:
            return {"host": None, "pid": None, "age_s": age, "unreadable": True}
        info["age_s"] = age
        return info

    def _abandoned(self, info: dict) -> bool:
        if info.get("host") == socket.gethostname() and isinstance(info.get("pid"), int):
            return not _alive(info["pid"], info.get("started"))
        return info["age_s"] > HOLD_STALE_S

    def hold(self) -> _Hold:
        """Hold the folder for this process (created if missing); refuse with ``RunDirHeld`` while another
        live process holds it. Release with ``.release()`` or as a context manager."""
        self.path.mkdir(parents=True, exist_ok=True)
        token = f"{socket.gethostname()}:{os.getpid()}:{time.time_ns()}"
        record = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "started": _process_start(os.getpid()),
                             "since": time.strftime("%Y-%m-%d %H:%M:%S %z"), "token": token})
        for _ in range(5):
            try:
                self._create_hold(record, token)
            except FileExistsError:
                info = self.holder()
                if info is None:
                    continue   # released in between: try again
                if not self._abandoned(info):
                    if info.get("unreadable"):
                        raise RunDirHeld(
                            f"run folder {self.path} holds a hold file {self.hold_file.name} that cannot be read "
                            f"(modified {info['age_s']:.0f} s ago); it is taken as live until it is "
                            f"{HOLD_STALE_S:.0f} s old. Delete it if no process uses the folder.")
                    raise RunDirHeld(
                        f"run folder {self.path} is held by process {info.get('pid')} on host {info.get('host')} "
                        f"(since {info.get('since')}); wait for it to finish or stop it. A hold left by a process "
                        f"that died is taken over by the next run (on another host after {HOLD_STALE_S:.0f} s "
                        "without refresh).")
                # take the abandoned hold over: move it aside under a unique name (only one process succeeds),
                # then check that what was moved is the record judged abandoned, not a newer live one
                aside = self.hold_file.with_name(f"HOLD.{token.replace(':', '-')}.stale")
                try:
                    os.rename(self.hold_file, aside)
                except FileNotFoundError:
                    continue
                try:
                    moved = json.loads(aside.read_text())
                except (OSError, ValueError):
                    moved = {}
                if not isinstance(moved, dict):
                    moved = {}
                if moved.get("token") != info.get("token"):
                    try:
                        os.link(aside, self.hold_file)   # put a live hold back (fails if one exists already)
                    except OSError:
                        pass
                aside.unlink(missing_ok=True)
                continue
            return _Hold(self.hold_file, token)
        raise RunDirHeld(f"run folder {self.path}: could not take its hold after 5 tries (other processes keep "
                         "taking it); run one process per folder")

    def _create_hold(self, record: str, token: str) -> None:
        """Make ``HOLD.json`` hold ``record`` from its first moment: written to a temporary file, then
        hard-linked (``os.link`` raises FileExistsError when a hold exists). Without hard links:
        ``O_CREAT | O_EXCL``, then the write."""
        tmp = self.path / f"HOLD.{token.replace(':', '-')}.tmp"
        try:
            with open(tmp, "w") as f:
                f.write(record)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, self.hold_file)
                return
            except FileExistsError:
                raise
            except OSError:   # no hard links on this file system
                pass
        finally:
            tmp.unlink(missing_ok=True)
        fd = os.open(self.hold_file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(record)
            f.flush()
            os.fsync(f.fileno())

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
        if canonical(_results_config(old)) != canonical(_results_config(cfg)):
            diff = "; ".join(differences(_results_config(old), _results_config(cfg))[:8])
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
