"""MNIST without torchvision: IDX files read with numpy, md5-checked, batched in torch.

The four IDX files (gzipped or not) live in one folder. :func:`load_mnist` returns a split as
whole-dataset tensors; :class:`MNISTBatches` cuts them into normalised (and optionally
random-crop augmented) batches whose order and crops are a pure function of (seed, epoch), so a
resumed run can skip the batches it already trained on.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import shutil
import struct
import tempfile
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

MNIST_MEAN = 0.1307
MNIST_STD = 0.3081

# md5 of the uncompressed IDX bytes; mirrors (and recompressed copies) differ in the .gz bytes.
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
MNIST_SPLITS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

_IMAGES_MAGIC = 0x0803  # unsigned bytes, 3 dimensions (N, rows, cols)
_LABELS_MAGIC = 0x0801  # unsigned bytes, 1 dimension (N,)
_CROP_PADDING = 4


def default_data_dir() -> Path:
    """``$NEURALODE_DATA`` if set, else ``~/.cache/neuralode/mnist``."""
    env = os.environ.get("NEURALODE_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "neuralode" / "mnist"


def _find(data_dir: Path, name: str) -> Path | None:
    """The file ``name`` or ``name.gz`` in data_dir (uncompressed preferred), or None."""
    for candidate in (data_dir / name, data_dir / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _locate(data_dir: Path, names: Sequence[str]) -> list[Path]:
    """The paths of the named files in data_dir; FileNotFoundError listing any missing."""
    found = [_find(data_dir, name) for name in names]
    missing = [name for name, path in zip(names, found, strict=True) if path is None]
    if missing:
        raise MissingDataError(data_dir, missing)
    return [path for path in found if path is not None]


def _split_files(split: str) -> tuple[str, str]:
    if split not in MNIST_SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return MNIST_SPLITS[split]


def _read_bytes(path: Path) -> bytes:
    """The uncompressed content of an IDX file, gunzipped if its name ends in ``.gz``."""
    if path.suffix != ".gz":
        return path.read_bytes()
    try:
        with gzip.open(path, "rb") as file:
            return file.read()
    except (OSError, EOFError) as error:
        raise ValueError(f"MNIST file {path} is not a readable gzip file: {error}") from error


def _parse_idx(data: bytes, source: Path, magic: int) -> np.ndarray:
    """Parse IDX bytes of unsigned-byte type into an array of the header's shape."""
    if len(data) < 4:
        raise ValueError(f"MNIST file {source} is too short ({len(data)} bytes) to be IDX")
    (found,) = struct.unpack(">I", data[:4])
    if found != magic:
        raise ValueError(
            f"MNIST file {source} has IDX magic number {found:#010x}, expected {magic:#010x}: "
            "not an MNIST file of this kind"
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"MNIST file {source} is truncated inside its IDX header")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + int(np.prod(shape))
    if len(data) != expected:
        raise ValueError(
            f"MNIST file {source} has {len(data)} bytes, expected {expected} for shape {shape}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape).copy()


def _check_md5(data: bytes, source: Path | str, name: str) -> None:
    actual = hashlib.md5(data).hexdigest()
    if actual != MNIST_MD5[name]:
        raise ValueError(
            f"MNIST file {source}: md5 of the uncompressed bytes is {actual}, expected "
            f"{MNIST_MD5[name]}; the file is corrupt or not the canonical MNIST. "
            "Delete it and download it again."
        )


def _read_checked(path: Path, name: str, magic: int) -> np.ndarray:
    data = _read_bytes(path)
    array = _parse_idx(data, path, magic)
    _check_md5(data, path, name)
    return array


class MissingDataError(FileNotFoundError):
    """MNIST files are missing from ``data_dir``; :meth:`message` words the fix for the caller
    (``download=True`` in Python, ``--download`` on the command line)."""

    def __init__(self, data_dir: Path, names: Sequence[str]) -> None:
        self.data_dir, self.names = data_dir, list(names)
        super().__init__(self.message("pass download=True"))

    def message(self, download: str) -> str:
        """The error's text, with ``download`` as the way to fetch the files."""
        files = ", ".join(f"{name}.gz" for name in self.names)
        return (
            f"MNIST files missing from {self.data_dir}: {files}. Put the IDX files there "
            f"(gzipped or not), or {download} to fetch them from {MNIST_MIRRORS[0]}. The folder "
            "defaults to ~/.cache/neuralode/mnist and is overridden by $NEURALODE_DATA."
        )


def _download_one(name: str, data_dir: Path, mirrors: Sequence[str]) -> None:
    """Fetch ``name.gz`` from the first mirror that serves it with the right md5; the file
    appears in data_dir only complete (temp file + os.replace)."""
    target = data_dir / f"{name}.gz"
    failures = []
    for mirror in mirrors:
        url = f"{mirror}{name}.gz"
        handle, temp_name = tempfile.mkstemp(dir=data_dir, prefix=f".{name}.", suffix=".part")
        temp = Path(temp_name)
        try:
            with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=60) as src:
                shutil.copyfileobj(src, out)
            _check_md5(gzip.decompress(temp.read_bytes()), url, name)
            os.replace(temp, target)
            return
        except (OSError, EOFError, ValueError, http.client.HTTPException) as error:
            failures.append(f"{url}: {error}")
        finally:
            temp.unlink(missing_ok=True)
    tried = "\n  ".join(failures)
    raise FileNotFoundError(
        f"could not download {name}.gz; tried:\n  {tried}\n"
        f"Put {name}.gz (or the uncompressed {name}) into {data_dir} by hand."
    )


