"""Sweeps on Ray: a real local Ray instance with 2 CPUs runs a tiny sweep whose results are
bit-identical to the process pool's; a run that raises is reported while the others finish; a task
whose process is killed mid-run is retried by Ray and ends equal to an uninterrupted run."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from manualbp.experiments import preset
from manualbp.experiments.optimizers import case_config
from manualbp.train.rundir import RunDir
from manualbp.train.sweep import expand, run_sweep, run_sweep_ray

from .fakedata import write_mnist_like

ray = pytest.importorskip("ray")
ROOT = Path(__file__).resolve().parents[1]


def _specs(data: Path, out: Path, failing: bool = False):
    base = dict(preset("optimizers", "quick"), epochs=2, batch_size=40, device="auto",
                data={"name": "mnist", "root": str(data)}, log={"progress": False})
    settings = {"adam": case_config(3, 0.0025, 16), "ftrl": case_config(13, 0.01, 16)}
    if failing:   # poisons a weight with NaN at its 3rd step: the loop stops the run with an error
        settings["nan"] = dict(case_config(7, 0.01, 16), optim={"name": "tests.helpers:NaNAtStep", "nan_step": 3})
    return expand(base, {"setting": settings, "seed": [0, 1]}, out)


def _same(a: Path, b: Path):
    ra, rb = RunDir(a), RunDir(b)
    assert ra.finished() and rb.finished(), (a, b)
    strip = [{k: v for k, v in r.items() if k != "time_s"} for r in ra.read_metrics()]
    assert strip == [{k: v for k, v in r.items() if k != "time_s"} for r in rb.read_metrics()], (a, b)
    sa, sb = ra.load_checkpoint("cpu")["model"], rb.load_checkpoint("cpu")["model"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa), (a, b)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_mnist_like(root, "MNIST", n_train=200, n_test=60)
    return root


def test_ray_sweep_equals_the_pool_reports_failures_and_survives_a_killed_task(data, tmp_path, monkeypatch):
    pool = run_sweep(_specs(data, tmp_path / "pool"), ["cpu"], 2, threads=1)
    assert [r[1] for r in pool] == ["ran"] * 4

    # one task's process is SIGKILLed at step 7 (epoch 2 of 2, 5 steps per epoch): only the first process
    # to reach it, through the marker file; Ray retries the task, which resumes from the epoch-1 checkpoint
    marker = tmp_path / "killed-once"
    from .helpers import fault_env
    for k, v in fault_env(dict(os.environ), kill_at=7, kill_once=marker).items():   # Ray's workers inherit these
        monkeypatch.setenv(k, v)
    specs = _specs(data, tmp_path / "ray", failing=True)
    results = run_sweep_ray(specs, num_cpus=2, cpus_per_run=1, max_retries=2)
    assert marker.is_file()                                     # a process was killed
    status = {name: st for name, st, _, _ in results}
    assert sum(st == "resumed" for st in status.values()) == 1, status   # ... and its retry resumed
    failed = {name: err for name, st, _, err in results if st == "FAILED"}
    assert sorted(failed) == ["nan-seed0", "nan-seed1"]
    assert all("NaN or Inf" in err for err in failed.values())
    for name in ["adam-seed0", "adam-seed1", "ftrl-seed0", "ftrl-seed1"]:
        _same(tmp_path / "pool" / name, tmp_path / "ray" / name)


def test_ray_engine_from_the_command_line_skips_finished_runs_and_reports(data, tmp_path):
    cmd = [sys.executable, str(ROOT / "scripts" / "sweep.py"), "optimizers", "--engine", "ray", "--device", "cpu",
           "--data-root", str(data), "--sweep-dir", str(tmp_path / "s"), "--epochs", "1", "--only", "trial3-case0",
           "--seeds", "0", "batch_size=50", "log.progress=false"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEST_KILL")}
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "as Ray tasks on a local Ray instance (1 CPU, 0 GPU per run)" in out.stdout
    assert len(list((tmp_path / "s").glob("trial3-case0*-seed0/DONE.json"))) == 10
    assert "highest final test accuracy" in (tmp_path / "s" / "results.md").read_text()
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert again.returncode == 0 and again.stdout.count("skipped (finished)") == 10


def test_sweep_exit_status_counts_failed_runs_and_flags_are_checked(data, tmp_path):
    script = str(ROOT / "scripts" / "sweep.py")
    bad = subprocess.run([sys.executable, script, "optimizers", "--gpus-per-run", "0.5"], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and "are for --engine ray" in bad.stderr
    # two runs whose data folder does not exist: the sweep checks the data once before any run starts,
    # says so once and exits 2 without making a run folder
    out = subprocess.run([sys.executable, script, "optimizers", "--device", "cpu", "--data-root", str(tmp_path / "no"),
                          "--sweep-dir", str(tmp_path / "s"), "--only", "trial1-case00", "--seeds", "0,1",
                          "--no-report"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    assert out.stderr.count("MNIST not found") == 1 and "runs failed" not in out.stderr, out.stderr[-2000:]
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").iterdir())
    # --only matching nothing is an error that lists the run names
    out = subprocess.run([sys.executable, script, "zca", "--only", "nomatch", "--sweep-dir", str(tmp_path / "z")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "--only 'nomatch' matches no run of this sweep; its 100 run names" in out.stderr
    assert "zca_dim" in out.stderr
