"""Every loader on small files written in the real formats, and the bad-data messages."""
import gzip
import os

import numpy as np
import pytest
import torch

from manualbp.data import DataError, data_root, load_dataset

from .fakedata import (write_cifar_batches, write_cifar_jpeg_archive, write_image_folder, write_mall, write_mnist_like,
                       write_penn_fudan, write_stl10)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MANUALBP_CACHE", str(tmp_path / "cache"))


@pytest.mark.parametrize("name,folder,gz", [("mnist", "MNIST", True), ("fashion_mnist", "FashionMNIST", False)])
def test_mnist_like_round_trip(tmp_path, name, folder, gz):
    ref = write_mnist_like(tmp_path, folder, gz=gz)
    for split, key in (("train", "train"), ("test", "t10k")):
        d = load_dataset(name, split, root=tmp_path)
        x, y = ref[key]
        assert d.x.dtype == torch.uint8 and d.x.shape == (len(y), 1, 28, 28)
        assert torch.equal(d.x[:, 0], torch.from_numpy(x)) and torch.equal(d.y, torch.from_numpy(y).long())
    assert load_dataset(name, "train", root=tmp_path, limit=7).x.shape[0] == 7


def test_cifar10_from_pickled_batches(tmp_path):
    ref = write_cifar_batches(tmp_path)
    tr, te = load_dataset("cifar10", "train", tmp_path), load_dataset("cifar10", "test", tmp_path)
    assert tr.x.shape == (30, 3, 32, 32) and te.x.shape == (6, 3, 32, 32)
    assert torch.equal(te.x, torch.from_numpy(ref["test_batch"][0]))
    assert torch.equal(tr.y[:6], torch.from_numpy(ref["data_batch_1"][1]))


def test_cifar10_from_image_folder(tmp_path):
    ref = write_image_folder(tmp_path / "cifar10" / "test")   # PNG: lossless, so pixels compare exactly
    d = load_dataset("cifar10", "test", tmp_path)
    assert d.x.shape == (20, 3, 32, 32)
    # read in one fixed class-mixed order (the copy lists the images class by class)
    order = torch.randperm(20, generator=torch.Generator().manual_seed(0))
    assert torch.equal(d.y, torch.tensor([c for _, c in ref])[order])
    assert d.y[:10].unique().numel() > 3
    i = int(order[3])
    assert torch.equal(d.x[3].permute(1, 2, 0), torch.from_numpy(ref[i][0]))
    assert torch.equal(load_dataset("cifar10", "test", tmp_path).x, d.x)   # second load from the cache


def test_cifar10_from_jpeg_archive(tmp_path):
    write_cifar_jpeg_archive(tmp_path, tmp_path / "src")
    d = load_dataset("cifar10", "train", tmp_path / "")
    assert d.x.shape == (10, 3, 32, 32) and sorted(d.y.tolist()) == list(range(10))


def test_stl10_binary_format(tmp_path):
    ref = write_stl10(tmp_path)
    d = load_dataset("stl10", "train", tmp_path)
    assert d.x.shape == (4, 3, 96, 96)
    assert torch.equal(d.x, torch.from_numpy(ref["train"][0]))
    assert torch.equal(d.y, torch.from_numpy(ref["train"][1].astype(np.int64) - 1))


def test_penn_fudan_resized_binary_masks_and_seeded_split(tmp_path):
    write_penn_fudan(tmp_path, n=10)
    tr = load_dataset("penn_fudan", "train", tmp_path, size=32, n_train=5)
    te = load_dataset("penn_fudan", "test", tmp_path, size=32, n_train=5)
    assert tr.x.shape == (5, 3, 32, 32) and tr.y.shape == (5, 1, 32, 32)
    assert set(tr.y.unique().tolist()) == {0, 1}     # both instances are foreground
    assert not set(tr.extra["names"]) & set(te.extra["names"])
    assert tr.extra["names"] == load_dataset("penn_fudan", "train", tmp_path, size=32, n_train=5).extra["names"]
    assert tr.extra["names"] != load_dataset("penn_fudan", "train", tmp_path, size=32, n_train=5,
                                             split_seed=1).extra["names"]


def test_penn_fudan_article_mask_rule(tmp_path):
    """mask_rule="article": the instance map resized bilinearly, scaled to 0-255 by its maximum, > 10:
    the masks cover the nearest-neighbour ones and their blended borders."""
    write_penn_fudan(tmp_path, n=6)
    near = load_dataset("penn_fudan", "train", tmp_path, size=32, n_train=3)
    art = load_dataset("penn_fudan", "train", tmp_path, size=32, n_train=3, mask_rule="article")
    assert set(art.y.unique().tolist()) <= {0, 1} and art.extra["names"] == near.extra["names"]
    assert art.y.sum() >= near.y.sum() and not torch.equal(art.y, near.y)
    with pytest.raises(DataError, match="mask_rule must be 'nearest' or 'article'"):
        load_dataset("penn_fudan", "train", tmp_path, size=32, mask_rule="bilinear")


