"""The shared loop: repeatability, kill -9 and resume, finished-run no-op, NaN stop, TensorBoard
read-back, probes, sweeps. All on small Fashion-MNIST-format data written by the tests."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch

from manualbp.train import ConfigError, NonFiniteLoss, RunDir, RunDirError, parse_overrides, resolve, train
from manualbp.train.probes import tensor_stats
from manualbp.train.sweep import expand, run_sweep

from .fakedata import write_mnist_like
from .helpers import fault_env

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_mnist_like(root, "FashionMNIST", n_train=300, n_test=100)
    return root


def small_cfg(data, **over):
    preset = {"experiment": "test", "epochs": 3, "batch_size": 50, "device": "cpu",
              "data": {"name": "fashion_mnist", "root": str(data)},
              "model": {"name": "mlp", "widths": [784, 32, 16, 10], "norm": "zca_dim", "norm_at": 1,
                        "norm_kwargs": {"eps": 1e-3}},
              "optim": {"name": "Adam", "lr": 3e-3}, "log": {"progress": False}}
    return resolve(preset, over)


def without_time(rows):
    return [{k: v for k, v in r.items() if k != "time_s"} for r in rows]


def quiet(*_):
    pass


def test_cpu_run_is_repeatable_bit_for_bit_and_learns(data, tmp_path):
    cfg = small_cfg(data)
    a = train(cfg, tmp_path / "a", log=quiet)
    train(cfg, tmp_path / "b", log=quiet)
    ra, rb = RunDir(tmp_path / "a"), RunDir(tmp_path / "b")
    assert without_time(ra.read_metrics()) == without_time(rb.read_metrics())
    sa, sb = ra.load_checkpoint("cpu")["model"], rb.load_checkpoint("cpu")["model"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a["final"]["test_acc"] > 0.5          # the fake classes are separable: it must learn
    assert [r["epoch"] for r in ra.read_metrics()] == [1, 2, 3]


def test_finished_run_is_a_no_op(data, tmp_path):
    cfg = small_cfg(data, epochs=1)
    train(cfg, tmp_path / "r", log=quiet)
    rd = RunDir(tmp_path / "r")
    stamp = {p.name: p.stat().st_mtime_ns for p in rd.path.iterdir()}
    said = []
    train(cfg, tmp_path / "r", log=said.append)
    assert "finished already" in said[0]
    assert stamp == {p.name: p.stat().st_mtime_ns for p in rd.path.iterdir()}


def test_a_different_config_in_the_same_folder_is_refused(data, tmp_path):
    train(small_cfg(data, epochs=1), tmp_path / "r", log=quiet)
    with pytest.raises(RunDirError, match=r"different config \(optim.lr: 0.003 -> 0.01\).*another --run-dir"):
        train(small_cfg(data, epochs=1, optim={"lr": 0.01}), tmp_path / "r", log=quiet)
    # a display-only setting (the progress bar) is not a different run: the finished run is found
    said = []
    train(small_cfg(data, epochs=1, log={"progress": True, "progress_every": 7}), tmp_path / "r", log=said.append)
    assert "finished already" in said[0]
    # a config saved before a setting existed reads as that setting's default
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    del saved["loss"], saved["data"]["shuffle"]
    (tmp_path / "r" / "config.json").write_text(json.dumps(saved))
    said = []
    train(small_cfg(data, epochs=1), tmp_path / "r", log=said.append)
    assert "finished already" in said[0]


def _cli(run_dir, data, faults=None, extra=(), popen=False):
    env = fault_env(dict(os.environ, MANUALBP_CACHE=str(run_dir.parent / "cache")), **(faults or {}))
    cmd = [sys.executable, str(ROOT / "scripts" / "train.py"), "zca", "--run-dir", str(run_dir), "--data-root",
           str(data), "--device", "cpu", "--epochs", "3", "batch_size=50", "model.widths=[784,32,16,10]",
           "data.train_limit=None", "data.test_limit=None", *extra]
    if popen:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


SCHEDULE = ("schedule.name=StepLR", "schedule.step_size=1", "schedule.gamma=0.5")


def test_kill_9_then_same_command_resumes_to_identical_metrics(data, tmp_path):
    full = _cli(tmp_path / "full", data, extra=SCHEDULE)
    assert full.returncode == 0, full.stderr
    # 6 steps per epoch: die in the middle of epoch 2 (step 9), after epoch 1's checkpoint
    killed = _cli(tmp_path / "resumed", data, {"kill_at": 9}, SCHEDULE)
    assert killed.returncode == -signal.SIGKILL
    rd = RunDir(tmp_path / "resumed")
    assert not rd.finished() and torch.load(rd.checkpoint, weights_only=False)["epoch"] == 1
    resumed = _cli(tmp_path / "resumed", data, extra=SCHEDULE)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after epoch 1 of 3" in resumed.stdout
    a, b = RunDir(tmp_path / "full"), rd
    assert without_time(a.read_metrics()) == without_time(b.read_metrics())
    assert [r["lr"] for r in b.read_metrics()] == [0.001, 0.0005, 0.00025]   # the scheduler state resumed too
    sa, sb = torch.load(a.checkpoint, weights_only=False), torch.load(b.checkpoint, weights_only=False)
    assert all(torch.equal(sa["model"][k], sb["model"][k]) for k in sa["model"])
    again = _cli(tmp_path / "resumed", data, extra=SCHEDULE)
    assert again.returncode == 0 and "finished already" in again.stdout


def test_kill_during_the_first_epoch_starts_over_cleanly(data, tmp_path):
    killed = _cli(tmp_path / "r", data, {"kill_at": 3})
    assert killed.returncode == -signal.SIGKILL
    rd = RunDir(tmp_path / "r")
    assert rd.config.is_file() and not rd.checkpoint.exists() and not rd.finished()
    assert _cli(tmp_path / "r", data).returncode == 0 and rd.finished()
    assert len(rd.read_metrics()) == 3


def test_nan_loss_stops_with_epoch_and_step_and_keeps_last_good_checkpoint(data, tmp_path):
    cfg = small_cfg(data, epochs=3, model={"norm": "none"},
                    optim={"name": "tests.helpers:NaNAtStep", "lr": 0.01, "nan_step": 8})
    with pytest.raises(NonFiniteLoss, match=r"NaN or Inf at epoch 2, step 9 \(step 3 of the epoch\).*epoch 1"):
        train(cfg, tmp_path / "r", log=quiet)
    rd = RunDir(tmp_path / "r")
    assert not rd.finished() and torch.load(rd.checkpoint, weights_only=False)["epoch"] == 1
    assert [r["epoch"] for r in rd.read_metrics()] == [1]


def test_tensorboard_events_hold_scalars_histograms_and_probe_stats(data, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    cfg = small_cfg(data, epochs=2, log={"probe_every": "epoch"}, regularizer={"name": "l2", "lam": 1e-4})
    train(cfg, tmp_path / "r", log=quiet)
    rd = RunDir(tmp_path / "r")
    ea = EventAccumulator(str(rd.tb), size_guidance={"histograms": 0, "scalars": 0})
    ea.Reload()
    tags = ea.Tags()
    for t in ("train/loss", "train/acc", "test/loss", "test/acc", "lr"):
        assert [e.step for e in ea.Scalars(t)] == [6, 12]
    for q in ("weight", "weight_grad", "input_grad", "pre_activation", "post_activation", "first_moment"):
        assert f"probe_hist/{q}/layer2" in tags["histograms"], q
        assert [e.step for e in ea.Histograms(f"probe_hist/{q}/layer2")] == [6, 12]
        for s in ("mean", "std", "skewness", "kurtosis", "nonzero"):
            assert f"probe_{s}/{q}/layer2" in tags["scalars"]
    assert "probe_hist/input_grad/layer1" not in tags["histograms"]   # the data needs no gradient
    rows = [json.loads(line) for line in rd.stats.read_text().splitlines()]
    w = [r for r in rows if r["layer"] == "layer3" and r["quantity"] == "weight" and r["epoch"] == 2][0]
    final = torch.load(rd.checkpoint, weights_only=False)["model"]["layers.2.weight"]
    assert w["nonzero"] == final.numel() and w["mean"] == pytest.approx(final.double().mean().item(), abs=1e-12)


def test_probes_do_not_change_training(data, tmp_path):
    a = train(small_cfg(data, epochs=2), tmp_path / "a", log=quiet)
    b = train(small_cfg(data, epochs=2, log={"probe_every": 4}), tmp_path / "b", log=quiet)
    assert without_time([a["final"]]) == without_time([b["final"]])
    steps = {json.loads(line)["step"] for line in RunDir(tmp_path / "b").stats.read_text().splitlines()}
    assert steps == {4, 8, 12}


def test_tensor_stats_match_scipy():
    x = torch.from_numpy(np.random.default_rng(0).gamma(2.0, size=1000)) * (torch.rand(1000) > 0.3)
    m, s, sk, ku, nz = tensor_stats(x).tolist()
    v = x.numpy()
    assert m == pytest.approx(v.mean()) and s == pytest.approx(v.std())
    assert sk == pytest.approx(scipy.stats.skew(v)) and ku == pytest.approx(scipy.stats.kurtosis(v))
    assert nz == np.count_nonzero(v)


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"unknown config key 'data.nmae'; known keys in this section: download"):
        resolve({"data": {"nmae": "mnist"}})
    with pytest.raises(ConfigError, match="batch_size must be a positive integer, got -5"):
        resolve({}, parse_overrides(["batch_size=-5"]))
    with pytest.raises(ConfigError, match="not of the form key=value"):
        parse_overrides(["epochs"])
    with pytest.raises(ConfigError, match="log.probe_every must be"):
        resolve({"log": {"probe_every": "sometimes"}})
    assert parse_overrides(["a.b=1e-3", "c=[1,2]", "d=true", "e=None", "f=zca_dim", "g=none"]) == \
        {"a": {"b": 1e-3}, "c": [1, 2], "d": True, "e": None, "f": "zca_dim", "g": "none"}


def test_sweep_pool_runs_skips_finished_and_resumes(data, tmp_path):
    base = small_cfg(data, epochs=1)
    grid = {"variant": {"none": {"model": {"norm": "none"}}, "center": {"model": {"norm": "center"}}}, "seed": [0, 1]}
    specs = expand(base, grid, tmp_path / "sweep")
    assert [s.name for s in specs] == ["none-seed0", "none-seed1", "center-seed0", "center-seed1"]
    assert specs[3].config["model"]["norm"] == "center" and specs[3].config["seed"] == 1
    results = run_sweep(specs, ["cpu"], workers_per_device=2)
    assert [r[1] for r in results] == ["ran"] * 4
    again = run_sweep(specs, ["cpu"], workers_per_device=1)
    assert [r[1] for r in again] == ["skipped (finished)"] * 4
    assert [r[2] for r in again] == [RunDir(s.run_dir).read_done() for s in specs]


def test_sweep_cli_list_gives_one_command_per_run(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "sweep.py"), "zca", "--list", "--seeds", "0,1",
                          "--sweep-dir", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    from manualbp.experiments.zca import VARIANTS
    assert len(lines) == 2 * len(VARIANTS) and all("--run " + ln["name"] in ln["command"] for ln in lines)
    assert len({ln["run_dir"] for ln in lines}) == len(lines)


def _wait_for(path: Path, proc, timeout=120.0):
    import time
    t0 = time.time()
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.time() - t0 < timeout, f"{path} did not appear"
        time.sleep(0.05)


def test_a_second_process_on_a_held_run_folder_refuses_at_once(data, tmp_path):
    """Two processes on one run folder: the second refuses at once, naming the holder, and exits
    non-zero; the first trains to the end alone (3 epochs, 3 metric rows)."""
    first = _cli(tmp_path / "r", data, {"sleep_per_step": 0.3}, popen=True)
    _wait_for(tmp_path / "r" / "HOLD.json", first)
    second = _cli(tmp_path / "r", data)
    assert second.returncode == 2, second.stdout + second.stderr
    assert f"is held by process {first.pid} on host" in second.stderr
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-2000:]
    rd = RunDir(tmp_path / "r")
    assert rd.finished() and [r["epoch"] for r in rd.read_metrics()] == [1, 2, 3]
    assert not rd.hold_file.exists()   # released at the end


def test_a_hold_left_by_a_killed_process_is_taken_over(data, tmp_path):
    killed = _cli(tmp_path / "r", data, {"kill_at": 9})
    assert killed.returncode == -signal.SIGKILL
    rd = RunDir(tmp_path / "r")
    held = json.loads(rd.hold_file.read_text())
    assert held["pid"] != os.getpid() and rd.hold_file.exists()   # the dead process's hold is still there
    resumed = _cli(tmp_path / "r", data)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming after epoch 1 of 3" in resumed.stdout
    assert rd.finished() and [r["epoch"] for r in rd.read_metrics()] == [1, 2, 3] and not rd.hold_file.exists()


def test_a_hold_from_another_host_is_refused_until_stale(tmp_path, monkeypatch):
    """On a shared filesystem a hold from another host cannot be checked by pid: it is refused while
    it is refreshed and taken over once not refreshed for HOLD_STALE_S seconds."""
    import time

    from manualbp.train import RunDirHeld
    from manualbp.train import rundir as rundir_mod
    rd = RunDir(tmp_path / "r")
    rd.path.mkdir()
    rd.hold_file.write_text(json.dumps({"host": "node-17", "pid": 4242, "started": "1", "since": "then",
                                        "token": "node-17:4242:1"}))
    with pytest.raises(RunDirHeld, match="held by process 4242 on host node-17"):
        rd.hold()
    old = time.time() - rundir_mod.HOLD_STALE_S - 5
    os.utime(rd.hold_file, (old, old))
    with rd.hold():
        assert json.loads(rd.hold_file.read_text())["pid"] == os.getpid()
        with pytest.raises(RunDirHeld, match=f"held by process {os.getpid()}"):   # this live process's own hold
            rd.hold()
    assert not rd.hold_file.exists()


@pytest.mark.parametrize("content", ["", "{\"host\": \"node", "[1, 2]"])
def test_an_unreadable_hold_is_live_until_stale(data, tmp_path, content):
    """An empty or half-written HOLD.json (a process between creating and writing it, in a scheme
    without atomic creation, or a file written by hand) is a live hold while it is younger than
    HOLD_STALE_S: train() refuses without touching the folder; an old one is taken over."""
    import time

    from manualbp.train import RunDirHeld
    from manualbp.train import rundir as rundir_mod
    rd = RunDir(tmp_path / "r")
    rd.path.mkdir()
    rd.hold_file.write_text(content)
    with pytest.raises(RunDirHeld, match="HOLD.json that cannot be read .* taken as live until it is 300 s old"):
        train(small_cfg(data, epochs=1), rd.path, log=quiet)
    assert not rd.config.exists() and rd.hold_file.read_text() == content
    old = time.time() - rundir_mod.HOLD_STALE_S - 5
    os.utime(rd.hold_file, (old, old))
    train(small_cfg(data, epochs=1), rd.path, log=quiet)
    assert rd.finished() and not rd.hold_file.exists()


def test_a_hold_of_a_reused_pid_is_taken_over(tmp_path):
    """A hold whose pid now belongs to another process (this one, started at another time) was left by a
    process that died: taken over at once."""
    import socket

    from manualbp.train import rundir as rundir_mod
    rd = RunDir(tmp_path / "r")
    rd.path.mkdir()
    started = rundir_mod._process_start(os.getpid())
    rd.hold_file.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "started": started + "1",
                                        "since": "then", "token": "old"}))
    with rd.hold():
        assert json.loads(rd.hold_file.read_text())["started"] == started


def test_a_live_hold_taken_between_the_check_and_the_take_over_is_put_back(tmp_path, monkeypatch):
    """Process A finds an abandoned hold; before A moves it aside, process B takes the folder over and
    holds it live. A must move B's live hold back and refuse, not hold the folder beside B."""
    import socket

    from manualbp.train import RunDirHeld
    from manualbp.train import rundir as rundir_mod
    rd = RunDir(tmp_path / "r")
    rd.path.mkdir()
    rd.hold_file.write_text(json.dumps({"host": socket.gethostname(), "pid": 999999999, "started": "1",
                                        "since": "then", "token": "dead"}))   # no such pid: abandoned
    live = {"host": socket.gethostname(), "pid": os.getpid(), "started": rundir_mod._process_start(os.getpid()),
            "since": "now", "token": "B"}
    rename = os.rename

    def b_takes_over_first(src, dst):   # B replaces the dead hold with its own just before A's rename
        if str(src).endswith("HOLD.json") and json.loads(Path(src).read_text())["token"] == "dead":
            Path(src).write_text(json.dumps(live))
        return rename(src, dst)
    monkeypatch.setattr(rundir_mod.os, "rename", b_takes_over_first)
    with pytest.raises(RunDirHeld, match=f"held by process {os.getpid()}"):
        rd.hold()
    assert json.loads(rd.hold_file.read_text())["token"] == "B" and not list(rd.path.glob("*.stale"))


