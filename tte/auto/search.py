"""The search: the most valuable set of items whose exact peak SRAM fits the budget (and optionally a MAC budget).

Method (documented in README and `tte report`):
1. **Knapsack as an integer program** (`scipy.optimize.milp`, exact for the surrogate of cost.py): binary x_i per
   item, at most one weight ratio per layer, a continuous `reach` >= reach[layer(i)] * x_i, and
   `reach + sum bytes_i x_i <= cap` (likewise for MACs). Maximize sum gain_i x_i - eps * bytes_i x_i (the small
   penalty drops items that gain nothing).
2. **Check** the solution with the exact planner (CostModel.exact). Over the budget: lower `cap` by the excess
   and solve again (at most `REPAIRS` times), then drop the item of least gain per byte until it fits.
3. **Fill**: the surrogate over-estimates when the planner overlaps more than it assumes, so items not chosen
   are tried in order of gain per byte and kept when the exact peak still fits (at most `FILL_TRIES` exact
   evaluations).
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

REPAIRS = 6
FILL_TRIES = 8
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
    items = list(chosen)
    taken = {(i.node, i.kind): i for i in items}
    rest = [i for i in sur.bytes if gains.get(i, 0.0) > 0 and (i.node, i.kind) not in taken]
    rest.sort(key=lambda i: -_value(i, sur, gains))
    tries = 0
    for i in rest:
        if tries >= FILL_TRIES:
            break
        if (i.node, i.kind) in taken:
            continue
        tries += 1
        cost = cm.exact([*items, i])
        if _fits(cost, budget, mac_budget):
            items.append(i)
            taken[(i.node, i.kind)] = i
            log.append(f"fill: added {i.key}, exact {cost.peak_sram_bytes:,} B")
    return canonical(items)


def heuristic_gains(cm: CostModel, sur: Surrogate) -> dict[Item, float]:
    """The data-free stand-in for measured gains (used by `--update auto` without --data).

    From the paper's contribution analysis: later layers help more than earlier ones, a bias is cheap and
    useful, weights help in proportion to the square root of the trained fraction, and depthwise weights help
    least. Value = p^2 * (1 for a bias; 2 * sqrt(ratio), halved for depthwise, for weights), p = the layer's
    position from 0 (input) to 1 (classifier). The search then trades these values against exact memory.
    """
    n = max(1, len(cm.layers))
    pos = {node.name: (k + 1) / n for k, node in enumerate(cm.layers)}
    out = {}
    for i in sur.bytes:
        p2 = pos[i.node] ** 2
        if i.kind == "bias":
            out[i] = p2
        else:
            dw = cm.node(i.node).op == "depthwise_conv2d"
            out[i] = p2 * 2.0 * np.sqrt(i.ratio) * (0.5 if dw else 1.0)
    return out
