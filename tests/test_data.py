"""Data loaders: embedded digits, CIFAR python batches, ImageFolder trees, splits, loaders, errors."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from nasdeploy.errors import NasDeployError
from nasdeploy.train.data import (
    cutout,
    load_dataset,
    make_loader,
    random_crop,
    set_epoch,
    split_halves,
)


def test_digits_shapes_classes_and_split():
    train, info = load_dataset("digits", train=True)
    test, test_info = load_dataset("digits", train=False)
    assert (info.num_classes, info.channels, info.input_size) == (10, 3, 32)
    assert test_info == info
    assert (len(train), len(test)) == (1497, 300)
    x, y = train[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and 0 <= y < 10
    # three identical channels (replicated grey image)
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])
    # normalised with train statistics: mean ~0, std ~1 over the train split
    stack = torch.stack([train[i][0] for i in range(len(train))])
    assert abs(stack.mean().item()) < 1e-3 and abs(stack.std().item() - 1) < 1e-2
    # every class present in both splits, and the splits are disjoint sets of images
    assert set(int(train[i][1]) for i in range(len(train))) == set(range(10))
    assert set(int(test[i][1]) for i in range(len(test))) == set(range(10))
    train_keys = {stack[i].numpy().tobytes() for i in range(len(train))}
    assert not any(test[i][0].numpy().tobytes() in train_keys for i in range(len(test)))


def test_digits_resize_and_determinism():
    a, info = load_dataset("digits", train=False, input_size=16)
    b, _ = load_dataset("digits", train=False, input_size=16)
    assert info.input_size == 16 and a[3][0].shape == (3, 16, 16)
    assert torch.equal(a[3][0], b[3][0]) and a[3][1] == b[3][1]


def test_augmentation_repeatable_per_seed_and_epoch():
    ds, _ = load_dataset("digits", train=True, augment=True, cutout=8, seed=1)
    same, _ = load_dataset("digits", train=True, augment=True, cutout=8, seed=1)
    plain, _ = load_dataset("digits", train=True)
    assert torch.equal(ds[7][0], same[7][0])
    assert not torch.equal(ds[7][0], plain[7][0])
    first = ds[7][0]
    set_epoch(ds, 1)
    assert not torch.equal(ds[7][0], first)  # a new epoch draws new crops/cutouts
    set_epoch(ds, 0)
    assert torch.equal(ds[7][0], first)  # ... and the old epoch is reproduced exactly


def test_cutout_and_crop_geometry():
    g = torch.Generator().manual_seed(0)
    img = torch.ones(3, 32, 32)
    out = cutout(img, 16, g)
    zeros = (out[0] == 0).sum().item()
    assert 0 < zeros <= 16 * 16 and torch.equal(img, torch.ones(3, 32, 32))  # input untouched
    crop = random_crop(torch.ones(1, 8, 8), 2, torch.Generator().manual_seed(3))
    assert crop.shape == (1, 8, 8)


def test_split_halves_and_loader_are_seeded():
    ds, _ = load_dataset("digits", train=True)
    a, b = split_halves(ds, seed=0)
    assert len(a) == len(b) == 748
    assert not set(a.indices) & set(b.indices)
    a2, _ = split_halves(ds, seed=0)
    a3, _ = split_halves(ds, seed=1)
    assert a.indices == a2.indices and a.indices != a3.indices
    ys1 = torch.cat([y for _, y in make_loader(a, 100, True, seed=5)])
    ys2 = torch.cat([y for _, y in make_loader(a, 100, True, seed=5)])
    assert torch.equal(ys1, ys2)
    assert len(make_loader(a, 100, True, seed=5, drop_last=True)) == 7
    with pytest.raises(NasDeployError):
        make_loader(a, 0, True, seed=0)


def _write_cifar10(folder, per_batch=4):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=per_batch)]
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": labels, b"batch_label": name.encode()}, f)
    return rng


def test_cifar10_reader_official_layout(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar10(folder)
    # the parent folder is accepted too
    train, info = load_dataset(f"cifar10:{tmp_path}", train=True)
    test, _ = load_dataset(f"cifar10:{folder}", train=False)
    assert info.num_classes == 10 and info.input_size == 32
    assert (len(train), len(test)) == (20, 4)
    with open(folder / "data_batch_1", "rb") as f:
        raw = pickle.load(f, encoding="bytes")
    x, y = train[1]
    assert y == raw[b"labels"][1]
    # row-major official layout: first 1024 bytes are red, then green, then blue
    red = torch.tensor(raw[b"data"][1][:1024], dtype=torch.float32).view(32, 32) / 255.0
    assert torch.allclose(x[0], (red - 0.4914) / 0.2470, atol=1e-5)


def test_cifar100_reader(tmp_path):
    rng = np.random.default_rng(1)
    for name, n in (("train", 6), ("test", 3)):
        with open(tmp_path / name, "wb") as f:
            pickle.dump({b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         b"fine_labels": [int(v) for v in rng.integers(0, 100, n)],
                         b"coarse_labels": [0] * n}, f)
    train, info = load_dataset(f"cifar100:{tmp_path}", train=True, input_size=16)
    assert info.num_classes == 100 and len(train) == 6 and train[0][0].shape == (3, 16, 16)


def _write_png_tree(root, classes=("cat", "dog"), per_class=5, size=12):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / c / f"{i}.png")


def test_imagefolder_single_tree_split(tmp_path):
    _write_png_tree(tmp_path / "pets")
    train, info = load_dataset(f"imagefolder:{tmp_path / 'pets'}", train=True, input_size=16)
    test, _ = load_dataset(f"imagefolder:{tmp_path / 'pets'}", train=False, input_size=16)
    assert info.num_classes == 2 and info.input_size == 16
    assert (len(train), len(test)) == (8, 2)
    assert train[0][0].shape == (3, 16, 16)


def test_imagefolder_train_val_tree(tmp_path):
    _write_png_tree(tmp_path / "d" / "train", per_class=3)
    _write_png_tree(tmp_path / "d" / "val", per_class=2)
    train, info = load_dataset(f"imagefolder:{tmp_path / 'd'}", train=True, input_size=8, augment=True, cutout=2)
    test, _ = load_dataset(f"imagefolder:{tmp_path / 'd'}", train=False, input_size=8)
    assert (len(train), len(test), info.num_classes) == (6, 4, 2)
    assert train[5][0].shape == (3, 8, 8) and train[5][1] == 1


@pytest.mark.parametrize(
    "spec_template, message",
    [
        ("cifar10:{p}", "expected data_batch_1..5 and test_batch"),
        ("cifar100:{p}", "expected 'train' and 'test'"),
        ("imagefolder:{p}", "no ImageFolder tree"),
        ("cifar10:{p}/missing", "does not exist"),
        ("cifar10:", "needs a folder"),
        ("mnist", "unknown data spec"),
    ],
)
def test_wrong_paths_fail_with_one_line(tmp_path, spec_template, message):
    (tmp_path / "empty").mkdir()
    with pytest.raises(NasDeployError, match=message) as info:
        load_dataset(spec_template.format(p=tmp_path / "empty"), train=True)
    assert "\n" not in str(info.value)


def test_corrupt_cifar_batch_fails_clearly(tmp_path):
    _write_cifar10(tmp_path)
    (tmp_path / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(NasDeployError, match="cannot read CIFAR batch"):
        load_dataset(f"cifar10:{tmp_path}", train=False)