def _race_worker(root, rounds, barrier, results):
    import time

    from manualbp.train import RunDirHeld
    fdopen = os.fdopen

    def slow_fdopen(*a, **k):   # a slow disk: a create-then-write hold stays empty for 20 ms
        time.sleep(0.02)
        return fdopen(*a, **k)
    os.fdopen = slow_fdopen   # this forked process only
    for r in range(rounds):
        barrier.wait()
        try:
            hold = RunDir(Path(root) / f"race{r}").hold()
            results.put((r, os.getpid()))
        except RunDirHeld as e:   # refused by a complete record that names the winner, never a half-written one
            hold = None
            if "is held by process" not in str(e):
                results.put((r, f"refused by an unreadable hold: {e}"))
        barrier.wait()   # both have tried before either lets go
        if hold is not None:
            hold.release()


def test_two_processes_racing_for_an_empty_folder_never_both_hold_it(tmp_path):
    """Two processes started together on a folder that does not exist yet, 100 times, on a slow disk:
    exactly one takes the hold each time, and the other is refused by the winner's complete record (the
    hold file appears with its record in it: never empty or half-written)."""
    import multiprocessing as mp
    ctx = mp.get_context("fork")
    rounds = 100
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_race_worker, args=(str(tmp_path), rounds, barrier, results)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
        assert p.exitcode == 0
    won = {}
    while not results.empty():
        r, pid = results.get()
        won.setdefault(r, []).append(pid)
    assert sorted(won) == list(range(rounds)), "a round where no process took the hold"
    assert all(len(v) == 1 and isinstance(v[0], int) for v in won.values()), \
        {r: v for r, v in won.items() if len(v) > 1 or not isinstance(v[0], int)}
    assert not list(tmp_path.glob("race*/HOLD*")) and not list(tmp_path.glob("race*/*.tmp"))


