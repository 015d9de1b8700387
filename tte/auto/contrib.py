"""Contribution analysis: how much accuracy each choice adds, measured by short fine-tuning runs on the user's data.

For every candidate item (a layer's bias; its weights at 1/8, 1/4, 1/2 and all input channels) one run trains
"classifier + that item" with the int8 train step and measures top-1 accuracy on the evaluation data; the gain
of the item is that accuracy minus the accuracy of the run that trains the classifier alone (the paper's
contribution analysis, with accuracy instead of its loss proxy). Runs use the compiled C through `tte.host`
(bit-exact with the numpy reference `tte.train.Trainer`, and much faster), the same seeded sample order and
cosine-decayed learning rate, subsampled data, and run in parallel across processes. Results are cached by
(model, head, data, settings) so that a second compile repeats none of them.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from tte.auto.cost import Item, scheme_dict
from tte.ir import Graph


@dataclass(frozen=True)
class ContribSettings:
    """How the short fine-tuning runs are done (part of the cache key)."""

    train_samples: int = 300  # random subset of --data (all when fewer)
    eval_samples: int = 300  # random subset of --eval
    epochs: int = 1
    lr: float = 0.05  # cosine-decayed to 0 over the run
    seed: int = 0


@dataclass(frozen=True)
class Data:
    """Samples as the model takes them (float user layout or int8 NHWC) and integer labels."""

    x: np.ndarray
    y: np.ndarray

    def subset(self, n: int, seed: int) -> Data:
        if len(self.y) <= n:
            return self
        idx = np.sort(np.random.default_rng(seed).choice(len(self.y), n, replace=False))
        return Data(self.x[idx], self.y[idx])

    def digest(self) -> str:
        h = hashlib.sha256()
        for a in (np.ascontiguousarray(self.x), np.ascontiguousarray(self.y)):
            h.update(str((a.dtype, a.shape)).encode())
            h.update(a.tobytes())
        return h.hexdigest()[:16]


def cache_key(model_digest: str, head: str, train: Data, evaluation: Data, settings: ContribSettings) -> str:
    """The key of a contribution cache: model, head, both data sets and the settings."""
    text = json.dumps([model_digest, head, train.digest(), evaluation.digest(), asdict(settings)])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


# --- one run (in a worker process) -------------------------------------------------------------------------------

_JOB: dict[str, Any] = {}


def _init(graph: Graph, head: str, order: Mapping[str, int], train: Data, evaluation: Data,
          settings: ContribSettings) -> None:
    _JOB.update(graph=graph, head=head, order=order, train=train, eval=evaluation, settings=settings)


def accuracy_after(items: Sequence[Item]) -> float:
    """Train "classifier + items" on the job's data with the compiled C; top-1 accuracy on the eval data."""
    from tte import host
    from tte.compile import TrainConfig, build, write_output
    from tte.data import cosine_lr, sample_order

    s: ContribSettings = _JOB["settings"]
    train, evaluation = _JOB["train"], _JOB["eval"]
    config = TrainConfig("auto", _JOB["head"], seed=s.seed + 1, scheme=scheme_dict(items, _JOB["order"]))
    compiled = build(_JOB["graph"], "auto_contrib", "host", train=config)
    with tempfile.TemporaryDirectory(prefix="tte-contrib-") as tmp:
        out = write_output(Path(tmp) / "out", compiled.files)
        model = host.load(out, fresh=True)
        order = sample_order(len(train.y), s.epochs, s.seed)
        for k, i in enumerate(order):
            model.train_step(train.x[i:i + 1], int(train.y[i]), cosine_lr(s.lr, k, len(order)))
        hits = sum(int(np.argmax(np.asarray(model.infer(evaluation.x[i:i + 1])).reshape(-1)) == evaluation.y[i])
                   for i in range(len(evaluation.y)))
    return hits / max(1, len(evaluation.y))


def _run(key: str) -> tuple[str, float]:
    items = () if key == "base" else (Item.parse(key),)
    return key, accuracy_after(items)


# --- the analysis -----------------------------------------------------------------------------------------------


def analyse(graph: Graph, head: str, order: Mapping[str, int], items: Iterable[Item], train: Data, evaluation: Data,
            settings: ContribSettings, cache: Mapping[str, float] | None = None, jobs: int | None = None,
            progress: bool = True) -> dict[str, float]:
    """Accuracy after fine-tuning, by item key (and "base": the classifier alone); cached keys are not rerun."""
    train = train.subset(settings.train_samples, settings.seed)
    evaluation = evaluation.subset(settings.eval_samples, settings.seed + 1)
    results = dict(cache or {})
    todo = [k for k in ["base", *(i.key for i in items)] if k not in results]
    if not todo:
        return results
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(todo)))
    bar = _bar(len(todo), progress)
    init = (graph, head, dict(order), train, evaluation, settings)
    if jobs == 1:
        _init(*init)
        for key in todo:
            results.update([_run(key)])
            bar.update(1)
    else:
        with ProcessPoolExecutor(jobs, mp_context=get_context("fork"), initializer=_init, initargs=init) as pool:
            for fut in as_completed([pool.submit(_run, k) for k in todo]):
                results.update([fut.result()])
                bar.update(1)
    bar.close()
    return results


def gains(accuracies: Mapping[str, float], items: Iterable[Item]) -> dict[Item, float]:
    """Accuracy gain of each item over the classifier-only run."""
    base = accuracies["base"]
    return {i: accuracies[i.key] - base for i in items if i.key in accuracies}


def _bar(total: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc="contribution analysis", unit="run", leave=False, disable=None if enabled else True)
