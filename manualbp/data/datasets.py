"""One entry point for every dataset the experiments use: ``load_dataset``.

Datasets come back as ``TensorData``: uint8 images (and labels or masks) held in memory, moved
to the training device once, and cut into batches by index, so that an epoch is never bound by
a Python data loader. The data root is ``--data-root``, else ``$MANUALBP_DATA``, else ``data/``
inside the project; nothing is downloaded unless asked (``download=True`` / ``--download``).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from manualbp.functional._checks import check_kwargs

from . import formats
from .formats import DataError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The data root: the argument, else $MANUALBP_DATA, else <project>/data."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("MANUALBP_DATA")
    return Path(env).expanduser() if env else PROJECT_ROOT / "data"


def cache_dir() -> Path:
    """Where decoded copies are cached ($MANUALBP_CACHE, else ~/.cache/manualbp)."""
    return Path(os.environ.get("MANUALBP_CACHE", Path.home() / ".cache" / "manualbp")).expanduser()


@dataclass
class TensorData:
    """A dataset held as tensors: ``x`` uint8 images (N, C, H, W); ``y`` int64 labels (N,) or uint8
    masks (N, 1, H, W). ``extra`` carries per-example side data (e.g. Mall head points)."""

    name: str
    x: torch.Tensor
    y: torch.Tensor
    classes: list | None = None
    extra: dict = field(default_factory=dict)

    def __len__(self):
        return self.x.shape[0]

    def to(self, device) -> "TensorData":
        return TensorData(self.name, self.x.to(device), self.y.to(device), self.classes, self.extra)

    def subset(self, idx) -> "TensorData":
        idx = torch.as_tensor(idx, dtype=torch.long)
        extra = {k: [v[i] for i in idx.tolist()] if isinstance(v, list) else v for k, v in self.extra.items()}
        return TensorData(self.name, self.x[idx.to(self.x.device)], self.y[idx.to(self.y.device)], self.classes,
                          extra)

    @staticmethod
    def as_float(x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return x.to(dtype).div_(255) if x.dtype == torch.uint8 else x.to(dtype)

    def batches(self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None,
                drop_last: bool = False, dtype: torch.dtype = torch.float32):
        """Yield (x in [0, 1] as ``dtype``, y) batches (labels as int64, 0/1 masks as ``dtype``); the
        order comes from ``generator`` (CPU) when shuffling."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        order = order.to(self.x.device)
        stop = n - n % batch_size if drop_last else n
        for i in range(0, stop, batch_size):
            idx = order[i:i + batch_size]
            y = self.y[idx]
            yield self.as_float(self.x[idx], dtype), (y.to(dtype) if y.dim() > 1 else y)   # masks are 0/1

    def num_batches(self, batch_size: int, drop_last: bool = False) -> int:
        return len(self) // batch_size if drop_last else -(-len(self) // batch_size)


def _missing(dataset, looked_at, how):
    return DataError(f"{dataset} not found: looked for {looked_at}. {how} Set the data root with --data-root "
                     f"or $MANUALBP_DATA.")


def _load_mnist_like(folder_name, title, tv_class, root, split, download):
    folder = root / folder_name / "raw"
    try:
        return formats.read_mnist_like(folder, split, title)
    except FileNotFoundError as e:
        if not download:
            raise _missing(title, e.args[0], f"Download it with --download (torchvision.datasets.{tv_class}) or copy "
                                             f"its four IDX files (.gz is fine) into {folder}.") from None
    import torchvision
    getattr(torchvision.datasets, tv_class)(str(root), train=split == "train", download=True)
    return formats.read_mnist_like(folder, split, title)


def _interleaved(xy):
    """An image-folder copy lists the images class by class, which no training order should follow
    (``data.shuffle=false`` would train on one class at a time); it is read in one fixed pseudo-random
    order (seed 0) instead, a stand-in for the release's class-mixed file order, which the copy does not keep."""
    x, y = xy
    order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))
    return x[order], y[order]


