"""Datasets for search and retraining: embedded digits, CIFAR-10/100 python batches, ImageFolder trees.

``split:TRAIN,VAL:SPEC`` re-splits SPEC's training split (a fixed permutation, whatever ``--seed``): the first VAL
images are a validation split (:func:`load_validation`), the next TRAIN the training split, and the training images
left over join SPEC's test split. ``split:360,360:digits`` trains on 360 digits, keeps 360 for model selection
and tests on 1,077 (the 300 test digits and 777 left over): a data-poor setting with a test set 3.6x the
default's (``benchmarks/search_vs_random.py``). ``split:TRAIN,VAL,TEST:SPEC`` keeps only the first TEST of those test
images (the same training and validation images): a cheaper per-epoch test curve for a caller that scores the
whole test split itself at the end.

Every dataset yields ``(image, label)`` with ``image`` a normalised float tensor ``C×H×W``.
Augmentation follows the DARTS/ICDARTS retraining recipe (dissertation §3.4.2): random crop with
zero padding (``input_size // 8``), horizontal flip, then cutout of side ``cutout`` after
normalisation (DeVries & Taylor, 2017). **Digits are never flipped** (a mirrored 2, 3, 7 is not the
same digit); they get crop and cutout only.

Augmentation randomness depends only on ``(seed, epoch, index)``: call :func:`set_epoch` before
each epoch and a run is repeatable, whatever order the loader visits the samples in, and a resumed
run sees exactly the same augmented images as an uninterrupted one.
"""

from __future__ import annotations

import functools
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset

from nasdeploy.errors import NasDeployError

DIGITS_TRAIN = 1497
DIGITS_TEST = 300
DIGITS_SPLIT_SEED = 0  # fixed: the digits train/test split never changes with --seed
IMAGEFOLDER_TEST_SHARE = 0.2

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
DATA_SPECS = "digits | cifar10:PATH | cifar100:PATH | imagefolder:PATH | split:TRAIN,VAL:SPEC"
SPLIT_PREFIX = "split:"


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    channels: int
    input_size: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "num_classes": self.num_classes, "channels": self.channels, "input_size": self.input_size}


@dataclass(frozen=True)
class Augment:
    """The retraining augmentation: crop with padding, optional flip, cutout (0 = off)."""

    padding: int = 4
    flip: bool = True
    cutout: int = 0


# ---------------------------------------------------------------- augmentation (pure functions)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one sample's augmentation in one epoch (splitmix-style mixing)."""
    x = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + index * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    x ^= x >> 31
    x = (x * 0xD6E8FEB86659FD93) & 0xFFFFFFFFFFFFFFFF
    x ^= x >> 32
    return x & 0x7FFFFFFFFFFFFFFF


def random_crop(image: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad by ``padding`` on each side and crop back to the original size at a random offset."""
    if padding <= 0:
        return image
    _, h, w = image.shape
    padded = F.pad(image, (padding, padding, padding, padding))
    top, left = torch.randint(0, 2 * padding + 1, (2,), generator=generator).tolist()
    return padded[:, top : top + h, left : left + w]


def random_flip(image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    if torch.rand((), generator=generator).item() < 0.5:
        return image.flip(-1)
    return image


def cutout(image: torch.Tensor, length: int, generator: torch.Generator) -> torch.Tensor:
    """Zero a ``length``×``length`` square centred at a uniform pixel, clipped at the border (DeVries & Taylor)."""
    if length <= 0:
        return image
    _, h, w = image.shape
    cy = int(torch.randint(0, h, (), generator=generator))
    cx = int(torch.randint(0, w, (), generator=generator))
    y0, y1 = max(cy - length // 2, 0), min(cy + length // 2, h)
    x0, x1 = max(cx - length // 2, 0), min(cx + length // 2, w)
    image = image.clone()
    image[:, y0:y1, x0:x1] = 0.0
    return image


def resize(image: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of ``C×H×W`` (or ``N×C×H×W``) to ``size``×``size``."""
    if image.shape[-1] == size and image.shape[-2] == size:
        return image
    batched = image if image.dim() == 4 else image.unsqueeze(0)
    out = F.interpolate(batched, size=(size, size), mode="bilinear", align_corners=False)
    return out if image.dim() == 4 else out[0]


# ---------------------------------------------------------------- dataset classes


class ImageDataset(Dataset):
    """Images in ``[0, 1]`` (or uint8 ``0..255``) held in memory or loaded lazily, normalised on access.

    ``images`` is either a tensor ``N×C×H×W`` or a callable ``index -> C×H×W float tensor in [0,1]``.
    """

    def __init__(
        self,
        images: torch.Tensor | Callable[[int], torch.Tensor],
        labels: torch.Tensor,
        input_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        augment: Augment | None = None,
        seed: int = 0,
    ):
        self.images = images
        self.labels = labels.long()
        self.input_size = input_size
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)
        self.augment = augment
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.labels)

    def raw_image(self, index: int) -> torch.Tensor:
        if callable(self.images):
            image = self.images(index)
        else:
            image = self.images[index]
        if image.dtype == torch.uint8:
            image = image.float() / 255.0
        return resize(image.float(), self.input_size)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.raw_image(index)
        if self.augment is not None:
            generator = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, index))
            image = random_crop(image, self.augment.padding, generator)
            if self.augment.flip:
                image = random_flip(image, generator)
            image = (image - self.mean) / self.std
            image = cutout(image, self.augment.cutout, generator)
        else:
            image = (image - self.mean) / self.std
        return image.contiguous(), int(self.labels[index])


