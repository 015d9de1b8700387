"""The search: the most valuable set of items whose exact peak SRAM fits the budget (and optionally a MAC budget).

Method (documented in README and `tte report`):
1. **Knapsack as an integer program** (`scipy.optimize.milp`, exact for the surrogate of cost.py): binary x_i per
   item, at most one weight ratio per layer, a continuous `reach` >= reach[layer(i)] * x_i, and
   `reach + sum bytes_i x_i <= cap` (likewise for MACs). Maximize sum gain_i x_i - eps * bytes_i x_i (the small
   penalty drops items that gain nothing). The gains are `tte.auto.gains.combine`'s (or the prior alone).
2. **Check** the solution with the exact planner (CostModel.exact). Over the budget: lower `cap` by the excess
   and solve again (at most `REPAIRS` times), then drop the item of least gain per byte until it fits.
3. **Improve** on exact costs (`_improve`, a local search): the surrogate is only a model (the planner
   overlaps more than it assumes, and at a large budget it need not split the first layers into row stripes),
   so the exact peak usually leaves room, and an item the MILP left out may be worth more than one it took.
   A move adds an item not chosen (or a larger weight ratio of a chosen layer), alone or in place of a chosen
   item; every move that raises the summed gain is a candidate, largest rise first. They are planned exactly in
   batches of MOVE_BATCH (`CostModel.fitting_many`, on worker processes), and of the first batch with a move
   that fits, the move of largest rise is made; then the moves are listed again. Moves the surrogate puts
   over the budget by more than MOVE_SLACK (its change added to the exact peak now) come after the others. It
   stops when no move fits, or after MAX_EXACT evaluations.
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
MOVE_BATCH = 16  # moves the local search evaluates at once (exact costs, best first)
MAX_EXACT = 400  # exact evaluations of the local search at most (5-80 ms each on the paper models)
MOVE_SLACK = 0.02  # of the budget: a move whose estimated peak overshoots by more is not planned
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
    chosen = _improve(cm, sur, gains, chosen, budget, mac_budget, log)
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


@dataclass(frozen=True)
class Move:
    """Put `add` into the scheme (a new item, or a larger weight ratio of a chosen layer) and take `drop` out:
    the summed gain grows by `delta`."""

    delta: float
    add: Item
    drop: Item | None = None


def _improve(cm: CostModel, sur: Surrogate, gains: Mapping[Item, float], chosen: tuple[Item, ...], budget: int,
             mac_budget: int | None, log: list[str]) -> tuple[Item, ...]:
    """Local search on exact costs (module docstring, step 3): while some move raises the summed gain and still
    fits, make the one of largest gain among the first batch that has one. Moves go best first in batches of
    MOVE_BATCH, each batch one `fitting_many` (on the workers of `CostModel.parallel` when open), at most
    MAX_EXACT evaluations in all. Moves the surrogate puts more than MOVE_SLACK over the budget (its change added
    to the exact peak now) come after the others: it is only a model, but it knows what is likely to fit."""
    scheme = {(i.node, i.kind): i for i in chosen}
    pool = sorted(i for i in gains if gains[i] > 0 and i in sur.bytes)
    spent = 0
    while spent < MAX_EXACT:
        now, estimate = cm.exact(scheme.values()), sur.peak(scheme.values())
        moves = sorted(_moves(scheme, pool, gains), key=lambda m: now.peak_sram_bytes - estimate + sur.peak(
            _applied(scheme, m)) > budget * (1 + MOVE_SLACK))  # stable: by gain within each tier
        made = None
        for k in range(0, len(moves), MOVE_BATCH):
            batch = moves[k:k + MOVE_BATCH][:MAX_EXACT - spent]
            costs = cm.fitting_many(_applied(scheme, m) for m in batch)
            spent += len(batch)
            fits = [(m, c) for m, c in zip(batch, costs, strict=True) if c and _fits(c, budget, mac_budget)]
            if fits:
                made = max(fits, key=lambda mc: (mc[0].delta, -mc[1].peak_sram_bytes))
                break
            if spent >= MAX_EXACT:
                break
        if made is None:
            break
        move, cost = made
        scheme = {(i.node, i.kind): i for i in _applied(scheme, move)}
        log.append(f"improve: added {move.add.key}" + (f" for {move.drop.key}" if move.drop else "")
                   + f" (+{move.delta:.4f} gain), exact {cost.peak_sram_bytes:,} B")
    log.append(f"improve: {spent} exact evaluations")
    return canonical(scheme.values())


def _moves(scheme: Mapping[tuple[str, str], Item], pool: list[Item], gains: Mapping[Item, float]) -> list[Move]:
    """Every move that raises the summed gain, largest rise first: add an item (or raise a weight ratio), alone
    or in place of a chosen item of another layer or kind."""
    adds = []
    for i in pool:
        old = scheme.get((i.node, i.kind))
        if old is None:
            adds.append(Move(gains[i], i))
        elif i.ratio > old.ratio and gains[i] > gains.get(old, 0.0):
            adds.append(Move(gains[i] - gains.get(old, 0.0), i))
    moves = list(adds)
    for a in adds:
        for r in scheme.values():
            delta = a.delta - gains.get(r, 0.0)
            if (r.node, r.kind) != (a.add.node, a.add.kind) and delta > 0:
                moves.append(Move(delta, a.add, r))
    return sorted(moves, key=lambda m: (-m.delta, m.add, m.drop or m.add))


def _applied(scheme: Mapping[tuple[str, str], Item], move: Move) -> tuple[Item, ...]:
    items = {**scheme, (move.add.node, move.add.kind): move.add}
    if move.drop is not None:
        del items[(move.drop.node, move.drop.kind)]
    return canonical(items.values())


def heuristic_gains(cm: CostModel, sur: Surrogate) -> dict[Item, float]:
    """The data-free stand-in for measured gains (used by `--update auto` without --data): `gains.prior` of every
    candidate (later layers, biases and the square root of the weight ratio count; depthwise weights least). The
    search then trades these values against exact memory."""
    return prior(cm, sur.bytes)
