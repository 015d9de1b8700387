"""`--update auto`: choose a sparse-update scheme that fits a memory budget (the paper's search, made automatic).

    result = choose(graph, budget=128 * 1024, head="new:5", train=Data(x, y), evaluation=Data(xv, yv))
    result.scheme        # a `sparse:` scheme dict; `tte compile --update auto` writes it as scheme.json

Three parts (one module each):
- `cost`: the exact peak SRAM and backward MACs of any scheme from the real planner (memoized), and the fast
  additive surrogate the search optimizes;
- `contrib`: the gain of each candidate (a layer's bias, its weights at 1/8 .. 1 of the input channels),
  measured by short fine-tuning runs of the int8 train step on the user's data (validation-loss drop, learning
  rate from a short sweep, at most `max_runs` runs; cached);
- `gains`: the measured gains combined with a prior fitted to them (the data-free heuristic's ranking), so that
  noise neither empties the scheme nor leaves the items without a run out;
- `search`: an integer program (scipy `milp`) on the surrogate, checked with the exact planner, repaired and
  filled while items still fit, so the scheme returned always fits and uses the budget; with data, one run of
  the whole scheme checks it (`verify`: items are measured one at a time, and weight layers trained together
  can diverge where each alone helps); a scheme that fails gives way to the search at a smaller budget or to
  itself without its weight items of least gain, whichever trains best.
Candidates: every item of every layer the budget lets the backward pass reach, when it fits on its own.
Without data the gains are the prior alone (`gains.prior`) and the result says so.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from tte.auto.contrib import ContribSettings, Data, analyse, cache_key, from_json, measure_first, run_sets, to_json
from tte.auto.cost import Cost, CostModel, Item, Surrogate, canonical, dump_memo, graph_digest, load_memo, reach_table
from tte.auto.gains import combine, prior
from tte.auto.search import SearchResult, search
from tte.errors import TteError
from tte.ir import Graph

__all__ = ["AutoResult", "ContribSettings", "CostModel", "Data", "Item", "choose", "graph_digest", "scheme_json"]


@dataclass
class AutoResult:
    """The chosen scheme with what it costs and gains, and the caches to keep beside the output."""

    scheme: dict[str, Any]
    items: tuple[Item, ...]
    cost: Cost
    method: str  # "contribution analysis" | "data-free heuristic"
    gains: dict[Item, float]
    surrogate: Surrogate
    budget: int
    mac_budget: int | None
    base_accuracy: float | None
    measured: dict[Item, float] = field(default_factory=dict)  # gains of the items that had a run
    lr: float | None = None  # of the contribution runs
    timings: dict[str, float] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)
    contrib_cache: dict[str, Any] = field(default_factory=dict)
    costs_cache: dict[str, Any] = field(default_factory=dict)

    def explain(self) -> dict[str, Any]:
        """What `tte report` shows: per chosen item its bytes (surrogate), backward MACs and gain."""
        rows = [{"item": i.key, "bytes": self.surrogate.bytes.get(i, 0), "macs": self.surrogate.macs.get(i, 0),
                 "gain": round(float(self.gains.get(i, 0.0)), 6),
                 "measured": None if i not in self.measured else round(float(self.measured[i]), 6)}
                for i in self.items]
        return {
            "method": self.method,
            "budget_bytes": self.budget,
            "mac_budget": self.mac_budget,
            "peak_sram_bytes": self.cost.peak_sram_bytes,
            "macs_backward": self.cost.macs_backward,
            "classifier_only_peak_bytes": self.surrogate.base.peak_sram_bytes,
            "classifier_only_accuracy": self.base_accuracy,
            "expected_gain": round(float(sum(self.gains.get(i, 0.0) for i in self.items)), 6),
            "candidates": len(self.gains),
            "measured_candidates": len(self.measured),
            "contribution_lr": self.lr,
            "reachable_layers": len(self.surrogate.reach),
            "chosen": rows,
            "search_log": self.log,
        }


def choose(graph: Graph, budget: int | None, head: str = "keep", target: str = "host", train: Data | None = None,
           evaluation: Data | None = None, settings: ContribSettings | None = None, mac_budget: int | None = None,
           cache: Mapping[str, Any] | None = None, jobs: int | None = None, progress: bool = True,
           options: Any = None, cost_cache: Mapping[str, Any] | None = None, max_layers: int | None = None
           ) -> AutoResult:
    """The scheme `--update auto` trains (see the module docstring). `cache` and `cost_cache`: an earlier
    result's `contrib_cache` and `costs_cache` (reused when model, head, data, settings and planner match);
    `max_layers`: candidates only in that many layers below the classifier (default: all the budget allows)."""
    t0 = time.perf_counter()
    cm = CostModel(graph, head, target, budget, options)
    load_memo(cm, cost_cache)
    if cm.budget is None:
        raise TteError("--update auto needs a memory budget", hint="add --budget (e.g. --budget 128KB) or a board "
                       "--target")
    base = cm.exact(())
    if base.peak_sram_bytes > cm.budget:
        raise TteError(f"--update auto: training the classifier alone needs {base.peak_sram_bytes:,} bytes of "
                       f"SRAM, over the budget of {cm.budget:,}",
                       hint="use a larger --budget, or --head new:N for a small fresh head")
    for name, data in (("--data", train), ("--eval", evaluation)):
        _check_labels(name, data, cm.classes)
    sur = reach_table(cm, cm.budget, _progress(progress, "cost model"), max_layers=max_layers)
    timings = {"cost_model": time.perf_counter() - t0}
    candidates = [i for i in sur.bytes if sur.peak([i]) <= cm.budget]  # an item that alone does not fit: never
    priors = prior(cm, candidates)
    base_acc, lr, measured, contrib_cache = None, None, {}, {}
    if train is None:
        method, g = "data-free heuristic", priors
    else:
        method = "contribution analysis"
        settings = settings or ContribSettings()
        evaluation = evaluation or train
        key = cache_key(graph_digest(graph), head, train, evaluation, settings)
        old = from_json(cache) if cache and cache.get("key") == key else None
        t1 = time.perf_counter()
        analysis = analyse(cm.graph, head, cm.order, measure_first(candidates, cm.order, settings.max_runs), train,
                           evaluation, settings, old, jobs, progress)
        timings["contribution_analysis"] = time.perf_counter() - t1
        contrib_cache = {"key": key, "settings": settings.__dict__, **to_json(analysis)}
        runs = analysis["runs"]
        measured = {i: runs["base"].loss - runs[i.key].loss for i in candidates if i.key in runs}
        g, base_acc, lr = combine(priors, measured), runs["base"].accuracy, analysis["lr"]
    t2 = time.perf_counter()
    res = search(cm, sur, g, cm.budget, mac_budget)
    timings["search"] = time.perf_counter() - t2
    if train is not None:
        t3 = time.perf_counter()
        res = verify(cm, sur, res, g, analysis, train, evaluation, settings, mac_budget)  # type: ignore[arg-type]
        timings["verify"] = time.perf_counter() - t3
    timings["exact_evaluations"] = float(cm.evaluations)
    timings["exact_seconds_per_evaluation"] = cm.seconds / max(1, cm.evaluations)
    return AutoResult(cm.scheme(res.items), res.items, res.cost, method, g, sur, cm.budget, mac_budget, base_acc,
                      measured, lr, timings, res.log, contrib_cache, dump_memo(cm))


VERIFY_STEPS = 3  # schemes with fewer weight items tried at most
VERIFY_SAMPLES = 2000  # the check runs train on all of --data up to this many samples (the item runs on fewer)
VERIFY_SEEDS = (0, 1)  # ... once per sample order and rounding seed: each must beat the classifier alone
VERIFY_SHRINK = (0.75, 0.5)  # ... and the searches at these fractions of the budget, when the scheme fails


def verify(cm: CostModel, sur: Surrogate, res: SearchResult, g: Mapping[Item, float], analysis: Mapping[str, Any],
           train: Data, evaluation: Data, settings: ContribSettings, mac_budget: int | None = None) -> SearchResult:
    """Check the chosen scheme with fine-tuning runs of the whole scheme: gains are measured one item at a time,
    and several weight layers trained together at one learning rate can diverge where each alone helps.

    A scheme passes when its validation loss is below that of the classifier alone, trained as long, for every
    seed of VERIFY_SEEDS (sample order and rounding), each run over every --data sample (up to VERIFY_SAMPLES:
    as long as the device will train, not the short subset of the item runs). A scheme can train well for 120
    steps and diverge by 200, or for one sample order and not another: proxyless-w0.3 at 256 KB passed a
    120-step check with 63 items and reached 21% after 200 steps.

    When it fails, the alternatives are checked too: the searches at VERIFY_SHRINK of the budget (what a smaller
    budget would train), and the scheme without its weight items of least gain, half at a time (at most
    VERIFY_STEPS; the biases stay). Of those that pass, the one with the lowest mean loss wins; if none does, the
    lowest. Every alternative fits: smaller searches and fewer items only lower the peak."""
    runs, lr = analysis["runs"], analysis["lr"]
    n = max(settings.train_samples, min(len(train.y), VERIFY_SAMPLES))
    checks = [replace(settings, train_samples=n, seed=settings.seed + k) for k in VERIFY_SEEDS]
    bars: list[float] = []  # to beat, per seed: the classifier alone, trained as long

    def trial(items: tuple[Item, ...], what: str) -> tuple[bool, float]:
        if not bars:
            bars.extend(runs["base"].loss if c == settings else run_sets(cm.graph, cm.head, cm.order, [[]], train,
                                                                         evaluation, c, lr)[0].loss for c in checks)
        losses = [run_sets(cm.graph, cm.head, cm.order, [items], train, evaluation, c, lr)[0].loss for c in checks]
        ok = all(x < bar for x, bar in zip(losses, bars, strict=True))
        res.log.append(f"verify: {what} ({len(items)} items): validation loss {', '.join(f'{x:.3f}' for x in losses)}"
                       f" (seeds {', '.join(str(c.seed) for c in checks)}), to beat "
                       f"{', '.join(f'{x:.3f}' for x in bars)}: {'passes' if ok else 'fails'}")
        return ok, sum(losses) / len(losses)

    if not any(i.kind == "weight" for i in res.items) or trial(res.items, "the scheme")[0]:
        return res
    tried: list[tuple[bool, float, tuple[Item, ...]]] = []
    for f in VERIFY_SHRINK:
        alt = search(cm, sur, g, int(cm.budget * f), mac_budget).items
        if alt and alt != res.items and all(alt != t[2] for t in tried):  # a scheme is trained once
            tried.append((*trial(alt, f"the search at {f:g} of the budget"), alt))
    items = res.items
    for _ in range(VERIFY_STEPS):
        weights = sorted((i for i in items if i.kind == "weight"), key=lambda i: g.get(i, 0.0))
        if not weights:
            break
        drop = weights[:max(1, len(weights) // 2)]
        items = canonical(i for i in items if i not in drop)
        tried.append((*trial(items, f"without {', '.join(i.key for i in drop)}"), items))
        if tried[-1][0]:
            break
    best = min(tried, key=lambda t: (not t[0], t[1]))[2]
    res.log.append(f"verify: chose the {len(best)}-item scheme")
    return SearchResult(best, cm.exact(best), res.surrogate_peak, res.exact_checks, res.log)


def _check_labels(flag: str, data: Data | None, classes: int) -> None:
    if data is not None and len(data.y) and (data.y.min() < 0 or data.y.max() >= classes):
        raise TteError(f"{flag}: labels must lie in 0..{classes - 1}, got {data.y.min()}..{data.y.max()}",
                       hint="labels index the classifier outputs (see --head new:N)")


def _progress(enabled: bool, desc: str) -> Any:
    from tqdm import tqdm

    return lambda it: tqdm(it, desc=desc, unit="layer", leave=False, disable=None if enabled else True)


def scheme_json(result: AutoResult) -> str:
    """scheme.json: the chosen scheme as a `sparse:` file (with a comment key on how it was chosen)."""
    data = {"_about": f"chosen by tte --update auto ({result.method}) for a budget of {result.budget:,} B: peak "
                      f"{result.cost.peak_sram_bytes:,} B, {result.cost.macs_backward:,} backward MACs",
            **result.scheme}
    return json.dumps(data, indent=1) + "\n"
