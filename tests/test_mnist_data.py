"""MNIST loader and batches: real files, corrupt files, downloads (file:// mirrors), crops."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import struct
from pathlib import Path

import pytest
import torch

from neuralode.paper.data import (
    MNIST_MEAN,
    MNIST_STD,
    MNISTBatches,
    default_data_dir,
    download_mnist,
    load_mnist,
)

SHARED_MNIST = Path(__file__).parents[2] / "shared/data/mnist"
needs_mnist = pytest.mark.skipif(
    not (SHARED_MNIST / "t10k-images-idx3-ubyte.gz").is_file(),
    reason=f"real MNIST files not found in {SHARED_MNIST}",
)


def _idx_bytes(array: torch.Tensor) -> bytes:
    """IDX encoding of a uint8 tensor: magic 0x08NN (NN = number of dims), sizes, data."""
    header = struct.pack(f">I{array.dim()}I", 0x0800 + array.dim(), *array.shape)
    return header + array.numpy().tobytes()


def _write_fake_test_split(folder: Path, compress: bool) -> str:
    """Write a 3-image test split (valid IDX, not MNIST); return the images' md5."""
    images = torch.randint(0, 256, (3, 28, 28), dtype=torch.uint8)
    labels = torch.tensor([1, 2, 3], dtype=torch.uint8)
    for name, array in (("t10k-images-idx3-ubyte", images), ("t10k-labels-idx1-ubyte", labels)):
        data = _idx_bytes(array)
        if compress:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return hashlib.md5(_idx_bytes(images)).hexdigest()


@needs_mnist
@pytest.mark.parametrize(("split", "n"), [("train", 60000), ("test", 10000)])
def test_real_mnist_shapes_dtypes_and_labels(split: str, n: int) -> None:
    images, labels = load_mnist(SHARED_MNIST, split)
    assert images.shape == (n, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (n,) and labels.dtype == torch.int64
    assert labels.min() == 0 and labels.max() == 9
    assert torch.bincount(labels).min() > n // 20  # every digit well represented
    assert labels[0] == (5 if split == "train" else 7)


@needs_mnist
def test_uncompressed_files_load_the_same(tmp_path: Path) -> None:
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        with gzip.open(SHARED_MNIST / f"{name}.gz") as source:
            (tmp_path / name).write_bytes(source.read())
    images, labels = load_mnist(tmp_path, "test")
    expected_images, expected_labels = load_mnist(SHARED_MNIST, "test")
    assert torch.equal(images, expected_images) and torch.equal(labels, expected_labels)


@pytest.mark.parametrize("compress", [True, False])
def test_md5_mismatch_names_file_and_both_digests(tmp_path: Path, compress: bool) -> None:
    actual = _write_fake_test_split(tmp_path, compress)
    with pytest.raises(ValueError, match="md5") as info:
        load_mnist(tmp_path, "test")
    message = str(info.value)
    assert "t10k-images-idx3-ubyte" in message
    assert "2646ac647ad5339dbf082846283269ea" in message and actual in message


def test_wrong_magic_number_is_reported(tmp_path: Path) -> None:
    _write_fake_test_split(tmp_path, compress=False)
    shutil.copy(tmp_path / "t10k-labels-idx1-ubyte", tmp_path / "t10k-images-idx3-ubyte")
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte has IDX magic number 0x00000801"):
        load_mnist(tmp_path, "test")


def test_truncated_file_is_reported(tmp_path: Path) -> None:
    _write_fake_test_split(tmp_path, compress=False)
    images = tmp_path / "t10k-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-1])
    with pytest.raises(ValueError, match="expected 2368 for shape"):
        load_mnist(tmp_path, "test")


def test_missing_files_say_where_to_put_them(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="download=True") as info:
        load_mnist(tmp_path / "nowhere", "train")
    assert str(tmp_path / "nowhere") in str(info.value)
    assert "train-images-idx3-ubyte.gz" in str(info.value)


def test_data_dir_defaults_to_the_environment_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEURALODE_DATA", str(tmp_path / "env-dir"))
    assert default_data_dir() == tmp_path / "env-dir"
    with pytest.raises(FileNotFoundError, match="env-dir"):
        load_mnist(split="test")
    monkeypatch.delenv("NEURALODE_DATA")
    assert default_data_dir() == Path.home() / ".cache/neuralode/mnist"


@needs_mnist
def test_download_falls_back_to_the_next_mirror(tmp_path: Path) -> None:
    mirrors = ((tmp_path / "no-such-mirror").as_uri() + "/", SHARED_MNIST.as_uri() + "/")
    target = tmp_path / "cache"
    download_mnist(target, "test", mirrors=mirrors)
    assert sorted(path.name for path in target.iterdir()) == [
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ]
    images, labels = load_mnist(target, "test")
    assert images.shape == (10000, 28, 28) and labels.shape == (10000,)


def test_failed_download_leaves_no_partial_file(tmp_path: Path) -> None:
    mirror = tmp_path / "bad-mirror"
    mirror.mkdir()
    (mirror / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"not mnist"))
    target = tmp_path / "cache"
    with pytest.raises(FileNotFoundError, match="could not download t10k-images") as info:
        download_mnist(target, "test", mirrors=(mirror.as_uri() + "/",))
    assert "md5" in str(info.value) and str(target) in str(info.value)
    assert list(target.iterdir()) == []


