"""`tte simulate`: train a compiled model on the host, through the same C as the device runs (tte.host, cffi).

    tte simulate build/kws --data train.npz --eval test.npz --epochs 3 --lr 0.05

Samples are used in file order, one train step per sample (`--steps N`: N steps, wrapping around the file),
so the run is deterministic and a firmware run of the same steps (`tte run --emulator`) must give the same
losses and parameters bit for bit. The summary has the keys `tte run` prints for a training run: `losses` (one
per step, float32 values), `acc_before`/`acc_after` (top-1 on --eval, else on --data), `params_sha256` (of
`<name>_params_get`), `steps`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from tte import host
from tte.errors import TteError

DEFAULT_LR = 0.05  # keep equal to tte.targets.training.DEFAULT_LR


def load_data(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """`x` (samples first, as the model takes them, or int8 NHWC) and integer labels `y` of an .npz file."""
    path = Path(path)
    if not path.is_file():
        raise TteError(f"{path}: no such data file", hint="give an .npz with arrays x (samples) and y (labels)")
    try:
        with np.load(path, allow_pickle=False) as f:
            data = {k: f[k] for k in f.files}
    except Exception as e:  # noqa: BLE001 - any unreadable file is the user's
        raise TteError(f"{path}: not a readable .npz file ({e})") from None
    if "x" not in data or "y" not in data:
        raise TteError(f"{path}: needs arrays x and y, has {', '.join(sorted(data)) or 'none'}",
                       hint="store the samples as x and their integer labels as y")
    x, y = data["x"], np.asarray(data["y"]).reshape(-1)
    if len(x) != len(y) or len(y) == 0:
        raise TteError(f"{path}: {len(y)} labels for {len(x)} samples", hint="give one label per sample, at least one")
    if y.dtype.kind not in "iu" and not np.all(y == np.round(y)):
        raise TteError(f"{path}: labels must be integers, got {y.dtype}")
    return x, y.astype(np.int64)


def _sample(x: np.ndarray, i: int) -> np.ndarray:
    """Sample i with its batch axis of 1 (as the firmware harness reads it: tte.targets.training)."""
    return x[i:i + 1]


def accuracy(model: host.HostModel, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of the C inference (first output, first maximum) over the samples."""
    hits = 0
    for i in range(len(y)):
        out = model.infer(_sample(x, i))
        out = out[0] if isinstance(out, tuple) else out
        hits += int(np.argmax(np.asarray(out).reshape(-1)) == y[i])
    return hits / len(y)


def _check_labels(path: str | os.PathLike, y: np.ndarray, classes: int) -> None:
    if y.min() < 0 or y.max() >= classes:
        raise TteError(f"{path}: labels must lie in 0..{classes - 1}, got {y.min()}..{y.max()}",
                       hint="labels index the classifier outputs (see --head new:N)")


def simulate(out: str | os.PathLike, data: str | os.PathLike, eval_data: str | os.PathLike | None = None,
             epochs: int = 1, lr: float = DEFAULT_LR, steps: int | None = None, seed: int | None = None,
             progress: bool = True) -> dict[str, Any]:
    """Train the model compiled in OUT on DATA (see the module docstring); returns the summary."""
    model = host.load(out, fresh=True)
    if not model.trainable:
        raise TteError(f"{out}: the model was compiled without a train step",
                       hint="compile it with --update (and --head) to train it")
    x, y = load_data(data)
    ex, ey = load_data(eval_data) if eval_data is not None else (x, y)
    _check_labels(data, y, model.classes)
    _check_labels(eval_data or data, ey, model.classes)
    total = len(y) * epochs if steps is None else steps
    if total < 0 or epochs < 0:
        raise TteError(f"--steps {steps} / --epochs {epochs} must be >= 0")
    if not np.isfinite(lr):
        raise TteError("the learning rate must be a finite number")
    if seed is not None:
        if not 0 <= seed < 2**32:
            raise TteError(f"seed {seed} must be in 0 .. 2^32-1")
        model.seed(seed)
    acc_before = accuracy(model, ex, ey)
    losses = []
    for k in _progress(range(total), progress, "train steps"):
        i = k % len(y)
        losses.append(model.train_step(_sample(x, i), int(y[i]), lr))
    return {
        "losses": losses,
        "acc_before": acc_before,
        "acc_after": accuracy(model, ex, ey),
        "params_sha256": model.params_sha256(),
        "steps": total,
        "target": "host",
        "model": model.name,
        "train_samples": len(y),
        "eval_samples": len(ey),
        "lr": float(np.float32(lr)),
        "loss_first": float(np.mean(losses[:10])) if losses else None,
        "loss_last": float(np.mean(losses[-10:])) if losses else None,
    }


def _progress(it: range, enabled: bool, desc: str) -> Any:
    if not enabled:
        return it
    from tqdm import tqdm

    return tqdm(it, desc=desc, unit="step", leave=False)