def test_mall_frames_and_scaled_head_points(tmp_path):
    frames = write_mall(tmp_path, n_frames=4)
    d = load_dataset("mall", "test", tmp_path, size=32)
    assert d.x.shape == (4, 3, 32, 32) and d.y.tolist() == [1, 2, 3, 4]
    loc = frames[0, 2]["loc"]
    torch.testing.assert_close(d.extra["points"][2], torch.from_numpy(loc * [32 / 64, 32 / 48]).float())
    assert load_dataset("mall", "test", tmp_path, size=32, limit=2).y.tolist() == [1, 2]


def test_batches_cover_the_data_once_as_floats(tmp_path):
    write_mnist_like(tmp_path, "MNIST")
    d = load_dataset("mnist", "train", tmp_path)
    seen = []
    for x, y in d.batches(50, shuffle=True, generator=torch.Generator().manual_seed(0)):
        assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
        seen.append(y)
    assert torch.equal(torch.cat(seen).sort().values, d.y.sort().values)
    assert d.num_batches(50) == 3


def test_data_root_flag_env_and_default(tmp_path, monkeypatch):
    monkeypatch.delenv("MANUALBP_DATA", raising=False)
    assert data_root().name == "data" and data_root().parent.joinpath("manualbp").is_dir()
    monkeypatch.setenv("MANUALBP_DATA", str(tmp_path))
    assert data_root() == tmp_path
    assert data_root("/x/y") == type(tmp_path)("/x/y")


# ------------------------------------------------------------------ bad data

@pytest.mark.parametrize("name,title,hint", [
    ("mnist", "MNIST", "MNIST/raw"), ("fashion_mnist", "Fashion-MNIST", "FashionMNIST/raw"),
    ("cifar10", "CIFAR-10", "cifar-10-batches-py"), ("stl10", "STL-10", "stl10_binary"),
    ("penn_fudan", "Penn-Fudan", "PennFudanPed"), ("mall", "Mall", "mall_dataset")])
def test_missing_data_names_dataset_path_and_remedy(tmp_path, name, title, hint):
    with pytest.raises(DataError) as e:
        load_dataset(name, "test", tmp_path / "empty")
    msg = str(e.value)
    assert msg.startswith(f"{title} not found") and hint in msg and str(tmp_path / "empty") in msg
    assert "--data-root" in msg
    assert not (tmp_path / "empty").exists()        # nothing downloaded or created silently


def test_truncated_idx_file(tmp_path):
    write_mnist_like(tmp_path, "MNIST", gz=False)
    p = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"MNIST: .*train-images-idx3-ubyte holds .* truncated or corrupted"):
        load_dataset("mnist", "train", tmp_path)


def test_corrupted_gzip_and_bad_magic(tmp_path):
    write_mnist_like(tmp_path, "FashionMNIST")
    p = tmp_path / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte.gz"
    p.write_bytes(p.read_bytes()[:20])
    with pytest.raises(DataError, match=r"Fashion-MNIST: cannot read .*t10k-labels-idx1-ubyte.gz"):
        load_dataset("fashion_mnist", "test", tmp_path)
    with gzip.open(p, "wb") as f:
        f.write(b"\x01\x02\x03\x04garbage")
    with pytest.raises(DataError, match=r"bad magic number"):
        load_dataset("fashion_mnist", "test", tmp_path)


def test_corrupted_image_and_stl_size(tmp_path):
    write_penn_fudan(tmp_path, n=3)
    (tmp_path / "PennFudanPed" / "PNGImages" / "Ped00001.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"Penn-Fudan: cannot decode Ped00001"):
        load_dataset("penn_fudan", "train", tmp_path, size=16, n_train=2)
    write_stl10(tmp_path)
    with open(tmp_path / "stl10_binary" / "test_X.bin", "ab") as f:
        f.write(b"\x00" * 10)
    with pytest.raises(DataError, match=r"STL-10: .*test_X.bin holds"):
        load_dataset("stl10", "test", tmp_path)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
        load_dataset("imagenet")
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        load_dataset("mnist", "val")


REAL = os.environ.get("MANUALBP_DATA")


@pytest.mark.skipif(not REAL or not os.path.isdir(os.path.join(REAL or "", "FashionMNIST")),
                    reason="real Fashion-MNIST not available (set MANUALBP_DATA)")
def test_real_fashion_mnist():
    tr, te = load_dataset("fashion_mnist", "train"), load_dataset("fashion_mnist", "test")
    assert len(tr) == 60000 and len(te) == 10000
    assert tr.y.bincount().tolist() == [6000] * 10


def test_penn_fudan_split_larger_than_the_data_is_named(tmp_path):
    from .fakedata import write_penn_fudan
    write_penn_fudan(tmp_path, n=10)
    with pytest.raises(DataError, match=r"n_train must be an int between 1 and 9 \(the 10 images"):
        load_dataset("penn_fudan", "test", tmp_path, n_train=85)