def _load_cifar10(root, split, download):
    title = "CIFAR-10"
    if (root / "cifar-10-batches-py").is_dir():
        return formats.read_cifar_batches(root / "cifar-10-batches-py", split, title)
    for folder in (root / "cifar10", root / "CIFAR10"):
        if (folder / split).is_dir():
            return _interleaved(_cached(f"cifar10-{split}", folder / split,
                                        lambda: formats.read_image_folder(folder / split, CIFAR10_CLASSES, title)))
    archive = root / "cifar10-jpeg.tar.gz"
    if archive.is_file():
        dest = cache_dir() / "cifar10-jpeg"
        if not (dest / split).is_dir():
            formats.extract_tar(archive, dest, title)
        return _interleaved(_cached(f"cifar10-{split}", archive,
                                    lambda: formats.read_image_folder(dest / split, CIFAR10_CLASSES, title)))
    if download:
        import torchvision
        torchvision.datasets.CIFAR10(str(root), train=split == "train", download=True)
        return formats.read_cifar_batches(root / "cifar-10-batches-py", split, title)
    raise _missing(title, f"{root}/cifar-10-batches-py/, {root}/cifar10/{split}/<class>/*.jpg or "
                   f"{root}/cifar10-jpeg.tar.gz", "Download it with --download (torchvision.datasets.CIFAR10).")