def test_a_hold_keeps_being_refreshed(tmp_path, monkeypatch):
    import time

    from manualbp.train import rundir as rundir_mod
    monkeypatch.setattr(rundir_mod, "HOLD_REFRESH_S", 0.05)
    rd = RunDir(tmp_path / "r")
    with rd.hold():
        old = time.time() - 1000
        os.utime(rd.hold_file, (old, old))
        time.sleep(0.5)
        assert rd.holder()["age_s"] < 5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_a_run_on_cuda_learns_and_resumes_as_a_finished_run(data, tmp_path):
    """The loop on CUDA: a short run learns, its checkpoint holds CUDA-trained weights, and the same
    call again is the finished-run no-op."""
    cfg = small_cfg(data, device="cuda")
    out = train(cfg, tmp_path / "r", log=quiet)
    assert out["device"].startswith("cuda") and out["final"]["test_acc"] > 0.5
    said = []
    train(cfg, tmp_path / "r", log=said.append)
    assert "finished already" in said[0]


def test_fixed_data_order_and_full_pass_training_metrics(data, tmp_path):
    """data.shuffle=false: every epoch in the file's order, so runs that differ only in the seed of the
    data order are identical; train_metrics=full_pass: the training metrics are the trained model's on
    the whole training set (the articles' code), not the running mean over the epoch's batches."""
    from manualbp.data import load_dataset
    from manualbp.train.tasks import make_task
    fixed = resolve(small_cfg(data, seed=0, init_seed=7), {"data": {"shuffle": False}})
    a = train(fixed, tmp_path / "a", log=quiet)
    b = train(dict(fixed, seed=1), tmp_path / "b", log=quiet)
    assert without_time([a["final"]]) == without_time([b["final"]])
    c = train(small_cfg(data, seed=1, init_seed=7), tmp_path / "c", log=quiet)   # shuffled: another order
    assert without_time([c["final"]]) != without_time([a["final"]])
    cfg = small_cfg(data, epochs=1, train_metrics="full_pass")
    out = train(cfg, tmp_path / "f", log=quiet)
    model = torch.load(tmp_path / "f" / "checkpoint.pt", weights_only=True)["model"]
    task = make_task(cfg, torch.device("cpu"))
    net = task.build_model()
    net.load_state_dict(model)
    ref = task.evaluate(net, load_dataset("fashion_mnist", "train", data), cfg["batch_size"])   # the eval batch
    assert out["final"]["train_acc"] == pytest.approx(ref["acc"], abs=1e-12)
    assert out["final"]["train_loss"] == pytest.approx(ref["loss"], rel=1e-6)
    with pytest.raises(ConfigError, match="train_metrics must be 'running'"):
        small_cfg(data, train_metrics="epoch")


