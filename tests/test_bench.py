"""Smoke test: the benchmark runs on tiny sizes and writes every part (not a timing test)."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_runs_on_tiny_sizes(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--tiny", "--device", "cpu",
                          "--repeats", "1", "--out", str(tmp_path / "b.json")], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads((tmp_path / "b.json").read_text())
    parts = {r["part"] for r in res["rows"]}
    assert parts == {"ops", "models", "whitening", "whitening-maps", "whitening-models", "materialize", "instruments",
                     "curvature"}
    wm = [r for r in res["rows"] if r["part"] == "whitening-maps"]   # every back end at every (shape, group size)
    assert {(r["size"], r["group_size"], r["name"]) for r in wm} == {
        (s, g, b) for s in ("4x8x4x4", "4x8x2x2") for g in (4, 8) for b in ("eigh", "svd", "newton-schulz (T=5)")}
    assert all(r["vs_eigh"] == 1.0 for r in wm if r["name"] == "eigh")   # the base against itself, round by round
    wd = [r for r in res["rows"] if r["part"] == "whitening-models"]
    assert {(r["name"], r["mode"]) for r in wd} == {(a, "eager") for a in ("bn", "dbn16", "itn16")}
    assert all(r["ms"] > 0 and r["vs_bn_iqr"][0] <= r["vs_bn"] <= r["vs_bn_iqr"][1] for r in wd)
    cv = [r for r in res["rows"] if r["part"] == "curvature"]
    assert [r["name"] for r in cv] == ["mlp", "cnn6", "cnn6 + batch norm", "segmentation AE"]
    for r in cv:   # the HVP costs more than the gradient it differentiates; each median inside its quartiles
        assert r["hvp_ms"] > 0 and r["gradient_ms"] > 0
        for k in ("paired_ratio", "plain_ratio", "hvp_vs_plain"):
            assert r[k + "_iqr"][0] <= r[k] <= r[k + "_iqr"][1], (r["name"], k)
    ins = [r for r in res["rows"] if r["part"] == "instruments"]
    assert {(r["name"], r["instrument"]) for r in ins} == {(f, i) for f in ("mlp", "cnn6", "cnn6 + batch norm",
                                                                            "segmentation AE")
                                                           for i in ("+ per-example", "+ optimizer state", "+ spectra")}
    assert all(r["paired_ratio"] > 0 and r["ms"] > 0 for r in ins)
    names = {r["name"] for r in res["rows"]}
    import manualbp.functional as M
    assert {f"regularize {n}" for n in M.REGULARIZERS} <= names
    assert {"linear", "conv2d", "zca_whiten dim", "zca_whiten example", "sparse_filtering", "batch_norm 4-D",
            "softmax_cross_entropy", "cnn6", "cnn6 + batch norm", "segmentation AE", "mlp (zca experiment)"} <= names
    for r in res["rows"]:   # every ratio is the ratio of the two times it reports, both finite and positive
        if "ratio" in r:
            assert 0 < r["manual_ms"] < float("inf") and 0 < r["autograd_ms"] < float("inf"), r["name"]
            assert abs(r["ratio"] - r["manual_ms"] / r["autograd_ms"]) < 1e-9 * r["ratio"], r["name"]
    assert all(r["manual_peak_mb"] is not None for r in res["rows"] if r["part"] == "models")
    rows = [r for r in res["rows"] if r["part"] == "models"]
    assert all(r["paired_ratio_iqr"][0] <= r["paired_ratio"] <= r["paired_ratio_iqr"][1] for r in rows)
    assert all(r["unfused_paired_ratio_iqr"][0] <= r["unfused_paired_ratio"] <= r["unfused_paired_ratio_iqr"][1]
               for r in rows)
    if sys.platform.startswith("linux"):   # the timing process re-executed itself with the malloc thresholds
        assert res["machine"]["allocator"].startswith("glibc MALLOC_MMAP_THRESHOLD_=33554432")


def test_bench_model_runs_summarise_fresh_processes(tmp_path):
    """--runs K: the model-step part in K processes, each build's per-run paired ratios with mean, sd, interval."""
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--tiny", "--only", "models", "--device",
                          "cpu", "--runs", "2", "--out", str(tmp_path / "r.json")], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = json.loads((tmp_path / "r.json").read_text())["rows"]
    assert {r["part"] for r in rows} == {"model runs"} and len(rows) == 4 * 2   # 4 models x (as trained, unfused)
    for r in rows:
        assert r["runs"] == 2 and len(r["values"]) == 2
        assert abs(r["mean"] - sum(r["values"]) / 2) < 1e-12 and r["ci95"] > 0


def test_paired_ratio_cancels_a_common_drift():
    """Rounds where the machine was slow for both sides still give the true ratio."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from bench import paired_ratio
    plain = [1.0, 5.0, 2.0, 9.0, 3.0]                  # a noisy machine: times vary 9x between rounds
    manual = [1.1 * t for t in plain]
    med, lo, hi = paired_ratio(manual, plain)
    assert abs(med - 1.1) < 1e-12 and abs(lo - 1.1) < 1e-12 and abs(hi - 1.1) < 1e-12
    med, _, _ = paired_ratio([2.0, 3.0, 1.0], [1.0, 1.0, 1.0])
    assert med == 2.0


def test_interleaved_timing_measures_a_known_ratio():
    """The harness itself: a callable that sleeps 6 ms against one that sleeps 2 ms reads about 3x
    (sleep only overshoots, so the bound is loose; the point is that the two are not mixed up)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import time

    import torch
    from bench import interleaved_times, paired_ratio
    times = interleaved_times({"slow": lambda: time.sleep(0.006), "fast": lambda: time.sleep(0.002)},
                              torch.device("cpu"), 7)
    med, lo, hi = paired_ratio(times["slow"], times["fast"])
    assert 1.8 < med < 3.5 and lo <= med <= hi


def test_gpu_check_without_cuda_says_so_and_exits_0(tmp_path):
    import torch
    if torch.cuda.is_available():
        import pytest
        pytest.skip("a CUDA device is present: make gpu-check runs for real there")
    out = subprocess.run(["make", "-s", "gpu-check", f"ARGS=--out {tmp_path / 'g'}"], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "gpu-check: no CUDA device (torch.cuda.is_available() is False); nothing to check" in out.stdout
    assert not (tmp_path / "g").exists()
