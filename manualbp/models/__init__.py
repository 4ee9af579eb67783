"""The model families, built only from ``manualbp.nn`` modules."""
from manualbp.functional._checks import check_kwargs

from .cnn6 import CNN6
from .mlp import MLP
from .segae import ArticleSegAE, SegmentationAE

MODELS = {"mlp": MLP, "cnn6": CNN6, "segae": SegmentationAE, "segae_article": ArticleSegAE}


def build_model(spec: dict):
    """A model from a config section: {"name": "mlp" | "cnn6" | "segae" | "segae_article", **constructor arguments}."""
    spec = dict(spec)
    name = spec.pop("name", None)
    if name not in MODELS:
        raise ValueError(f"model.name must be one of {sorted(MODELS)}, got {name!r}")
    check_kwargs(f"model {name!r}", MODELS[name], spec)
    try:
        return MODELS[name](**spec)
    except TypeError as e:
        raise ValueError(f"model: {e} (check the model.* settings)") from None


__all__ = ["ArticleSegAE", "CNN6", "MLP", "MODELS", "SegmentationAE", "build_model"]
