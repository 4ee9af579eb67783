"""Tasks: what the shared loop needs from an experiment's kind of problem (data, model, the terms an
objective is made of, evaluation, metrics). Every loss is built from manual ops only, so training
never asks autograd to differentiate a forward.

A task names its objective terms (``TERMS``); a run, or each phase of a run, trains a weighted sum
of them (``objective``: a list of names, or {name: weight}). Metrics are accumulated on the device as
sums (no host sync per step) and turned into per-example values once per epoch.
"""
from __future__ import annotations

import torch

import manualbp.functional as MF
from manualbp.functional._checks import under_transform
from manualbp.data import load_dataset
from manualbp.models import build_model


def weight_penalties(model, name: str, lam: float, article_grad: bool = False) -> list:
    """lam * sum R(w) for every trained weight (the model's ``penalized_parameters()`` when it names them, else
    every parameter with more than one dimension); ``article_grad``:
    the articles' coded R' where it differs (``manualbp.functional.regularize``)."""
    if name == "none" or lam == 0:
        return []
    # a parameter inside torch.func.vmap (stacked episodes) reports requires_grad False: it is trained
    params = model.penalized_parameters() if hasattr(model, "penalized_parameters") else \
        [p for p in model.parameters() if p.dim() > 1]
    return [MF.regularize(p, name, lam, article_grad) for p in params if p.requires_grad or under_transform(p)]


class Task:
    """Base: data from ``cfg.data``, the model from ``cfg.model``, the objective as a weighted sum."""

    TERMS: tuple = ("data", "regularizer")
    DEFAULT_OBJECTIVE: tuple = ("data", "regularizer")
    METRICS: tuple = ("loss", "acc")     # per-example values summarize() returns

    def __init__(self, cfg: dict, device: torch.device):
        self.cfg, self.device = cfg, device
        self.dtype = getattr(torch, cfg.get("dtype", "float32"))

    @classmethod
    def objective_weights(cls, objective) -> dict:
        """{term: weight} from a list of term names or a dict; unknown terms are refused."""
        if objective is None:
            objective = cls.DEFAULT_OBJECTIVE
        weights = dict(objective) if isinstance(objective, dict) else {t: 1.0 for t in objective}
        unknown = sorted(set(weights) - set(cls.TERMS))
        if unknown or not weights:
            raise ValueError(f"objective {objective!r}: terms must be a non-empty list (or {{term: weight}}) of "
                             f"{list(cls.TERMS)}; unknown: {unknown}")
        return {t: float(w) for t, w in weights.items()}

    def load_data(self):
        d = self.cfg["data"]
        opts = dict(d["options"] or {})
        train = load_dataset(d["name"], "train", d["root"], d["download"], d["train_limit"], d["size"], **opts)
        test = load_dataset(d["name"], "test", d["root"], d["download"], d["test_limit"], d["size"], **opts)
        self.check_data(train)
        return train.to(self.device), test.to(self.device)

    def check_data(self, data) -> None:
        pass

    def build_model(self):
        return build_model(self.cfg["model"])

    def combine(self, terms: dict, weights: dict):
        """sum_t w_t * term_t through the manual ``add`` (one node, so the graph stays manual)."""
        names = [t for t in weights if terms.get(t) is not None]
        if len(names) == 1 and weights[names[0]] == 1.0:
            return terms[names[0]]
        return MF.add(*(terms[t] for t in names), weights=[weights[t] for t in names])

    def regularizer_terms(self, model) -> list:
        r = self.cfg["regularizer"]
        return weight_penalties(model, r["name"], r["lam"], r.get("article_grad", False))

    def regularizer(self, model):
        pens = self.regularizer_terms(model)
        if not pens:
            return None
        return pens[0] if len(pens) == 1 else MF.add(*pens)


def _one_hot(y, c, dtype):
    return (y[:, None] == torch.arange(c, device=y.device)).to(dtype)


# classification losses by name (config key ``loss``): (outputs, class indices) -> mean-over-the-batch loss
CLASSIFICATION_LOSSES = {
    "softmax_cross_entropy": lambda out, y: MF.softmax_cross_entropy(out, y),
    # the zca article's: 0.5 sum_k (y_k - t_k)^2 on the output activations, one-hot t, mean over the batch
    "sum_squared_error": lambda out, y: MF.sum_squared_error(out, _one_hot(y, out.shape[1], out.dtype)),
    # the optimizers article's TensorFlow cost: binary cross-entropy of the softmax, summed over classes,
    # averaged over the batch here (weight the data term by B for the sum over the batch)
    "softmax_binary_cross_entropy": lambda out, y: MF.softmax_binary_cross_entropy(
        out, _one_hot(y, out.shape[1], out.dtype), "mean"),
}


