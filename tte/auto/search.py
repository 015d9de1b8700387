"""The search: the most valuable set of items whose exact peak SRAM fits the budget (and optionally a MAC budget).

Method (documented in README and `tte report`):
1. **Knapsack as an integer program** (`scipy.optimize.milp`, exact for the surrogate of cost.py): binary x_i per
   item, at most one weight ratio per layer, a continuous `reach` >= reach[layer(i)] * x_i, and
   `reach + sum bytes_i x_i <= cap` (likewise for MACs). Maximize sum gain_i x_i - eps * bytes_i x_i (the small
   penalty drops items that gain nothing). The gains are `tte.auto.gains.combine`'s (or the prior alone).
2. **Check** the solution with the exact planner (CostModel.exact). Over the budget: lower `cap` by the excess
   and solve again (at most `REPAIRS` times), then drop the item of least gain per byte until it fits.
3. **Fill**: the surrogate is only a model (the planner overlaps more than it assumes, and at a large budget
   it need not split the first layers into row stripes), so the exact peak usually leaves room. Every item not
   chosen (or a larger weight ratio of a chosen layer) is tried in order of gain per byte and kept when the
   exact peak still fits, in batches that double while they fit and halve when not (`_fill`); an item whose
   surrogate increase, added to the current exact peak, overshoots the budget by more than `FILL_SLACK` is
   passed over without a plan, and the fill stops after `FILL_CHECKS` exact evaluations or `FILL_MISSES`
   single items in a row that did not fit.
The result is feasible by construction: every scheme it returns was compiled by the exact planner under the
budget.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np

from tte.auto.cost import Cost, CostModel, Item, Surrogate, canonical
from tte.auto.gains import prior

REPAIRS = 6
FILL_CHECKS = 30  # exact evaluations of the fill at most (5-80 ms each on the paper models)
FILL_MISSES = 6  # ... and it stops after this many single items in a row that did not fit
FILL_SLACK = 0.02  # of the budget: a single item whose estimated peak overshoots by more is passed over
EPS_PER_BYTE = 1e-9


@dataclass
class SearchResult:
    items: tuple[Item, ...]
    cost: Cost
    surrogate_peak: int
    exact_checks: int
    log: list[str] = field(default_factory=list)


def solve(sur: Surrogate, gains: Mapping[Item, float], cap: int, mac_cap: int | None = None) -> tuple[Item, ...]:
    """The surrogate's optimum under `cap` bytes (and `mac_cap` MACs): the items of positive gain it picks."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    items = [i for i in sur.bytes if gains.get(i, 0.0) > 0.0 and i.node in sur.reach]
    if not items:
        return ()
    n = len(items)
    # variables: x_0..x_{n-1} (binary), reach (bytes), reach_macs
    c = np.zeros(n + 2)
    c[:n] = [-(gains[i] - EPS_PER_BYTE * sur.bytes[i]) for i in items]
    rows, lo, hi = [], [], []

    def row(coeffs: dict[int, float], low: float, high: float) -> None:
        r = np.zeros(n + 2)
        for k, v in coeffs.items():
            r[k] = v
        rows.append(r)
        lo.append(low)
        hi.append(high)

    for k, i in enumerate(items):  # reach >= reach[layer] * x
        row({n: 1.0, k: -float(sur.reach[i.node])}, 0.0, np.inf)
        row({n + 1: 1.0, k: -float(sur.reach_macs[i.node])}, 0.0, np.inf)
    for node in {i.node for i in items}:  # one weight ratio per layer
        ks = [k for k, i in enumerate(items) if i.node == node and i.kind == "weight"]
        if len(ks) > 1:
            row({k: 1.0 for k in ks}, 0.0, 1.0)
    row({n: 1.0, **{k: float(sur.bytes[i]) for k, i in enumerate(items)}}, -np.inf, float(cap))
    if mac_cap is not None:
        row({n + 1: 1.0, **{k: float(sur.macs[i]) for k, i in enumerate(items)}}, -np.inf, float(mac_cap))
    integrality = np.r_[np.ones(n), 0, 0]
    bounds = Bounds(np.r_[np.zeros(n), sur.base.peak_sram_bytes, sur.base.macs_backward], np.r_[np.ones(n), np.inf,
                                                                                                   np.inf])
    with _quiet_stdout():  # HiGHS prints MIP debugging lines on the C stdout
        res = milp(c, constraints=LinearConstraint(np.array(rows), lo, hi), integrality=integrality, bounds=bounds,
                   options={"time_limit": 20.0})
    if res.x is None:
        return ()
    return canonical(i for k, i in enumerate(items) if res.x[k] > 0.5)


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """Send file descriptor 1 to /dev/null for a while (C libraries write there behind Python's back)."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _fits(cost: Cost, budget: int, mac_budget: int | None) -> bool:
    return cost.peak_sram_bytes <= budget and (mac_budget is None or cost.macs_backward <= mac_budget)


def search(cm: CostModel, sur: Surrogate, gains: Mapping[Item, float], budget: int,
           mac_budget: int | None = None) -> SearchResult:
    """The chosen items (see the module docstring); the empty scheme (classifier only) when nothing fits."""
    log: list[str] = []
    checks0 = cm.evaluations
    cap = budget
    chosen: tuple[Item, ...] = ()
    for _ in range(REPAIRS):
        chosen = solve(sur, gains, cap, mac_budget)
        cost = cm.exact(chosen)
        log.append(f"MILP cap {cap:,} B: {len(chosen)} items, surrogate {sur.peak(chosen):,} B, exact "
                   f"{cost.peak_sram_bytes:,} B")
        if _fits(cost, budget, mac_budget):
            break
        cap -= max(cost.peak_sram_bytes - budget, 64) if cost.peak_sram_bytes > budget else cap // 10
    chosen = _drop_until_fits(cm, sur, gains, chosen, budget, mac_budget, log)
    chosen = _fill(cm, sur, gains, chosen, budget, mac_budget, log)
    return SearchResult(chosen, cm.exact(chosen), sur.peak(chosen), cm.evaluations - checks0, log)


def _value(i: Item, sur: Surrogate, gains: Mapping[Item, float]) -> float:
    return gains.get(i, 0.0) / max(1, sur.bytes[i])


def _drop_until_fits(cm: CostModel, sur: Surrogate, gains: Mapping[Item, float], chosen: tuple[Item, ...],
                     budget: int, mac_budget: int | None, log: list[str]) -> tuple[Item, ...]:
    items = list(chosen)
    while items and not _fits(cm.exact(items), budget, mac_budget):
        worst = min(items, key=lambda i: _value(i, sur, gains))
        items.remove(worst)
        log.append(f"repair: dropped {worst.key}, exact {cm.exact(items).peak_sram_bytes:,} B")
    return canonical(items)


def _fill(cm: CostModel, sur: Surrogate, gains: Mapping[Item, float], chosen: tuple[Item, ...], budget: int,
          mac_budget: int | None, log: list[str]) -> tuple[Item, ...]:
    """Add (or raise to a larger ratio) items in order of gain per byte while the exact peak fits. Items go in
    batches that double after a batch fits and halve after one does not (one exact plan per batch, as a plan
    near the budget costs up to seconds); a single item that does not fit is passed over."""
    items = {(i.node, i.kind): i for i in chosen}
    queue = sorted((i for i in sur.bytes if gains.get(i, 0.0) > 0), key=lambda i: -_value(i, sur, gains))
    now = cm.exact(chosen)
    checks = misses = 0
    size = 1
    while queue:
        batch = _next_batch(queue, items, gains, size)
        if not batch:
            break
        trial = canonical([*(v for k, v in items.items() if k not in {(i.node, i.kind) for i in batch}), *batch])
        guess = now.peak_sram_bytes + sur.peak(trial) - sur.peak(tuple(items.values()))
        if len(batch) == 1 and guess > budget * (1 + FILL_SLACK):
            queue.remove(batch[0])
            continue
        if checks >= FILL_CHECKS or misses >= FILL_MISSES:
            log.append(f"fill: stopped after {checks} exact evaluations ({misses} in a row did not fit)")
            break
        checks += 1
        cost = cm.fitting_many([trial])[0]  # None: over the budget (known without planning every stripe option)
        if cost is not None and _fits(cost, budget, mac_budget):
            for i in batch:
                items[(i.node, i.kind)] = i
                queue.remove(i)
            now, size, misses = cost, size * 2, 0
            log.append(f"fill: added {', '.join(i.key for i in batch)}, exact {cost.peak_sram_bytes:,} B")
        elif len(batch) > 1:
            size = max(1, len(batch) // 2)
        else:
            queue.remove(batch[0])
            misses += 1
    return canonical(items.values())


def _next_batch(queue: list[Item], items: Mapping[tuple[str, str], Item], gains: Mapping[Item, float],
                size: int) -> list[Item]:
    """The first `size` items of `queue` that add to or raise `items` (one per layer and kind); the queue loses
    the ones that would not (a ratio no larger, or a gain no larger, than the one chosen)."""
    batch: list[Item] = []
    for i in list(queue):
        old = items.get((i.node, i.kind))
        if old is not None and (old.ratio >= i.ratio or gains.get(old, 0.0) >= gains[i]):
            queue.remove(i)
            continue
        if all((b.node, b.kind) != (i.node, i.kind) for b in batch):
            batch.append(i)
        if len(batch) >= size:
            break
    return batch


def heuristic_gains(cm: CostModel, sur: Surrogate) -> dict[Item, float]:
    """The data-free stand-in for measured gains (used by `--update auto` without --data): `gains.prior` of every
    candidate (later layers, biases and the square root of the weight ratio count; depthwise weights least). The
    search then trades these values against exact memory."""
    return prior(cm, sur.bytes)
