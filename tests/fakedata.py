"""Write small datasets in the real on-disk formats (so the real loaders are exercised in CI)."""
from __future__ import annotations

import gzip
import pickle
import tarfile
from pathlib import Path

import numpy as np


def idx_bytes(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def write_mnist_like(root: Path, folder: str, n_train=120, n_test=40, gz=True, seed=0, separable=True):
    """Images whose mean brightness pattern depends on the label, so a model can learn them."""
    rng = np.random.default_rng(seed)
    raw = Path(root) / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        y = rng.integers(0, 10, n).astype(np.uint8)
        x = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        if separable:
            for i, c in enumerate(y):
                x[i, 2 * c: 2 * c + 3, :] = 250
        for kind, arr in (("images-idx3-ubyte", x), ("labels-idx1-ubyte", y)):
            data = idx_bytes(arr)
            name = raw / f"{prefix}-{kind}"
            if gz:
                with gzip.open(str(name) + ".gz", "wb") as f:
                    f.write(data)
            else:
                name.write_bytes(data)
        out[prefix] = (x, y)
    return out


def write_cifar_batches(root: Path, n_per_batch=6, seed=0):
    rng = np.random.default_rng(seed)
    d = Path(root) / "cifar-10-batches-py"
    d.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = rng.integers(0, 256, (n_per_batch, 3072)).astype(np.uint8)
        y = rng.integers(0, 10, n_per_batch).tolist()
        with open(d / name, "wb") as f:
            pickle.dump({"data": x, "labels": y}, f)
        out[name] = (x.reshape(-1, 3, 32, 32), np.array(y))
    return out


CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_image_folder(folder: Path, per_class=2, size=32, seed=0, ext=".png"):
    from PIL import Image
    rng = np.random.default_rng(seed)
    out = []
    for ci, c in enumerate(CIFAR_CLASSES):
        (folder / c).mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            img = rng.integers(0, 256, (size, size, 3)).astype(np.uint8)
            Image.fromarray(img).save(folder / c / f"{k:04d}{ext}")
            out.append((img, ci))
    return out


def write_cifar_jpeg_archive(root: Path, tmp: Path, per_class=1):
    src = tmp / "cifar_src"
    write_image_folder(src / "train", per_class, ext=".jpg")
    write_image_folder(src / "test", per_class, seed=1, ext=".jpg")
    with tarfile.open(Path(root) / "cifar10-jpeg.tar.gz", "w:gz") as t:
        t.add(src / "train", arcname="train")
        t.add(src / "test", arcname="test")


def write_stl10(root: Path, n_train=4, n_test=3, seed=0):
    rng = np.random.default_rng(seed)
    d = Path(root) / "stl10_binary"
    d.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, (n, 3, 96, 96)).astype(np.uint8)   # logical (N, C, H, W)
        y = rng.integers(1, 11, n).astype(np.uint8)
        x.transpose(0, 1, 3, 2).tofile(d / f"{split}_X.bin")           # stored column-major, as STL-10
        y.tofile(d / f"{split}_y.bin")
        out[split] = (x, y)
    return out


def write_penn_fudan(root: Path, n=10, seed=0):
    from PIL import Image
    rng = np.random.default_rng(seed)
    d = Path(root) / "PennFudanPed"
    (d / "PNGImages").mkdir(parents=True, exist_ok=True)
    (d / "PedMasks").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        h, w = rng.integers(60, 90, 2)
        Image.fromarray(rng.integers(0, 256, (h, w, 3)).astype(np.uint8)).save(d / "PNGImages" / f"Ped{i:05d}.png")
        mask = np.zeros((h, w), np.uint8)
        mask[h // 4: h // 2, w // 4: w // 2] = 1
        mask[h // 2:, w // 2:] = 2          # a second pedestrian instance
        Image.fromarray(mask, mode="L").save(d / "PedMasks" / f"Ped{i:05d}_mask.png")


def write_mall(root: Path, n_frames=5, seed=0):
    import scipy.io
    from PIL import Image
    rng = np.random.default_rng(seed)
    d = Path(root) / "mall_dataset"
    (d / "frames").mkdir(parents=True, exist_ok=True)
    frames = np.empty((1, n_frames), dtype=object)
    counts = np.zeros((n_frames, 1), np.uint8)
    for i in range(n_frames):
        Image.fromarray(rng.integers(0, 256, (48, 64, 3)).astype(np.uint8)).save(d / "frames" / f"seq_{i + 1:06d}.jpg")
        k = i + 1
        loc = np.column_stack([rng.uniform(0, 64, k), rng.uniform(0, 48, k)])
        frames[0, i] = {"loc": loc}
        counts[i, 0] = k
    scipy.io.savemat(d / "mall_gt.mat", {"frame": frames, "count": counts})
    return frames