def set_epoch(dataset: Dataset, epoch: int) -> None:
    """Tell the (possibly wrapped) dataset which epoch it is, so augmentation reseeds per epoch."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)


# ---------------------------------------------------------------- loaders per spec


def _augment_for(augment: bool, cutout_length: int, input_size: int, flip: bool) -> Augment | None:
    if not augment:
        return None
    return Augment(padding=max(input_size // 8, 1), flip=flip, cutout=cutout_length)


@functools.lru_cache(maxsize=1)
def digits_arrays() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """scikit-learn's 8×8 digits upsampled to 3×32×32 in [0,1], split 1497/300 with a fixed seed."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)  # N×1×8×8
    images = resize(images, 32).clamp(0.0, 1.0).repeat(1, 3, 1, 1)
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(DIGITS_SPLIT_SEED))
    train_idx, test_idx = order[:DIGITS_TRAIN], order[DIGITS_TRAIN : DIGITS_TRAIN + DIGITS_TEST]
    return images[train_idx], labels[train_idx], images[test_idx], labels[test_idx]


def load_digits_dataset(train: bool, input_size: int | None, augment: bool, cutout_length: int, seed: int):
    train_x, train_y, test_x, test_y = digits_arrays()
    mean = tuple(train_x.mean(dim=(0, 2, 3)).tolist())
    std = tuple(train_x.std(dim=(0, 2, 3)).tolist())
    size = input_size or 32
    images, labels = (train_x, train_y) if train else (test_x, test_y)
    dataset = ImageDataset(images, labels, size, mean, std, _augment_for(augment, cutout_length, size, flip=False), seed)
    return dataset, DatasetInfo("digits", 10, 3, size)


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="bytes")
    except Exception as exc:
        raise NasDeployError(f"cannot read CIFAR batch {path} ({exc.__class__.__name__}); re-extract the official python archive") from None


def _cifar_folder(path: Path, inner: str, required: list[str]) -> Path | None:
    for folder in (path, path / inner):
        if all((folder / name).is_file() for name in required):
            return folder
    return None


def read_cifar_batches(files: list[Path], label_key: bytes) -> tuple[torch.Tensor, torch.Tensor]:
    """Official python-pickle CIFAR batches -> uint8 ``N×3×32×32`` images and labels."""
    images, labels = [], []
    for file in files:
        batch = _unpickle(file)
        if b"data" not in batch or label_key not in batch:
            raise NasDeployError(
                f"CIFAR batch {file} lacks b'data' or {label_key!r}; pass the official python version of the dataset"
            )
        images.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch[label_key], dtype=np.int64))
    return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))


def load_cifar_dataset(kind: str, path: Path, train: bool, input_size: int | None, augment: bool, cutout_length: int, seed: int):
    if kind == "cifar10":
        required = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        folder = _cifar_folder(path, "cifar-10-batches-py", required)
        if folder is None:
            raise NasDeployError(
                f"no CIFAR-10 python batches in {path}: expected data_batch_1..5 and test_batch "
                "(the 'cifar-10-batches-py' folder of the official python archive)"
            )
        files = [folder / f"data_batch_{i}" for i in range(1, 6)] if train else [folder / "test_batch"]
        images, labels = read_cifar_batches(files, b"labels")
        num_classes, mean, std = 10, CIFAR10_MEAN, CIFAR10_STD
    else:
        folder = _cifar_folder(path, "cifar-100-python", ["train", "test"])
        if folder is None:
            raise NasDeployError(
                f"no CIFAR-100 python files in {path}: expected 'train' and 'test' "
                "(the 'cifar-100-python' folder of the official python archive)"
            )
        images, labels = read_cifar_batches([folder / ("train" if train else "test")], b"fine_labels")
        num_classes, mean, std = 100, CIFAR100_MEAN, CIFAR100_STD
    size = input_size or 32
    dataset = ImageDataset(images, labels, size, mean, std, _augment_for(augment, cutout_length, size, flip=True), seed)
    return dataset, DatasetInfo(kind, num_classes, 3, size)


