"""``manualbp.data``: one entry point for every dataset the experiments use, ``load_dataset``.

- ``manualbp.data.datasets``: ``load_dataset``, the loaders by name, ``TensorData`` (uint8 tensors
  in memory, cut into batches by index), the data root and the cache of decoded copies;
- ``manualbp.data.formats``: readers of the on-disk formats (IDX, CIFAR batches and JPEG folders,
  Penn-Fudan, the Mall frames) and ``DataError``.

The data root is ``--data-root``, else ``$MANUALBP_DATA``, else ``data/`` inside the project;
nothing is downloaded unless asked (``download=True`` / ``--download``).
"""
from .datasets import DATASETS, LOADERS, TensorData, cache_dir, data_root, load_dataset
from .formats import DataError

__all__ = ["DATASETS", "LOADERS", "DataError", "TensorData", "cache_dir", "data_root", "load_dataset"]