def test_metric_loss_and_full_pass_accuracy(data, tmp_path):
    """metric_loss: the reported train/test loss is another loss on the same outputs (the trained one
    unchanged); train_metrics=full_pass_accuracy: the running loss of the epoch's batches beside the
    accuracy of a pass after the epoch (the optimizers article's cost and accuracy)."""
    from manualbp.data import load_dataset
    from manualbp.train.tasks import CLASSIFICATION_LOSSES, make_task
    over = {"data": {"shuffle": False}, "model": {"norm": "none"}}   # no batch statistics: one pass = batches
    plain = train(resolve(small_cfg(data, epochs=1), over), tmp_path / "p", log=quiet)
    cfg = resolve(small_cfg(data, epochs=1, metric_loss="softmax_binary_cross_entropy",
                            train_metrics="full_pass_accuracy"), over)
    out = train(cfg, tmp_path / "m", log=quiet)
    ck = torch.load(tmp_path / "m" / "checkpoint.pt", weights_only=True)["model"]
    assert torch.equal(ck["layers.0.weight"], torch.load(tmp_path / "p" / "checkpoint.pt",
                                                         weights_only=True)["model"]["layers.0.weight"])
    task = make_task(cfg, torch.device("cpu"))
    net = task.build_model()
    net.load_state_dict(ck)
    test = load_dataset("fashion_mnist", "test", data)
    with torch.no_grad():
        ((x, y),) = list(test.batches(len(test.y), dtype=torch.float32))
        bce = CLASSIFICATION_LOSSES["softmax_binary_cross_entropy"](net(x), y).item()
    assert out["final"]["test_loss"] == pytest.approx(bce, rel=1e-5)
    assert out["final"]["test_acc"] == plain["final"]["test_acc"]
    full = task.evaluate(net, load_dataset("fashion_mnist", "train", data), cfg["batch_size"])
    assert out["final"]["train_acc"] == pytest.approx(full["acc"], abs=1e-12)
    assert out["final"]["train_acc"] != plain["final"]["train_acc"]         # not the running accuracy
    assert out["final"]["train_loss"] != pytest.approx(full["loss"])       # the running cost, not the pass's
    with pytest.raises(ConfigError, match="metric_loss"):
        small_cfg(data, metric_loss="hinge")
    with pytest.raises(ConfigError, match="metric_loss is for task=classification"):
        small_cfg(data, task="segmentation", metric_loss="softmax_binary_cross_entropy")