def _image_folder(root: Path):
    from torchvision.datasets import ImageFolder

    try:
        return ImageFolder(str(root))
    except (FileNotFoundError, OSError) as exc:
        raise NasDeployError(
            f"no ImageFolder tree in {root}: expected one sub-folder per class holding images ({exc}); "
            "or PATH/train and PATH/val"
        ) from None


def _pil_to_tensor(path: str) -> torch.Tensor:
    from PIL import Image

    with Image.open(path) as img:
        array = np.array(img.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array).permute(2, 0, 1).float() / 255.0


def load_imagefolder_dataset(path: Path, train: bool, input_size: int | None, augment: bool, cutout_length: int, seed: int):
    """PATH/train + PATH/val (or PATH/test) when present; otherwise one tree split 80/20 deterministically."""
    if not path.is_dir():
        raise NasDeployError(f"ImageFolder path {path} is not a folder: expected PATH/<class>/<image> or PATH/train and PATH/val")
    held_out = next((path / name for name in ("val", "test") if (path / name).is_dir()), None)
    if (path / "train").is_dir() and held_out is not None:
        train_tree, test_tree = _image_folder(path / "train"), _image_folder(held_out)
        if train_tree.classes != test_tree.classes:
            raise NasDeployError(
                f"class folders differ between {path / 'train'} and {held_out}; give both the same class sub-folders"
            )
        tree = train_tree if train else test_tree
        samples = tree.samples
    else:
        tree = _image_folder(path)
        order = torch.randperm(len(tree.samples), generator=torch.Generator().manual_seed(DIGITS_SPLIT_SEED)).tolist()
        n_test = max(1, int(round(len(order) * IMAGEFOLDER_TEST_SHARE)))
        chosen = order[n_test:] if train else order[:n_test]
        samples = [tree.samples[i] for i in sorted(chosen)]
    labels = torch.tensor([label for _, label in samples], dtype=torch.long)
    files = [file for file, _ in samples]
    size = input_size or 224
    dataset = ImageDataset(
        lambda i: _pil_to_tensor(files[i]), labels, size, IMAGENET_MEAN, IMAGENET_STD,
        _augment_for(augment, cutout_length, size, flip=True), seed,
    )
    return dataset, DatasetInfo(f"imagefolder:{path.name}", len(tree.classes), 3, size)


def load_dataset(
    spec: str,
    train: bool,
    input_size: int | None = None,
    augment: bool = False,
    cutout: int = 0,
    seed: int = 0,
) -> tuple[Dataset, DatasetInfo]:
    """The train or test split named by ``spec`` (see module docstring), resized to ``input_size``.

    ``input_size`` defaults to 32 (digits, CIFAR) or 224 (ImageFolder).
    """
    if str(spec).startswith(SPLIT_PREFIX):
        return load_split_dataset(spec, train, input_size, augment, cutout, seed)
    name, sep, raw_path = str(spec).partition(":")
    name = name.strip().lower()
    if name == "digits" and not sep:
        return load_digits_dataset(train, input_size, augment, cutout, seed)
    if name in ("cifar10", "cifar100", "imagefolder"):
        if not raw_path:
            raise NasDeployError(f"data spec {spec!r} needs a folder, e.g. {name}:/data/{name}")
        path = Path(raw_path).expanduser()
        if not path.exists():
            raise NasDeployError(f"data folder {path} does not exist; pass {name}:PATH with the extracted dataset folder")
        if name == "imagefolder":
            return load_imagefolder_dataset(path, train, input_size, augment, cutout, seed)
        return load_cifar_dataset(name, path, train, input_size, augment, cutout, seed)
    raise NasDeployError(f"unknown data spec {spec!r}; use {DATA_SPECS}")


# ---------------------------------------------------------------- split:TRAIN,VAL:SPEC


@dataclass(frozen=True)
class SplitSpec:
    train: int
    val: int
    base: str
    test: int | None = None  # cap on the test split (None: all of it)


