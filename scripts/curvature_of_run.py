#!/usr/bin/env python
"""The curvature of a finished run's final weights, measured afterwards as ``log.curvature=end`` measures it
during a run: the run's model rebuilt from its config and checkpoint, its last epoch's last training batch
(the run's own data order), the Hessian's top eigenvalue (Lanczos) and trace (Hutchinson) of the data term
and of the objective with exact derivatives, by double backward through the manual Functions. Prints one
JSON row per term and writes them to ``<run>/curvature_after.jsonl``.

    python scripts/curvature_of_run.py RUN_DIR [RUN_DIR ...] --params layers.1,layers.2
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from manualbp.train import RunDir
from manualbp.train.config import validate, with_defaults
from manualbp.train.instruments import check_curvature, curvature, exact_derivatives
from manualbp.train.loop import build_initial_model, epoch_generator, plan_phases, trained_names
from manualbp.train.tasks import make_task


def measure(run_dir: Path, params: str, steps: int, samples: int) -> list[dict]:
    rd = RunDir(run_dir)
    if not rd.finished():
        raise SystemExit(f"{run_dir}: not a finished run (no DONE.json); run or resume it first")
    cfg = validate(with_defaults(json.loads(rd.config.read_text())))   # settings added since the run: defaults
    device = torch.device("cpu")
    cfg["device"] = "cpu"
    task = make_task(cfg, device)
    train_data, _ = task.load_data()
    model = build_initial_model(cfg, task, device)
    model.load_state_dict(torch.load(rd.checkpoint, map_location="cpu", weights_only=True)["model"])
    log = {**cfg["log"], "curvature": "end", "curvature_params": params, "curvature_hvp": "double_backward"}
    check_curvature(model, task, log)
    model.train()
    *_, (x, y) = train_data.batches(cfg["batch_size"], shuffle=cfg["data"]["shuffle"], dtype=task.dtype,
                                    generator=epoch_generator(cfg["seed"], cfg["epochs"]))
    phase = plan_phases(cfg, task)[-1]
    names = trained_names(model, phase.spec["train"])
    chosen = [p for n, p in model.named_parameters()
              if (params == "all" or n.startswith(tuple(params))) and n in names]
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    rows = []
    with exact_derivatives(model, task):
        for term, weights in (("data", {"data": 1.0}), ("objective", phase.weights)):
            def loss_fn(weights=weights):
                with torch.no_grad():
                    for k, v in model.named_buffers():
                        v.copy_(buffers[k])
                return task.loss(model, x, y, weights)[0]
            step = cfg["epochs"] * train_data.num_batches(cfg["batch_size"])   # the run's last step: its seed
            c = curvature(loss_fn, chosen, steps, samples, cfg["seed"] * 1_000_003 + step)
            rows.append({"run": run_dir.name, "epoch": cfg["epochs"], "step": step, "term": term, **c,
                         "params": params if params == "all" else list(params), "lanczos_steps": steps,
                         "hutchinson_samples": samples, "batch": int(y.shape[0])})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--params", default="all", help="'all' or comma-separated parameter-name prefixes")
    ap.add_argument("--lanczos", type=int, default=20)
    ap.add_argument("--hutchinson", type=int, default=20)
    args = ap.parse_args(argv)
    params = "all" if args.params == "all" else [p for p in args.params.split(",") if p]
    torch.set_num_threads(1)
    for run in args.runs:
        rows = measure(run, params, args.lanczos, args.hutchinson)
        (run / "curvature_after.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        for r in rows:
            print(json.dumps(r))
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