def download_mnist(
    data_dir: str | Path | None = None,
    split: str | None = None,
    mirrors: Sequence[str] = MNIST_MIRRORS,
) -> None:
    """Download the split's missing IDX files (both splits if None) into data_dir, trying the
    mirrors (URL prefixes) in order and checking each file's md5 before it lands."""
    directory = Path(data_dir) if data_dir is not None else default_data_dir()
    directory.mkdir(parents=True, exist_ok=True)
    splits = MNIST_SPLITS.values() if split is None else [_split_files(split)]
    for names in splits:
        for name in names:
            if _find(directory, name) is None:
                _download_one(name, directory, mirrors)


def load_mnist(
    data_dir: str | Path | None = None, split: str = "train", download: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load an MNIST split: images uint8 (N, 28, 28) in [0, 255] and labels int64 (N,) in
    [0, 9]; N = 60000 (train) or 10000 (test).

    data_dir defaults to :func:`default_data_dir`. Missing files are downloaded if
    ``download``, else a FileNotFoundError says where to put them; a file with a wrong
    magic number, size or md5 raises ValueError naming it.
    """
    directory = Path(data_dir) if data_dir is not None else default_data_dir()
    names = _split_files(split)
    if download:
        download_mnist(directory, split)
    images_path, labels_path = _locate(directory, names)
    images = _read_checked(images_path, names[0], _IMAGES_MAGIC)
    labels = _read_checked(labels_path, names[1], _LABELS_MAGIC)
    if len(images) != len(labels):
        raise ValueError(
            f"MNIST {split}: {len(images)} images in {images_path} but {len(labels)} labels in "
            f"{labels_path}"
        )
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    state = np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


class MNISTBatches:
    """Mini-batches of an in-memory MNIST split.

    Yields (images, labels): float32 (B, 1, 28, 28) normalised with mean 0.1307 and std
    0.3081, and int64 (B,), on the device of ``images``. With ``shuffle`` the order is a
    permutation drawn from (seed, epoch); with ``augment`` each image is padded with 4 zero
    pixels per side (28 → 36) and a random 28×28 window is cut, also drawn from (seed, epoch).
    An epoch's batches are therefore reproducible, and ``batches(epoch, start=k)`` yields the
    same batches as the full epoch from the k-th on. Iterating the object yields the epoch set
    by :meth:`set_epoch` (default 0).

    Args:
        images: uint8 (N, 28, 28), as from :func:`load_mnist`.
        labels: int64 (N,).
        batch_size: B; the last batch is smaller unless ``drop_last``.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        shuffle: bool = True,
        augment: bool = False,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 3:
            raise ValueError(f"images must be uint8 (N, H, W), got {images.dtype} {images.shape}")
        if labels.shape != images.shape[:1]:
            raise ValueError(f"labels shape {labels.shape} != ({images.shape[0]},)")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.images, self.labels = images, labels.long()
        self.batch_size, self.shuffle, self.augment = batch_size, shuffle, augment
        self.seed, self.drop_last = seed, drop_last
        self.epoch = 0

    def __len__(self) -> int:
        """Batches per epoch."""
        count, rest = divmod(len(self.images), self.batch_size)
        return count + int(rest > 0 and not self.drop_last)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch that ``iter(self)`` yields."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.batches(self.epoch)

    def batches(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of ``epoch`` from batch index ``start`` on."""
        n, device = len(self.images), self.images.device
        generator = _epoch_generator(self.seed, epoch)
        order = torch.randperm(n, generator=generator) if self.shuffle else torch.arange(n)
        offsets = torch.randint(0, 2 * _CROP_PADDING + 1, (n, 2), generator=generator)
        order, offsets = order.to(device), offsets.to(device)
        for index in range(start, len(self)):
            chosen = order[index * self.batch_size : (index + 1) * self.batch_size]
            images = self.images[chosen]
            if self.augment:
                images = _random_crop(images, offsets[chosen])
            images = (images.float().div_(255.0) - MNIST_MEAN).div_(MNIST_STD)
            yield images.unsqueeze(1), self.labels[chosen]


def _random_crop(images: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """images (B, H, W), offsets (B, 2) row/column in [0, 2·pad] → (B, H, W) windows of the
    zero-padded (B, H + 2·pad, W + 2·pad) images."""
    batch, height, width = images.shape
    padded = torch.nn.functional.pad(images, (_CROP_PADDING,) * 4)
    rows = offsets[:, :1] + torch.arange(height, device=images.device)
    cols = offsets[:, 1:] + torch.arange(width, device=images.device)
    index = torch.arange(batch, device=images.device)[:, None, None]
    return padded[index, rows[:, :, None], cols[:, None, :]]