def test_init_seed_offset_draws_other_weights(data):
    from .helpers import built_run
    a = built_run(small_cfg(data, seed=3))[1]
    b = built_run(small_cfg(data, seed=0, init_seed=3))[1]
    c = built_run(small_cfg(data, seed=3, init_seed_offset=1000))[1]
    d = built_run(small_cfg(data, seed=1003))[1]
    assert torch.equal(a.layers[0].weight, b.layers[0].weight)
    assert not torch.equal(a.layers[0].weight, c.layers[0].weight)
    assert torch.equal(c.layers[0].weight, d.layers[0].weight)
    with pytest.raises(ConfigError, match="init_seed_offset"):
        small_cfg(data, init_seed_offset=-1)


def test_validation_hold_out_is_the_first_training_images(data):
    from manualbp.data import DataError, load_dataset
    full = load_dataset("fashion_mnist", "train", data)
    held = load_dataset("fashion_mnist", "train", data, validation=50)
    assert torch.equal(held.x, full.x[50:]) and torch.equal(held.y, full.y[50:])
    assert torch.equal(load_dataset("fashion_mnist", "test", data, validation=50).x,
                       load_dataset("fashion_mnist", "test", data).x)
    with pytest.raises(DataError, match="validation must be an int in"):
        load_dataset("fashion_mnist", "train", data, validation=-1)


