"""Tasks: what the shared loop needs from an experiment's kind of problem (data, model, loss,
evaluation). The loss is built from manual ops only, so training never asks autograd to
differentiate a forward."""
from __future__ import annotations

import torch

import manualbp.functional as MF
from manualbp.data import load_dataset
from manualbp.models import build_model


def weight_penalties(model, name: str, lam: float) -> list:
    """lam * sum R(w) for every weight (parameters with more than one dimension)."""
    if name == "none" or lam == 0:
        return []
    return [MF.regularize(p, name, lam) for p in model.parameters() if p.dim() > 1 and p.requires_grad]


class ClassificationTask:
    """Softmax cross-entropy on class labels (+ the configured weight penalty); metrics loss and accuracy."""

    def __init__(self, cfg: dict, device: torch.device):
        self.cfg, self.device = cfg, device

    def load_data(self):
        d = self.cfg["data"]
        train = load_dataset(d["name"], "train", d["root"], d["download"], d["train_limit"])
        test = load_dataset(d["name"], "test", d["root"], d["download"], d["test_limit"])
        return train.to(self.device), test.to(self.device)

    def build_model(self):
        return build_model(self.cfg["model"])

    def loss(self, model, x, y):
        """Returns (loss, tensor [loss * n, correct]) without a host-device sync (n = len(y))."""
        logits = model(x)
        data_loss = MF.softmax_cross_entropy(logits, y)
        r = self.cfg["regularizer"]
        pens = weight_penalties(model, r["name"], r["lam"])
        loss = MF.add(data_loss, *pens) if pens else data_loss
        n = y.shape[0]
        correct = (logits.detach().argmax(1) == y).sum()
        return loss, torch.stack([data_loss.detach() * n, correct.to(logits.dtype)])

    @torch.no_grad()
    def evaluate(self, model, data, batch_size: int) -> dict:
        model.eval()
        sums = torch.zeros(2, dtype=torch.float64, device=self.device)
        count = 0
        for x, y in data.batches(batch_size):
            logits = model(x)
            count += y.shape[0]
            sums += torch.stack([MF.softmax_cross_entropy(logits, y).double() * y.shape[0],
                                 (logits.argmax(1) == y).sum().double()])
        model.train()
        return self.summarize(sums, count)

    @staticmethod
    def summarize(sums: torch.Tensor, count: int) -> dict:
        """Per-example means from the summed [loss * n, correct] over ``count`` examples."""
        s = sums.double().tolist()
        return {"loss": s[0] / count, "acc": s[1] / count}


TASKS = {"classification": ClassificationTask}


def make_task(cfg: dict, device):
    if cfg["task"] not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {cfg['task']!r}")
    return TASKS[cfg["task"]](cfg, device)
