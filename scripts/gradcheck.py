#!/usr/bin/env python
"""Run the gradient suite over the op registry and print one row per op: whether its forward-mode
rule and its double backward pass (or the op refuses them, with a clear error that the suite
checks), the checks run, the largest backward and tangent errors against the reference (float64
tangents), pass/fail. Exit 1 on any failure."""
from __future__ import annotations

import argparse
import sys
import traceback

import torch

from manualbp.testing.gradsuite import CHECKS, refusal, run_check
from manualbp.testing.opinfo import OPS


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("-k", "--filter", default="", help="only ops whose name contains this")
    ap.add_argument("-v", "--verbose", action="store_true", help="print the failure of each failed check")
    args = ap.parse_args(argv)
    checks = [c for c in CHECKS if not c.startswith("cuda") or torch.cuda.is_available()]
    rows, failed = [], 0
    for info in OPS:
        if args.filter not in info.name:
            continue
        ran, bad, worst, worst_jvp = [], [], 0.0, 0.0
        for check in checks:
            name = check + ("+batched" if check == "gradcheck" and info.batched_grad else "")
            try:
                err = run_check(info, check)
                if check.startswith(("ref", "cuda")):
                    worst = max(worst, err)
                elif check == "jvp-ref":
                    worst_jvp = err
                ran.append(name)
            except Exception as e:  # report every failing check, not only the first
                bad.append(name)
                if args.verbose:
                    print(f"--- {info.name} / {check}:\n{''.join(traceback.format_exception_only(e))}")
        n = len(info.samples(torch.float64, torch.device("cpu")))
        failed += bool(bad)
        fwd = "FAIL" if {"forward-ad", "jvp-ref"} & set(bad) else ("pass" if info.jvp else "refuses")
        second = "FAIL" if {"gradgradcheck", "second-order"} & set(bad) else ("pass" if info.gradgrad else "refuses")
        rows.append((info.name, info.family, n, fwd, second, ", ".join(ran + [f"FAILED {b}" for b in bad]),
                     f"{worst:.2e}", f"{worst_jvp:.2e}" if info.jvp else "-", "FAIL" if bad else "pass"))
    head = ("op", "family", "samples", "forward-AD", "gradgrad", "checks", "max |bwd err|", "max |jvp err|", "result")
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    print(fmt.format(*head))
    print(fmt.format(*("-" * w for w in widths)))
    for r in rows:
        print(fmt.format(*r))
    refusing = [(info, kind) for info in OPS if args.filter in info.name
                for kind, ok in (("forward", info.jvp), ("second", info.gradgrad)) if not ok]
    if refusing:
        print("\nRefusals (the RefusedDerivative each raises, on its first sample):")
        for info, kind in refusing:
            print(f"  {info.name}, {'forward mode' if kind == 'forward' else 'second derivative'}: "
                  f"{refusal(info, kind)}")
    print(f"\n{len(rows) - failed} passed, {failed} failed ({'CUDA' if torch.cuda.is_available() else 'no CUDA'}; "
          f"torch {torch.__version__})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
