"""Readers for the datasets' standard on-disk formats. Each returns uint8 tensors and raises
``DataError`` with the path it looked at when a file is missing or malformed."""
from __future__ import annotations

import gzip
import pickle
import tarfile
from pathlib import Path

import numpy as np
import torch


class DataError(RuntimeError):
    """Missing or corrupted data: the message names the dataset, the path and how to get it."""


def _first_existing(paths):
    for p in paths:
        if Path(p).is_file():
            return Path(p)
    return None


def read_idx(path: Path, dataset: str) -> torch.Tensor:
    """An IDX file (MNIST's format), plain or gzip-compressed, as a uint8 tensor."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{dataset}: cannot read {path} ({e}); the file is corrupted: delete it and "
                        "download it again") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{dataset}: {path} is not an IDX file of unsigned bytes (bad magic number); the file "
                        "is corrupted: delete it and download it again")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims))
    if len(data) - offset != expected:
        raise DataError(f"{dataset}: {path} holds {len(data) - offset} bytes of data but its header says "
                        f"{dims} ({expected}); the file is truncated or corrupted: download it again")
    return torch.from_numpy(np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims).copy())


def read_mnist_like(folder: Path, split: str, dataset: str):
    """(images (N, 1, 28, 28) uint8, labels (N,) int64) from torchvision's MNIST/raw layout."""
    prefix = "train" if split == "train" else "t10k"
    out = []
    for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        stem = folder / f"{prefix}-{kind}"
        path = _first_existing([stem, stem.with_name(stem.name + ".gz")])
        if path is None:
            raise FileNotFoundError(str(stem) + "[.gz]")
        out.append(read_idx(path, dataset))
    images, labels = out
    if images.dim() != 3 or labels.dim() != 1 or images.shape[0] != labels.shape[0]:
        raise DataError(f"{dataset}: images {tuple(images.shape)} and labels {tuple(labels.shape)} in {folder} "
                        "do not match; download the files again")
    if labels.numel() and int(labels.max()) > 9:
        raise DataError(f"{dataset}: labels in {folder} exceed 9; the label file is corrupted")
    return images[:, None], labels.long()


def read_cifar_batches(folder: Path, split: str, dataset: str):
    """torchvision's cifar-10-batches-py layout (python pickles)."""
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    xs, ys = [], []
    for n in names:
        p = folder / n
        if not p.is_file():
            raise FileNotFoundError(str(p))
        try:
            with open(p, "rb") as f:
                d = pickle.load(f, encoding="latin1")
            xs.append(np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(d["labels"], dtype=np.int64))
        except (pickle.UnpicklingError, KeyError, ValueError, EOFError) as e:
            raise DataError(f"{dataset}: {p} is not a CIFAR-10 batch ({e!r}); download it again") from None
    return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))


def read_image_folder(folder: Path, classes, dataset: str, size=None):
    """An image-folder layout ``folder/<class>/*.jpg|png`` in the given class order."""
    from PIL import Image, UnidentifiedImageError
    xs, ys = [], []
    for ci, c in enumerate(classes):
        d = folder / c
        if not d.is_dir():
            raise FileNotFoundError(str(d))
        for p in sorted(d.iterdir()):
            if p.suffix.lower() not in (".jpg", ".jpeg", ".png"):
                continue
            try:
                with Image.open(p) as im:
                    im = im.convert("RGB")
                    if size is not None and im.size != (size, size):
                        im = im.resize((size, size), Image.BILINEAR)
                    xs.append(np.asarray(im, dtype=np.uint8))
            except (UnidentifiedImageError, OSError) as e:
                raise DataError(f"{dataset}: cannot decode {p} ({e}); the file is corrupted") from None
            ys.append(ci)
    if not xs:
        raise DataError(f"{dataset}: no images under {folder}/<class>/")
    x = torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).contiguous()
    return x, torch.tensor(ys, dtype=torch.int64)


def extract_tar(archive: Path, dest: Path, dataset: str) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".partial")
    try:
        with tarfile.open(archive) as t:
            t.extractall(tmp, filter="data")
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"{dataset}: cannot extract {archive} ({e}); the archive is corrupted") from None
    for p in tmp.iterdir():
        p.rename(dest / p.name)
    tmp.rmdir()


