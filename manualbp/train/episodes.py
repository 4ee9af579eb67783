"""K episodes of one case in one process: the episodes' parameters and buffers stacked along a new
first dimension (``torch.func.stack_module_state``), one ``torch.func.vmap`` of
``torch.func.functional_call`` per step doing every episode's forward, objective and manual backward
at once, one optimizer over the stacked tensors.

Episode e is the run ``train(cfg with seed = seeds[e])`` would make (its initial weights from its
``init_seed``, or its seed; its own batch order), within float tolerance: the batched kernels add in
a different order. That holds for optimizers whose update is element-wise (SGD, Adam, RMSprop, the
``tf1`` optimizers, ...), which act on each episode's slice as on its own tensor; the objective is
the sum of the episodes' objectives, so each slice gets its own episode's gradient. Not supported
for stacked episodes: phases, gradient transforms, probes, ``compile`` and checkpoints (a stacked job is short and
restarts from the beginning); use ``train`` for those.
"""
from __future__ import annotations

import copy
import time

import torch
from torch.func import functional_call, stack_module_state, vmap

from .config import ConfigError, validate
from .loop import build_initial_model, epoch_generator, metrics_row, pick_device, seed_everything
from .tasks import make_task


# torch.optim optimizers whose update of each element depends on that element's gradient and state only
ELEMENTWISE_OPTIMIZERS = frozenset({"SGD", "Adam", "AdamW", "Adamax", "NAdam", "RAdam", "RMSprop", "Adagrad",
                                    "Adadelta", "ASGD", "Rprop", "ConstantBiasAdam"})


class _Objective(torch.nn.Module):
    """The task's training objective as a module, so that functional_call swaps the parameters seen by
    the forward and by the regularizer alike."""

    def __init__(self, model, task, weights):
        super().__init__()
        self.model, self.task, self.weights = model, task, weights

    def forward(self, x, y):
        return self.task.loss(self.model, x, y, self.weights)


def train_episodes(cfg: dict, seeds: list[int], log=print) -> list[list[dict]]:
    """Train one episode per seed in one process; returns each episode's metric rows (one per epoch,
    the keys of ``metrics.jsonl``)."""
    cfg = validate(cfg)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"train_episodes: give distinct seeds, got {seeds!r}")
    for key, off in (("phases", None), ("grad_transforms", []), ("compile", False)):
        if cfg[key] != off:
            raise ConfigError(f"train_episodes: {key} is not supported for stacked episodes; train the runs one by "
                              "one with train()")
    name = cfg["optim"]["name"]
    if not (name in ELEMENTWISE_OPTIMIZERS or name.startswith("tf1.")):
        raise ConfigError(f"train_episodes: optim.name {name!r} is not known to update element-wise, and stacked "
                          "episodes share one optimizer over the stacked tensors (a norm or factorisation over a "
                          f"stacked tensor would mix the episodes); use one of {sorted(ELEMENTWISE_OPTIMIZERS)} or "
                          "a tf1.* optimizer, or train the runs one by one with train()")
    if (cfg.get("model") or {}).get("dilation"):
        raise ConfigError("train_episodes: model.dilation (dilated back-propagation) is not supported for stacked "
                          "episodes (its tape is not batched); train the runs one by one with train()")
    device = pick_device(cfg["device"])
    task = make_task(cfg, device)
    train_data, test_data = task.load_data()
    models = [build_initial_model(dict(cfg, seed=s), task, device) for s in seeds]
    seed_everything(seeds[0])
    params, buffers = stack_module_state(models)
    weights = task.objective_weights(cfg["objective"])
    base = _Objective(copy.deepcopy(models[0]).to("meta"), task, weights)
    params = {f"model.{k}": v for k, v in params.items()}
    buffers = {f"model.{k}": v for k, v in buffers.items()}

    from manualbp.optim import make_optimizer, make_scheduler
    ocfg, scfg = dict(cfg["optim"]), dict(cfg["schedule"])
    optimizer = make_optimizer(ocfg.pop("name"), list(params.values()), **ocfg)
    scheduler = make_scheduler(scfg.pop("name"), optimizer, **scfg)

    def one(p, b, x, y):
        return functional_call(base, (p, b), (x, y))
    step_all = vmap(one)

    bs, ebs = cfg["batch_size"], cfg["eval_batch_size"] or cfg["batch_size"]
    rows: list[list[dict]] = [[] for _ in seeds]
    elapsed = 0.0
    for epoch in range(1, cfg["epochs"] + 1):
        t0 = time.perf_counter()
        if hasattr(base.model, "set_epoch"):   # the module that runs (epoch-dependent models)
            base.model.set_epoch(epoch - 1)
        base.model.train()
        iters = [train_data.batches(bs, shuffle=cfg["data"]["shuffle"], generator=epoch_generator(s, epoch),
                                    dtype=task.dtype)
                 for s in seeds]
        sums, objective, seen, steps = None, None, 0, 0
        for batches in zip(*iters):
            x = torch.stack([b[0] for b in batches])
            y = torch.stack([b[1] for b in batches])
            optimizer.zero_grad(set_to_none=True)
            loss, stats = step_all(params, buffers, x, y)     # (K,), (K, n_stats)
            loss.sum().backward()
            optimizer.step()
            sums = stats.double() if sums is None else sums + stats
            objective = loss.detach().double() if objective is None else objective + loss.detach()
            seen += y.shape[1]
            steps += 1
        if not bool(torch.isfinite(objective).all()):
            bad = [s for s, v in zip(seeds, objective.tolist()) if v != v or abs(v) == float("inf")]
            raise FloatingPointError(f"train_episodes: the loss became NaN or Inf in epoch {epoch} for seeds {bad}")
        lr = optimizer.param_groups[0]["lr"]
        if scheduler is not None:
            scheduler.step()
        elapsed += time.perf_counter() - t0
        for e, m in enumerate(models):   # evaluate each episode with its own slice of the stacked state
            with torch.no_grad():
                m.load_state_dict({k[len("model."):]: v[e] for k, v in {**params, **buffers}.items()})
            te = task.evaluate(m, test_data, ebs)
            tr = task.summarize(sums[e], seen)
            rows[e].append(metrics_row(task, epoch, steps, tr, te, float(objective[e]), lr, elapsed))
        log(f"{len(seeds)} episodes, epoch {epoch}/{cfg['epochs']}: test acc "
            + " ".join(f"{r[-1]['test_acc']:.4f}" for r in rows) + f" | {elapsed:.1f}s")
    return rows
