"""scripts/paired.py: a sweep's final metric by seed, and the difference of two run prefixes paired by seed."""
import json
import subprocess
import sys
from pathlib import Path

import scipy.stats

ROOT = Path(__file__).resolve().parents[1]


def _run(sweep, name, acc):
    d = sweep / name
    d.mkdir(parents=True)
    (d / "DONE.json").write_text(json.dumps({"final": {"test_acc": acc, "train_acc": 1.0}}))


def test_paired_differences_and_t_interval(tmp_path):
    a, b = [0.90, 0.91, 0.93], [0.89, 0.91, 0.90]
    for s in range(3):
        _run(tmp_path, f"x-seed{s}", a[s])
        _run(tmp_path, f"y-seed{s}", b[s])
    _run(tmp_path, "x_other-seed0", 0.5)            # another prefix that starts alike: not part of x
    (tmp_path / "x-seed3").mkdir()                  # an unfinished run: not counted
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "paired.py"), str(tmp_path), "x", "y"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    d = [100 * (p - q) for p, q in zip(a, b)]
    m = sum(d) / 3
    sd = (sum((v - m) ** 2 for v in d) / 2) ** 0.5
    half = scipy.stats.t.ppf(0.975, 2) * sd / 3 ** 0.5
    assert f"n 3, mean {m:.2f}, sd {sd:.2f}, 95% t-interval [{m - half:.2f}, {m + half:.2f}]" in out.stdout
    one = subprocess.run([sys.executable, str(ROOT / "scripts" / "paired.py"), str(tmp_path), "x"],
                         capture_output=True, text=True, timeout=120)
    assert "seed 2: 93.00" in one.stdout and "x, test_acc: n 3, mean 91.33" in one.stdout
    bad = subprocess.run([sys.executable, str(ROOT / "scripts" / "paired.py"), str(tmp_path), "nothing"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "no finished runs nothing-seed*" in bad.stderr