def test_float64_runs_train_in_float64(data, tmp_path):
    """dtype=float64: parameters, buffers and batches in float64 (the articles' scripts); a run
    differs from the float32 one only by rounding."""
    out64 = train(small_cfg(data, epochs=1, dtype="float64"), tmp_path / "d", log=quiet)
    out32 = train(small_cfg(data, epochs=1), tmp_path / "s", log=quiet)
    ck = torch.load(tmp_path / "d" / "checkpoint.pt", weights_only=True)["model"]
    assert all(v.dtype == torch.float64 for v in ck.values() if v.is_floating_point())
    assert out64["final"]["train_loss"] == pytest.approx(out32["final"]["train_loss"], rel=1e-3)
    assert out64["final"]["train_loss"] != out32["final"]["train_loss"]
    with pytest.raises(ConfigError, match="dtype must be float32 or float64"):
        small_cfg(data, dtype="half")


def test_after_epoch_probe_and_its_moment_step(data, tmp_path):
    """log.probe_every=after_epoch: one extra pass on the epoch's last batch after its last update,
    which leaves training as it was; with probe_moment_step (the gradient-pov article's code) that
    pass's gradient g also takes Adam's first moment to b1 m + (1 - b1) g, and the step stays."""
    from .helpers import built_run

    def cfg(epochs, **log):   # Adam-c, the training images in file order
        c = small_cfg(data, epochs=epochs, optim={"name": "ConstantBiasAdam", "lr": 3e-3, "eps": 1e-9}, log=log)
        c["data"]["shuffle"] = False
        return c
    plain = train(cfg(2, probe_every=0), tmp_path / "plain", log=quiet)
    probed = train(cfg(2, probe_every="after_epoch"), tmp_path / "probed",
                   log=quiet)
    assert without_time([plain["final"]]) == without_time([probed["final"]])
    rows = [json.loads(line) for line in RunDir(tmp_path / "probed").stats.read_text().splitlines()]
    assert {(r["epoch"], r["step"]) for r in rows} == {(1, 6), (2, 12)}
    assert {r["quantity"] for r in rows} >= {"weight_grad", "first_moment", "post_activation"}

    cfg1 = cfg(1, probe_every=0)
    train(cfg1, tmp_path / "p1", log=quiet)
    cfgm = cfg(1, probe_every="after_epoch", probe_moment_step=True)
    train(cfgm, tmp_path / "m1", log=quiet)
    cp, cm = RunDir(tmp_path / "p1").load_checkpoint("cpu"), RunDir(tmp_path / "m1").load_checkpoint("cpu")
    assert all(torch.equal(cp["model"][k], cm["model"][k]) for k in cp["model"])   # the weights did not move
    task, model, _ = built_run(cfg1)
    model.load_state_dict(cp["model"])
    train_data, _ = task.load_data()
    x, y = list(train_data.batches(50, dtype=task.dtype))[-1]
    loss, _ = task.loss(model, x, y, task.objective_weights(None))
    loss.backward()
    for i, p in enumerate(model.parameters()):
        expected = 0.9 * cp["optimizer"]["state"][i]["exp_avg"] + 0.1 * p.grad
        torch.testing.assert_close(cm["optimizer"]["state"][i]["exp_avg"], expected, rtol=1e-5, atol=1e-8)
        assert torch.equal(cm["optimizer"]["state"][i]["exp_avg_sq"], cp["optimizer"]["state"][i]["exp_avg_sq"])
    moved = train(cfg(2, probe_every="after_epoch", probe_moment_step=True), tmp_path / "moved", log=quiet)
    assert moved["final"]["train_loss"] != plain["final"]["train_loss"]   # the kept step changed training
    with pytest.raises(ConfigError, match="probe_moment_step=true is a step of the after-epoch probe"):
        small_cfg(data, log={"probe_moment_step": True})
    with pytest.raises(ValueError, match="needs an optimizer with a first moment"):
        train(small_cfg(data, optim={"name": "SGD", "lr": 0.1},
                        log={"probe_every": "after_epoch", "probe_moment_step": True}), tmp_path / "sgd", log=quiet)