def parse_split_spec(spec: str) -> SplitSpec:
    """``split:TRAIN,VAL[,TEST]:SPEC`` -> its sizes and the base spec (NasDeployError naming the form when malformed)."""
    sizes, sep, base = str(spec)[len(SPLIT_PREFIX):].partition(":")
    parts = sizes.split(",")
    if not sep or not base or len(parts) not in (2, 3) or not all(p.strip().isdigit() for p in parts):
        raise NasDeployError(f"data spec {spec!r} is not split:TRAIN,VAL[,TEST]:SPEC with image counts, e.g. split:360,360:digits")
    train, val = int(parts[0]), int(parts[1])
    test = int(parts[2]) if len(parts) == 3 else None
    if train < 1:
        raise NasDeployError(f"data spec {spec!r} trains on no image; give TRAIN >= 1, e.g. split:360,360:digits")
    if base.startswith(SPLIT_PREFIX):
        raise NasDeployError(f"data spec {spec!r} splits a split; give one split:TRAIN,VAL: prefix")
    return SplitSpec(train, val, base, test)


class SplitPart(Subset):
    """Part of a dataset that still answers ``mean`` and ``std`` (the search context's self-supervised views read them)."""

    @property
    def mean(self) -> torch.Tensor:
        return self.dataset.mean

    @property
    def std(self) -> torch.Tensor:
        return self.dataset.std


def split_indices(n: int, split: SplitSpec, spec: str) -> tuple[list[int], list[int], list[int]]:
    """(validation, training, left-over) indices of the base training split's ``n`` images, fixed permutation."""
    if split.train + split.val > n:
        raise NasDeployError(f"data spec {spec!r} asks for {split.train} + {split.val} images, but {split.base!r} has "
                             f"{n} training images; give smaller counts")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(DIGITS_SPLIT_SEED)).tolist()
    return order[:split.val], order[split.val:split.val + split.train], order[split.val + split.train:]


def load_split_dataset(spec: str, train: bool, input_size: int | None, augment: bool, cutout_length: int, seed: int):
    """The training split (TRAIN images) or the test split (the base's test images + the training images left over)."""
    split = parse_split_spec(spec)
    base_train, info = load_dataset(split.base, train=True, input_size=input_size, augment=augment, cutout=cutout_length, seed=seed)
    _, chosen, left_over = split_indices(len(base_train), split, spec)
    if train:
        return SplitPart(base_train, chosen), info
    plain, _ = load_dataset(split.base, train=True, input_size=input_size)
    test, _ = load_dataset(split.base, train=False, input_size=input_size)
    held_out = ConcatDataset([SplitPart(plain, left_over), test]) if left_over else test
    if split.test is not None and split.test < len(held_out):
        held_out = Subset(held_out, range(split.test))
    return held_out, info


def load_validation(spec: str, input_size: int | None = None) -> Dataset:
    """The validation images of ``split:TRAIN,VAL:SPEC`` (un-augmented), seen by neither its training nor its test split."""
    if not str(spec).startswith(SPLIT_PREFIX):
        raise NasDeployError(f"data spec {spec!r} has no validation split; use split:TRAIN,VAL:{spec}")
    split = parse_split_spec(spec)
    if split.val < 1:
        raise NasDeployError(f"data spec {spec!r} holds out no validation image; give VAL >= 1")
    plain, _ = load_dataset(split.base, train=True, input_size=input_size)
    val, _, _ = split_indices(len(plain), split, spec)
    return SplitPart(plain, val)


def split_halves(dataset: Dataset, seed: int) -> tuple[Subset, Subset]:
    """Two disjoint halves of equal size (train for w, val for α; ICDARTS §3.4.2), seeded shuffle."""
    return split_holdout(dataset, seed, 0.5)


def split_holdout(dataset: Dataset, seed: int, val_fraction: float) -> tuple[Subset, Subset]:
    """(train, held-out validation) after a seeded shuffle; ``val_fraction`` of the images are held out.

    0.5 gives two halves of equal size (an odd image left out), as DARTS-style searches split; SE-NAS holds
    out the paper's 5,000 of CIFAR's 50,000 training images (0.1, §4.1) and trains the supernet on the rest.
    """
    if not 0.0 < val_fraction <= 0.5:
        raise NasDeployError(f"validation fraction {val_fraction} is out of range; pass a value in (0, 0.5], e.g. 0.1")
    n = len(dataset)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = max(1, int(round(n * val_fraction)))
    if val_fraction == 0.5:
        n_val = n // 2
        return Subset(dataset, order[:n_val]), Subset(dataset, order[n_val : 2 * n_val])
    return Subset(dataset, order[: n - n_val]), Subset(dataset, order[n - n_val :])


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool, seed: int, drop_last: bool = False) -> DataLoader:
    """A single-process DataLoader whose shuffle order comes from a seeded ``torch.Generator``.

    Reseed per epoch with ``loader.generator.manual_seed(...)`` (and :func:`set_epoch`) for resumable runs.
    """
    if batch_size <= 0:
        raise NasDeployError(f"batch size must be positive, got {batch_size}; pass e.g. --batch-size 64")
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, drop_last=drop_last, num_workers=0)