def read_stl10(folder: Path, split: str, dataset: str):
    """STL-10's binary format (``stl10_binary/{train,test}_{X,y}.bin``): images stored column-major
    as uint8 (N, 3, 96, 96); labels 1..10 (returned as 0..9)."""
    xp, yp = folder / f"{split}_X.bin", folder / f"{split}_y.bin"
    for p in (xp, yp):
        if not p.is_file():
            raise FileNotFoundError(str(p))
    x = np.fromfile(xp, dtype=np.uint8)
    y = np.fromfile(yp, dtype=np.uint8)
    if x.size % (3 * 96 * 96) or x.size // (3 * 96 * 96) != y.size:
        raise DataError(f"{dataset}: {xp} holds {x.size} bytes, not {y.size} images of 3x96x96 as {yp} says; "
                        "the files are truncated or corrupted: download them again")
    if y.size and (y.min() < 1 or y.max() > 10):
        raise DataError(f"{dataset}: labels in {yp} must lie in 1..10; the file is corrupted")
    x = torch.from_numpy(x.reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2).copy())
    return x, torch.from_numpy(y.astype(np.int64) - 1)


def read_penn_fudan(folder: Path, size: int, dataset: str, mask_rule: str = "nearest"):
    """All Penn-Fudan images resized to size x size and their binary masks (any pedestrian).

    ``mask_rule``: ``"nearest"``: the instance map resized by nearest neighbour, > 0; ``"article"``: the
    sparse-filtering article's code: the instance map resized bilinearly, scaled to 0-255 by its
    maximum, > 10."""
    from PIL import Image, UnidentifiedImageError
    img_dir, mask_dir = folder / "PNGImages", folder / "PedMasks"
    if not img_dir.is_dir() or not mask_dir.is_dir():
        raise FileNotFoundError(f"{img_dir} and {mask_dir}")
    names = sorted(p.stem for p in img_dir.glob("*.png"))
    if not names:
        raise DataError(f"{dataset}: no PNG images in {img_dir}")
    xs, ms = [], []
    for n in names:
        mp = mask_dir / f"{n}_mask.png"
        if not mp.is_file():
            raise DataError(f"{dataset}: image {n}.png has no mask {mp}; the copy is incomplete")
        try:
            with Image.open(img_dir / f"{n}.png") as im, Image.open(mp) as mk:
                xs.append(np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR), dtype=np.uint8))
                if mask_rule == "article":
                    inst = np.asarray(mk, dtype=np.float32)
                    big = Image.fromarray(inst, mode="F").resize((size, size), Image.BILINEAR)
                    m = np.asarray(big, dtype=np.float64)
                    ms.append(255 * m / max(float(inst.max()), 1e-12) > 10)
                else:
                    ms.append(np.asarray(mk.resize((size, size), Image.NEAREST)) > 0)
        except (UnidentifiedImageError, OSError) as e:
            raise DataError(f"{dataset}: cannot decode {n} ({e}); the file is corrupted") from None
    x = torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).contiguous()
    m = torch.from_numpy(np.stack(ms).astype(np.uint8))[:, None]
    return x, m, names


def read_mall(folder: Path, size: int, limit: int | None, dataset: str):
    """Mall frames resized to size x size, their head points scaled to the resized grid, and counts."""
    import scipy.io
    from PIL import Image, UnidentifiedImageError
    gt = folder / "mall_gt.mat"
    frames = sorted((folder / "frames").glob("seq_*.jpg"))
    if not gt.is_file() or not frames:
        raise FileNotFoundError(f"{gt} and {folder / 'frames'}/seq_*.jpg")
    try:
        mat = scipy.io.loadmat(gt, squeeze_me=True, struct_as_record=False)
        locs = [np.atleast_2d(np.asarray(f.loc, dtype=np.float64)) for f in np.atleast_1d(mat["frame"])]
    except Exception as e:  # scipy raises several types for malformed files
        raise DataError(f"{dataset}: cannot read head points from {gt} ({e!r}); the file is corrupted") from None
    frames = frames[:limit] if limit else frames
    xs, pts = [], []
    for p in frames:
        i = int(p.stem.split("_")[1]) - 1
        try:
            with Image.open(p) as im:
                w, h = im.size
                xs.append(np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR), dtype=np.uint8))
        except (UnidentifiedImageError, OSError) as e:
            raise DataError(f"{dataset}: cannot decode {p} ({e}); the file is corrupted") from None
        loc = locs[i].reshape(-1, 2) if locs[i].size else np.zeros((0, 2))
        pts.append(torch.from_numpy(loc * np.array([size / w, size / h])).float())
    x = torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).contiguous()
    return x, pts