def test_a_run_stopped_mid_epoch_after_probes_resumes_to_the_same_probe_and_instrument_rows(data, tmp_path):
    """Probes every 2 steps (6 steps per epoch): a run stopped at step 10 (epoch 2, after two of its probe
    steps) and run again drops that epoch's rows (probes.jsonl, instruments.jsonl) and ends with the same
    rows as an uninterrupted run, none twice."""
    from manualbp.train.loop import add_step_hook
    cfg = small_cfg(data, model={"name": "mlp", "widths": [784, 16, 10]},
                    log={"probe_every": 2, "optimizer_state": True, "histograms": False})

    def rows(run, name):
        out = []
        for r in map(json.loads, (run / name).read_text().splitlines()):
            out.append({k: v for k, v in r.items() if k != "hist"})
        return out
    train(cfg, tmp_path / "whole", log=quiet)

    def stop(path, epoch, step):
        if step == 10 and path == tmp_path / "cut":
            raise KeyboardInterrupt
    remove = add_step_hook(stop)
    try:
        with pytest.raises(KeyboardInterrupt):
            train(cfg, tmp_path / "cut", log=quiet)
    finally:
        remove()
    assert {r["epoch"] for r in rows(tmp_path / "cut", "probes.jsonl")} == {1, 2}   # epoch 2's probes written
    train(cfg, tmp_path / "cut", log=quiet)
    for name in ("probes.jsonl", "instruments.jsonl", "metrics.jsonl"):
        whole, cut = rows(tmp_path / "whole", name), rows(tmp_path / "cut", name)
        if name == "metrics.jsonl":
            whole, cut = without_time(whole), without_time(cut)
        assert cut == whole, name