class ClassificationTask(Task):
    """A classification loss on class labels (``loss``: softmax cross-entropy by default; see
    ``CLASSIFICATION_LOSSES``) + the configured weight penalty; metrics loss and accuracy (argmax)."""

    def data_loss(self, out, y):
        return CLASSIFICATION_LOSSES[self.cfg["loss"]](out, y)

    def metric_loss(self, out, y, data_loss):
        """The loss reported as a metric: ``metric_loss`` when set (no gradient), else the trained one."""
        name = self.cfg.get("metric_loss")
        if name is None or name == self.cfg["loss"]:
            return data_loss.detach()
        with torch.no_grad():
            return CLASSIFICATION_LOSSES[name](out.detach(), y)

    def example_loss(self, out, y):
        """The data term of a batch (one example under the per-example instruments)."""
        return self.data_loss(out, y)

    def check_data(self, data):
        if data.y.dim() != 1:
            raise ValueError(f"task 'classification' needs class labels, but dataset {data.name!r} has targets of "
                             f"shape {tuple(data.y.shape[1:])} per example; use task=segmentation for masks")

    def loss(self, model, x, y, weights: dict):
        """Returns (objective, tensor [data loss * n, correct]) without a host-device sync (n = len(y))."""
        logits = model(x)
        data_loss = self.data_loss(logits, y)
        terms = {"data": data_loss if "data" in weights else None,
                 "regularizer": self.regularizer(model) if "regularizer" in weights else None}
        n = y.shape[0]
        correct = (logits.detach().argmax(1) == y).sum()
        return self.combine(terms, weights), torch.stack([self.metric_loss(logits, y, data_loss) * n,
                                                          correct.to(logits.dtype)])

    @torch.no_grad()
    def evaluate(self, model, data, batch_size: int) -> dict:
        model.eval()
        sums = torch.zeros(2, dtype=torch.float64, device=self.device)
        count = 0
        for x, y in data.batches(batch_size, dtype=self.dtype):
            logits = model(x)
            count += y.shape[0]
            sums += torch.stack([self.metric_loss(logits, y, self.data_loss(logits, y)).double() * y.shape[0],
                                 (logits.argmax(1) == y).sum().double()])
        model.train()
        return self.summarize(sums, count)

    @staticmethod
    def summarize(sums: torch.Tensor, count: int) -> dict:
        """Per-example means from the summed [loss * n, correct] over ``count`` examples."""
        s = sums.double().tolist()
        return {"loss": s[0] / count, "acc": s[1] / count}


def mask_counts(p: torch.Tensor, m: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """[true positives, false positives, false negatives, correct pixels] of masks p > threshold
    against 0/1 masks m, as float64 sums (on p's device)."""
    pred = p.detach() > threshold
    gt = m > 0.5
    tp = (pred & gt).sum()
    fp = (pred & ~gt).sum()
    fn = (~pred & gt).sum()
    return torch.stack([tp, fp, fn, (pred == gt).sum()]).double()


def mask_metrics(counts) -> dict:
    """IoU = TP / (TP + FP + FN), Dice = 2 TP / (2 TP + FP + FN) over all pixels of a split (the
    foreground class; 1.0 when both masks are empty)."""
    tp, fp, fn = counts[:3]
    union = tp + fp + fn
    return {"iou": tp / union if union else 1.0, "dice": 2 * tp / (2 * tp + fp + fn) if union else 1.0}


class SegmentationTask(Task):
    """Binary masks: the model returns (mask probabilities (N, 1, H, W), code z); the data term is the
    binary cross-entropy of the masks, ``mse`` their mean squared error, ``sparse_filtering`` the
    sparse-filtering cost of the code (for models built with a sparse activation). Metrics: loss, pixel
    accuracy (acc), IoU and Dice at 0.5."""

    TERMS = ("data", "regularizer", "sparse_filtering", "mse")
    METRICS = ("loss", "acc", "iou", "dice")

    def example_loss(self, out, y):
        """The data term (the masks' binary cross-entropy) of a batch (one example under the per-example
        instruments)."""
        return MF.binary_cross_entropy(out[0], y)

    def check_data(self, data):
        if data.y.dim() != 4 or data.y.shape[1] != 1:
            raise ValueError(f"task 'segmentation' needs masks of shape (N, 1, H, W), but dataset {data.name!r} has "
                             f"targets of shape {tuple(data.y.shape)}; use a segmentation dataset (penn_fudan)")

    def loss(self, model, x, y, weights: dict):
        """Returns (objective, [BCE * n, tp, fp, fn, correct pixels])."""
        p, z = model(x)
        data_loss = MF.binary_cross_entropy(p, y)
        terms = {"data": data_loss if "data" in weights else None,
                 "regularizer": self.regularizer(model) if "regularizer" in weights else None,
                 "sparse_filtering": model.sparse_cost(z) if "sparse_filtering" in weights else None,
                 "mse": MF.mse(p, y) if "mse" in weights else None}
        n = y.shape[0]
        stats = torch.cat([(data_loss.detach() * n).double()[None], mask_counts(p, y)])
        return self.combine(terms, weights), stats

    @torch.no_grad()
    def evaluate(self, model, data, batch_size: int) -> dict:
        model.eval()
        sums = torch.zeros(5, dtype=torch.float64, device=self.device)
        count = 0
        for x, y in data.batches(batch_size, dtype=self.dtype):
            p, _ = model(x)
            count += y.shape[0]
            sums += torch.cat([(MF.binary_cross_entropy(p, y) * y.shape[0]).double()[None], mask_counts(p, y)])
        model.train()
        return self.summarize(sums, count)

    @staticmethod
    def summarize(sums: torch.Tensor, count: int) -> dict:
        s = sums.double().tolist()
        # every pixel is correct, a false positive or a false negative
        return {"loss": s[0] / count, "acc": s[4] / (s[4] + s[2] + s[3]), **mask_metrics(s[1:4])}


TASKS = {"classification": ClassificationTask, "segmentation": SegmentationTask}


def task_class(name: str):
    if name not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {name!r}")
    return TASKS[name]


def make_task(cfg: dict, device):
    return task_class(cfg["task"])(cfg, device)
