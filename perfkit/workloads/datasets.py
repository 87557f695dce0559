"""Small real image data sets for training runs: CIFAR-10 from its python batches, and scikit-learn's digits.

- CIFAR-10 (`load_cifar10(directory)`): the training batches of the "CIFAR-10 python version" archive, `data_batch_1`
  to `data_batch_5`, in `directory` or in its `cifar-10-batches-py/` folder. Each file is a pickled dict whose
  b"data" is a uint8 array of shape (10000, 3072) (per image 1024 red, then 1024 green, then 1024 blue values of a
  32x32 image, row-major) and whose b"labels" is a list of class indices 0-9. The files are unpickled with only the
  numpy array constructors allowed, so a file that is not a data batch cannot run code on load.
- Digits (`load_digits()`): scikit-learn's copy of the UCI handwritten digits, 1,797 real 8x8 greyscale images (16
  grey levels) of the digits 0-9, shipped inside the package (no download).

Both come back as a `Dataset`: float32 images (N, C, H, W) standardised per channel (zero mean, unit variance over the
set), int64 labels, and a description that names the source.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import torch

CIFAR10 = "cifar10"
DIGITS = "sklearn-digits"
CIFAR10_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_FOLDER = "cifar-10-batches-py"


class DatasetError(ValueError):
    """The data set could not be read: missing files, or files not in the expected format."""


class DatasetUnavailable(DatasetError):
    """What the data set needs is not installed here (scikit-learn for the digits)."""


@dataclass(frozen=True)
class Dataset:
    name: str  # CIFAR10 or DIGITS
    images: torch.Tensor  # float32 (N, C, H, W), standardised per channel
    labels: torch.Tensor  # int64 (N,)
    num_classes: int
    description: str  # where it came from, for summaries

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def input_size(self) -> int:
        return self.images.shape[2]

    def __len__(self) -> int:
        return self.images.shape[0]

    def head(self, n: int) -> Dataset:
        """The first n images (a smaller training set, for quick runs)."""
        if n >= len(self):
            return self
        return Dataset(self.name, self.images[:n], self.labels[:n], self.num_classes,
                       f"{self.description}, first {n:,} images")


def standardise(images: torch.Tensor) -> torch.Tensor:
    """Per channel: subtract the mean and divide by the standard deviation over the whole set."""
    x = images.to(torch.float32)
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    std = x.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    return (x - mean) / std


# -- CIFAR-10 ---------------------------------------------------------------------------------------------------------
#: The globals a pickled numpy array needs (numpy 1.x and 2.x module paths). Nothing else may be loaded.
_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
}


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _NUMPY_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a CIFAR-10 batch holds only numpy arrays, "
                                     "lists and bytes")


def read_cifar10_batch(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """One CIFAR-10 python batch: (images uint8 (N, 3, 32, 32), labels int64 (N,))."""
    import numpy as np

    path = Path(path)
    try:
        with path.open("rb") as f:
            batch = _BatchUnpickler(f, encoding="bytes").load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise DatasetError(f"{path}: not a readable CIFAR-10 python batch ({type(exc).__name__}: {exc})") from None
    if not isinstance(batch, dict):
        raise DatasetError(f"{path}: a CIFAR-10 batch is a pickled dict, found {type(batch).__name__}")
    data, labels = batch.get(b"data", batch.get("data")), batch.get(b"labels", batch.get("labels"))
    if data is None or labels is None:
        raise DatasetError(f"{path}: a CIFAR-10 batch has b'data' and b'labels'; found keys "
                           f"{sorted(map(repr, batch))}")
    data = np.asarray(data)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetError(f"{path}: b'data' should be uint8 of shape (N, 3072), found {data.dtype} {data.shape}")
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (data.shape[0],):
        raise DatasetError(f"{path}: {labels.shape[0] if labels.ndim else 0} labels for {data.shape[0]} images")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DatasetError(f"{path}: labels should be 0-9, found {labels.min()}-{labels.max()}")
    images = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())
    return images, torch.from_numpy(labels)


def cifar10_files(directory: str | Path, batches: int | None = None) -> list[Path]:
    """The training batch files present (data_batch_1..5, the first `batches` of them), in `directory` or its
    cifar-10-batches-py/ folder."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DatasetError(f"CIFAR-10: {directory} is not a directory")
    for folder in (directory, directory / CIFAR10_FOLDER):
        files = [folder / name for name in CIFAR10_BATCHES if (folder / name).is_file()]
        if files:
            return files[:batches] if batches else files
    raise DatasetError(f"CIFAR-10: no training batches ({', '.join(CIFAR10_BATCHES)}) in {directory} or "
                       f"{directory / CIFAR10_FOLDER}; download and unpack the python version of CIFAR-10 "
                       "(cifar-10-python.tar.gz) and point at it")


def load_cifar10(directory: str | Path, batches: int | None = None) -> Dataset:
    """The CIFAR-10 training set (all batches present, or the first `batches`), standardised per channel."""
    files = cifar10_files(directory, batches)
    parts = [read_cifar10_batch(f) for f in files]
    images = torch.cat([p[0] for p in parts])
    labels = torch.cat([p[1] for p in parts])
    names = ", ".join(f.name for f in files)
    return Dataset(CIFAR10, standardise(images), labels, 10,
                   f"CIFAR-10 training set ({names} in {files[0].parent}): {len(labels):,} 32x32 RGB images")


# -- scikit-learn digits ----------------------------------------------------------------------------------------------
def load_digits() -> Dataset:
    """scikit-learn's digits: 1,797 8x8 greyscale images, one channel, standardised."""
    try:
        from sklearn.datasets import load_digits as _load
    except ImportError:
        raise DatasetUnavailable("scikit-learn is not installed (pip install scikit-learn, or perfkit[test]); it ships the "
                           "digits data set the convergence runs use without CIFAR-10") from None
    digits = _load()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1)  # (1797, 1, 8, 8), values 0-16
    labels = torch.tensor(digits.target, dtype=torch.int64)
    return Dataset(DIGITS, standardise(images), labels, 10,
                   f"scikit-learn digits (UCI handwritten digits): {len(labels):,} 8x8 greyscale images")