def _cached(key: str, source: Path, build):
    """Decode once, then reuse a tensor cache keyed by the source's path, size and mtime."""
    st = source.stat()
    tag = hashlib.sha1(f"{source.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:12]
    path = cache_dir() / f"{key}-{tag}.pt"
    if path.is_file():
        try:
            return torch.load(path, weights_only=True)
        except Exception:
            path.unlink(missing_ok=True)  # a corrupted cache is rebuilt
    out = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(out, tmp)
    os.replace(tmp, path)
    return out


def _load_stl10(root, split, download):
    folder = root / "stl10_binary"
    try:
        return formats.read_stl10(folder, split, "STL-10")
    except FileNotFoundError as e:
        if not download:
            raise _missing("STL-10", e.args[0], "Download it with --download (torchvision.datasets.STL10, 2.6 GB).") \
                from None
    import torchvision
    torchvision.datasets.STL10(str(root), split=split, download=True)
    return formats.read_stl10(folder, split, "STL-10")


def _split_perm(n: int, seed: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def _hold_out(name, x, y, split, validation):
    """The training split without its first ``validation`` images: TensorFlow's ``input_data`` keeps the
    first 5,000 of the 60,000 as a validation set and trains on the last 55,000 (the articles' code)."""
    if not isinstance(validation, int) or isinstance(validation, bool) or validation < 0 or (
            split == "train" and validation >= x.shape[0]):
        bound = f"[0, {x.shape[0] - 1}]" if split == "train" else ">= 0"
        raise DataError(f"{name}: data.options.validation must be an int in {bound} (the first training images "
                        f"held out; TensorFlow's input_data holds out 5000), got {validation!r}")
    if split == "train" and validation:
        return x[validation:], y[validation:]
    return x, y


def _mnist(root, split, download, limit, size, validation: int = 0):
    x, y = _load_mnist_like("MNIST", "MNIST", "MNIST", root, split, download)
    x, y = _hold_out("MNIST", x, y, split, validation)
    return x, y, [str(i) for i in range(10)], {}


def _fashion_mnist(root, split, download, limit, size, validation: int = 0):
    x, y = _load_mnist_like("FashionMNIST", "Fashion-MNIST", "FashionMNIST", root, split, download)
    x, y = _hold_out("Fashion-MNIST", x, y, split, validation)
    return x, y, ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                  "Ankle boot"], {}


def _cifar10(root, split, download, limit, size):
    x, y = _load_cifar10(root, split, download)
    return x, y, CIFAR10_CLASSES, {}


def _stl10(root, split, download, limit, size):
    x, y = _load_stl10(root, split, download)
    return x, y, ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"], {}


def _penn_fudan(root, split, download, limit, size, split_seed: int = 0, n_train: int = 85,
                mask_rule: str = "nearest"):
    """The fixed, seeded split: ``n_train`` (85) images for training, the rest (85) for testing.
    ``mask_rule``: ``"nearest"`` or the article's ``"article"`` (``formats.read_penn_fudan``)."""
    if mask_rule not in ("nearest", "article"):
        raise DataError(f"Penn-Fudan: data.options.mask_rule must be 'nearest' or 'article', got {mask_rule!r}")
    folder = root / "PennFudanPed"
    try:
        x, y, names = formats.read_penn_fudan(folder, size, "Penn-Fudan", mask_rule)
    except FileNotFoundError as e:
        if not download:
            raise _missing("Penn-Fudan", e.args[0], "Download it with --download (the official "
                           "PennFudanPed.zip) or unpack PennFudanPed.zip into the data root.") from None
        from torchvision.datasets.utils import download_and_extract_archive
        download_and_extract_archive("https://www.cis.upenn.edu/~jshi/ped_html/PennFudanPed.zip", str(root))
        x, y, names = formats.read_penn_fudan(folder, size, "Penn-Fudan", mask_rule)
    if not isinstance(n_train, int) or not 0 < n_train < x.shape[0]:
        raise DataError(f"Penn-Fudan: data.options.n_train must be an int between 1 and {x.shape[0] - 1} (the "
                        f"{x.shape[0]} images under {folder} are split into train and test), got {n_train!r}")
    perm = _split_perm(x.shape[0], split_seed)
    idx = perm[:n_train] if split == "train" else perm[n_train:]
    return x[idx], y[idx], None, {"names": [names[i] for i in idx.tolist()]}


def _mall(root, split, download, limit, size):
    folder = root / "mall_dataset"
    try:
        x, pts = formats.read_mall(folder, size, limit, "Mall")
    except FileNotFoundError as e:
        raise _missing("Mall", e.args[0], "Get the CUHK Mall dataset (mall_dataset.zip from its authors' page) "
                       "and unpack it into the data root; it has no automatic download.") from None
    return x, torch.tensor([len(p) for p in pts], dtype=torch.int64), None, {"points": pts}


# name -> loader(root, split, download, limit, size) -> (x uint8 (N, C, H, W), y, classes, extra).
# A new dataset is one function and one row here.
LOADERS = {
    "mnist": _mnist,
    "fashion_mnist": _fashion_mnist,
    "cifar10": _cifar10,
    "stl10": _stl10,
    "penn_fudan": _penn_fudan,   # images and binary masks (N, 1, size, size), 85 train / 85 test
    "mall": _mall,               # frames and head points (one split; y = people per frame)
}
DATASETS = tuple(LOADERS)


def load_dataset(name: str, split: str = "train", root=None, download: bool = False, limit: int | None = None,
                 size: int = 96, **options) -> TensorData:
    """Load ``name`` (one of ``DATASETS``) for ``split`` ("train" or "test"; Mall has one split).

    limit: keep a fixed random subset of ``limit`` examples (seed 0, in the original order; quick runs
    and tests). size: side length that
    Penn-Fudan and Mall images are resized to. options: a loader's own settings (Penn-Fudan:
    ``split_seed``, ``n_train``); unknown ones are refused.
    """
    if name not in LOADERS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {list(DATASETS)}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive int or None, got {limit!r}")
    check_kwargs(f"dataset {name!r}", LOADERS[name], options, skip=("root", "split", "download", "limit", "size"))
    try:
        x, y, classes, extra = LOADERS[name](data_root(root), split, download, limit, size, **options)
    except DataError:
        raise
    except Exception as e:
        if not download:
            raise
        # torchvision's downloaders raise URLError, RuntimeError, ... deep inside: one clear message instead
        raise DataError(f"{name}: the download into {data_root(root)} failed ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''}); check the network connection, or copy the "
                        "files into the data root by hand and run without --download") from None
    if limit is not None and limit < x.shape[0]:
        # a fixed random subset (seed 0) in the original order: image-folder copies are sorted by class,
        # so the first ``limit`` examples would hold only a few classes
        keep = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))[:limit].sort().values
        x, y = x[keep], y[keep]
        extra = {k: [v[i] for i in keep.tolist()] for k, v in extra.items()}
    return TensorData(name, x, y, classes, extra)

