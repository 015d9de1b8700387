"""Contribution analysis: how much each choice adds, measured by short fine-tuning runs on the user's data.

For a candidate item (a layer's bias; its weights at 1/8, 1/4, 1/2 and all input channels) one run trains
"classifier + that item" with the int8 train step and measures the evaluation data; the item's measured gain is
the drop of the validation loss (mean softmax cross-entropy) from the run that trains the classifier alone (the
paper's contribution analysis, with its loss proxy). Top-1 accuracy is recorded too.

Noise is the enemy: a run of a hundred steps measured on a hundred samples moves top-1 accuracy by several
points from the sample order alone (measured on mbv2-w0.35: 86% vs 92% for the same scheme), as much as most
items add; the validation loss of the same runs moves by <1%. So:
- the gain is measured on the loss, not on the accuracy;
- the learning rate comes from a short sweep over `LR_GRID` unless the settings fix one: each rate trains the
  *probe* scheme (the classifier with the weights and biases of the `PROBE_LAYERS` layers below it) and the one
  of least validation loss is used. Sweeping the classifier alone would pick a rate that suits the classifier
  only: on mbv2-w0.35 it picks 0.05, at which weight updates diverge, where the probe picks 0.01;
- at most `max_runs` items are measured (`measure_first`: from the top layer down, each layer's bias and its
  weights at the largest ratio, then the other ratios); `tte.auto.gains` combines the measurements with a
  prior fitted to them, which also covers the items not measured.
Runs use the compiled C through `tte.host` (bit-exact with the numpy reference `tte.train.Trainer`, and much
faster), the same seeded sample order and cosine-decayed learning rate, subsampled data, and run in parallel
across processes. Results are cached by (model, head, data, settings) so that a second compile repeats none.
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

LR_GRID = (0.005, 0.01, 0.02, 0.05)  # the sweep when ContribSettings.lr is None
PROBE_LAYERS = 3  # the sweep trains the classifier with the weights and biases of this many layers below it
MIN_PROB = 1e-4  # probabilities are clipped here in the loss: one confident mistake costs at most 9.2 nats


@dataclass(frozen=True)
class ContribSettings:
    """How the short fine-tuning runs are done (part of the cache key)."""

    train_samples: int = 300  # random subset of --data (all when fewer): the steps of one run
    eval_samples: int = 300  # random subset of --eval
    epochs: int = 1
    lr: float | None = None  # cosine-decayed to 0 over the run; None: the best of LR_GRID for the probe
    seed: int = 0
    max_runs: int | None = 120  # items measured at most (the rest: the fitted prior); None: all


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


@dataclass(frozen=True)
class Run:
    """What one fine-tuning run measured on the evaluation data."""

    accuracy: float  # top-1
    loss: float  # mean softmax cross-entropy (nats)


def cache_key(model_digest: str, head: str, train: Data, evaluation: Data, settings: ContribSettings) -> str:
    """The key of a contribution cache: model, head, both data sets and the settings of one run (`max_runs` only
    says how many runs are made: a cache made with another is reused and extended)."""
    runs = {k: v for k, v in asdict(settings).items() if k != "max_runs"}
    text = json.dumps([model_digest, head, train.digest(), evaluation.digest(), runs])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def measure_first(items: Iterable[Item], order: Mapping[str, int], limit: int | None) -> list[Item]:
    """The items worth a run, most informative first, at most `limit`: from the top layer down, each layer's bias
    and its weights at the largest ratio; then weights at 1/4, 1/2 and 1/8 (the combination fills in the rest)."""
    items = list(items)
    largest: dict[str, float] = {}
    for i in items:
        if i.kind == "weight" and i.ratio > largest.get(i.node, 0.0):
            largest[i.node] = i.ratio
    later = {0.25: 1, 0.5: 2, 0.125: 3}

    def stage(i: Item) -> int:
        return 0 if i.kind == "bias" or i.ratio == largest[i.node] else later.get(i.ratio, 4)

    ranked = sorted(items, key=lambda i: (stage(i), -order[i.node], i.kind, i.ratio))
    return ranked if limit is None else ranked[:limit]


# --- one run (in a worker process) -------------------------------------------------------------------------------

_JOB: dict[str, Any] = {}


def _init(graph: Graph, head: str, order: Mapping[str, int], train: Data, evaluation: Data,
          settings: ContribSettings) -> None:
    _JOB.update(graph=graph, head=head, order=order, train=train, eval=evaluation, settings=settings)


def run_items(items: Sequence[Item], lr: float) -> Run:
    """Train "classifier + items" on the job's data with the compiled C; measure the eval data."""
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
            model.train_step(train.x[i:i + 1], int(train.y[i]), cosine_lr(lr, k, len(order)))
        logits = np.stack([np.asarray(model.infer_float(evaluation.x[i:i + 1]), np.float64).reshape(-1)
                           for i in range(len(evaluation.y))])
    return measure(logits, evaluation.y)