@needs_mnist
def test_download_flag_does_nothing_when_files_are_present() -> None:
    images, _ = load_mnist(SHARED_MNIST, "test", download=True)
    assert images.shape == (10000, 28, 28)


def _small_set(n: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8), torch.arange(n) % 10


def test_batches_shapes_length_and_normalisation() -> None:
    images, labels = _small_set()
    batches = MNISTBatches(images, labels, batch_size=16, shuffle=False)
    out = list(batches)
    assert len(batches) == len(out) == 4
    assert [len(y) for _, y in out] == [16, 16, 16, 2]
    x, y = out[0]
    assert x.shape == (16, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    expected = (images[:16, None].float() / 255 - MNIST_MEAN) / MNIST_STD
    torch.testing.assert_close(x, expected)
    assert torch.equal(y, labels[:16])
    assert len(MNISTBatches(images, labels, batch_size=16, drop_last=True)) == 3


@needs_mnist
def test_normalised_test_set_has_about_zero_mean_unit_std() -> None:
    images, labels = load_mnist(SHARED_MNIST, "test")
    x, _ = next(iter(MNISTBatches(images, labels, batch_size=10000, shuffle=False)))
    assert abs(x.mean().item()) < 0.02 and abs(x.std().item() - 1) < 0.02


def test_epoch_order_is_reproducible_and_resumable() -> None:
    images, labels = _small_set()
    batches = MNISTBatches(images, labels, batch_size=8, augment=True, seed=3)
    first = list(batches.batches(epoch=2))
    again = list(MNISTBatches(images, labels, batch_size=8, augment=True, seed=3).batches(2))
    for (x1, y1), (x2, y2) in zip(first, again, strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    resumed = list(batches.batches(epoch=2, start=4))
    assert len(resumed) == len(first) - 4
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first[4:], resumed, strict=True))
    batches.set_epoch(2)
    assert torch.equal(next(iter(batches))[0], first[0][0])
    other_epoch = torch.cat([y for _, y in batches.batches(epoch=3)])
    assert not torch.equal(torch.cat([y for _, y in first]), other_epoch)
    assert sorted(other_epoch.tolist()) == sorted(labels.tolist())


def test_random_crop_is_a_shifted_window_of_the_padded_image() -> None:
    images, labels = _small_set(20)
    labels = torch.arange(20)  # identifies each image
    batch = MNISTBatches(images, labels, batch_size=20, augment=True, seed=0)
    x, y = next(batch.batches(epoch=0))
    assert x.shape == (20, 1, 28, 28)
    padded = torch.nn.functional.pad(images, (4, 4, 4, 4))
    plain = (padded.float() / 255 - MNIST_MEAN) / MNIST_STD
    shifts = set()
    for crop, index in zip(x[:, 0], y.tolist(), strict=True):
        matches = [
            (r, c)
            for r in range(9)
            for c in range(9)
            if torch.equal(crop, plain[index, r : r + 28, c : c + 28])
        ]
        assert len(matches) == 1
        shifts.add(matches[0])
    assert len(shifts) > 1  # not the same offset for every image