def measure(logits: np.ndarray, labels: np.ndarray) -> Run:
    """Top-1 accuracy and mean cross-entropy of [N, classes] logits."""
    if not len(labels):
        return Run(0.0, 0.0)
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    true = np.maximum(p[np.arange(len(labels)), labels], MIN_PROB)
    return Run(float(np.mean(np.argmax(logits, axis=1) == labels)), float(np.mean(-np.log(true))))


def probe_items(order: Mapping[str, int]) -> tuple[Item, ...]:
    """The scheme of the learning-rate sweep: weights (all channels) and biases of the top `PROBE_LAYERS`."""
    top = sorted(order, key=order.__getitem__)[-PROBE_LAYERS - 1:-1]  # order's last layer: the classifier
    return tuple(Item(n, kind, 1.0 if kind == "weight" else 0.0) for n in top for kind in ("bias", "weight"))


def _run(key: str, lr: float) -> tuple[str, Run]:
    if key.startswith("lr="):
        return key, run_items(probe_items(_JOB["order"]), lr)
    if key.startswith("set:"):
        return key, run_items(tuple(Item.parse(k) for k in key[4:].split("|") if k), lr)
    return key, run_items(() if key == "base" else (Item.parse(key),), lr)


def set_key(items: Iterable[Item]) -> str:
    """The run key of a whole scheme (`verify` in tte.auto)."""
    return "set:" + "|".join(i.key for i in sorted(items))


def run_sets(graph: Graph, head: str, order: Mapping[str, int], schemes: Sequence[Sequence[Item]], train: Data,
             evaluation: Data, settings: ContribSettings, lr: float) -> list[Run]:
    """One fine-tuning run per scheme (in this process), measured like the item runs."""
    _init(graph, head, dict(order), train.subset(settings.train_samples, settings.seed),
          evaluation.subset(settings.eval_samples, settings.seed + 1), settings)
    return [_run(set_key(items), lr)[1] for items in schemes]


# --- the analysis -----------------------------------------------------------------------------------------------


def analyse(graph: Graph, head: str, order: Mapping[str, int], items: Iterable[Item], train: Data, evaluation: Data,
            settings: ContribSettings, cache: Mapping[str, Any] | None = None, jobs: int | None = None,
            progress: bool = True) -> dict[str, Any]:
    """The runs: {"lr": the rate used, "sweep": {"lr=X": Run} (when swept), "runs": {"base" | item key: Run}}.
    `items` are measured in the order given (see `measure_first`); runs in `cache` are not repeated."""
    train = train.subset(settings.train_samples, settings.seed)
    evaluation = evaluation.subset(settings.eval_samples, settings.seed + 1)
    cache = cache or {}
    init = (graph, head, dict(order), train, evaluation, settings)
    sweep = dict(cache.get("sweep", {}))
    if settings.lr is None:
        grid = [f"lr={lr:g}" for lr in LR_GRID]
        sweep.update(_parallel([k for k in grid if k not in sweep], None, init, jobs, progress, "learning rate"))
        lr = float(min(grid, key=lambda k: (sweep[k].loss, float(k[3:])))[3:])
    else:
        lr = settings.lr
    runs = dict(cache.get("runs", {}))
    todo = [k for k in ["base", *(i.key for i in items)] if k not in runs]
    runs.update(_parallel(todo, lr, init, jobs, progress, "contribution analysis"))
    return {"lr": lr, "sweep": sweep, "runs": runs}


def _parallel(keys: list[str], lr: float | None, init: tuple[Any, ...], jobs: int | None, progress: bool,
              desc: str) -> dict[str, Run]:
    """Run `keys` (item keys, "base", or "lr=X" for the probe at rate X) across processes."""
    if not keys:
        return {}

    def rate(key: str) -> float:
        return float(key[3:]) if key.startswith("lr=") else float(lr)  # type: ignore[arg-type]

    out: dict[str, Run] = {}
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(keys)))
    bar = _bar(len(keys), progress, desc)
    if jobs == 1:
        _init(*init)
        for key in keys:
            out.update([_run(key, rate(key))])
            bar.update(1)
    else:
        with ProcessPoolExecutor(jobs, mp_context=get_context("fork"), initializer=_init, initargs=init) as pool:
            for fut in as_completed([pool.submit(_run, k, rate(k)) for k in keys]):
                out.update([fut.result()])
                bar.update(1)
    bar.close()
    return out


def to_json(analysis: Mapping[str, Any]) -> dict[str, Any]:
    """The analysis as JSON (runs as [accuracy, loss] pairs) for auto.json."""
    pairs = {name: {k: [r.accuracy, r.loss] for k, r in analysis[name].items()} for name in ("sweep", "runs")}
    return {"lr": analysis["lr"], **pairs}


def from_json(data: Mapping[str, Any]) -> dict[str, Any]:
    """The inverse of `to_json` (an empty analysis from anything else)."""
    try:
        return {"lr": data.get("lr"), **{name: {k: Run(float(a), float(b)) for k, (a, b) in data.get(name, {}).items()}
                                       for name in ("sweep", "runs")}}
    except (TypeError, ValueError, AttributeError):
        return {"lr": None, "sweep": {}, "runs": {}}


def _bar(total: int, enabled: bool, desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="run", leave=False, disable=None if enabled else True)
