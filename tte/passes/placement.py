"""Offset assignment for the memory planner: several greedy orders over one conflict graph, the smallest arena wins.

The problem (dynamic storage allocation) is NP-hard; TFLite Micro's greedy rule (largest buffer first, lowest
offset) leaves gaps when large buffers that are never live together all land at offset 0 and a chain of medium
ones must then stack above them. So `place` runs a few greedy orders (largest first, first use, lifetime x size,
last use) and fits (lowest offset, tightest gap) and keeps the smallest arena, stopping early at the lower
bound (the aligned peak of live bytes). The first order is TFLite Micro's:
the result is never larger than that planner's.

Buffers are placed in units: a unit is one buffer or a group that must keep fixed relative offsets (an in-place
kernel's input and output at one offset; a stripe stage's output inside the rows of its input that no later
stripe reads). Members of a unit may share bytes with each other (the caller proved it safe); every other pair
of buffers live at a common step must not. The conflicts (pairs with overlapping lifetimes) are computed once,
so each greedy pass only looks at the placed neighbours of a unit, not at every placed buffer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from tte.passes import placement_native


class Interval(Protocol):
    name: str
    size: int
    first: int
    last: int


@dataclass(frozen=True)
class Unit:
    """Buffers placed together: `members` are (buffer index, offset relative to the unit, >= 0)."""

    members: tuple[tuple[int, int], ...]
    size: int  # the unit's footprint: max(relative offset + size)
    first: int
    last: int
    name: str  # the smallest member name, for deterministic ties

    @property
    def span(self) -> int:
        return self.last - self.first + 1


def _align(n: int, alignment: int) -> int:
    return (n + alignment - 1) // alignment * alignment


def conflicts(bufs: Sequence[Interval]) -> list[list[int]]:
    """For each buffer (by index), the buffers of non-zero size whose lifetimes overlap its own (a sweep)."""
    order = sorted((i for i, b in enumerate(bufs) if b.size), key=lambda i: bufs[i].first)
    out: list[list[int]] = [[] for _ in bufs]
    active: list[int] = []
    for i in order:
        first = bufs[i].first
        active = [j for j in active if bufs[j].last >= first]
        for j in active:
            out[i].append(j)
            out[j].append(i)
        active.append(i)
    return out


def units(bufs: Sequence[Interval], links: Sequence[tuple[int, int, int]]) -> list[Unit]:
    """Group buffers by `links` (a, b, delta: offset of b = offset of a + delta) into units."""
    parent = list(range(len(bufs)))
    rel = [0] * len(bufs)  # offset relative to the parent

    def find(i: int) -> tuple[int, int]:
        d = 0
        while parent[i] != i:
            d += rel[i]
            i = parent[i]
        return i, d

    for a, b, delta in links:
        (ra, da), (rb, db) = find(a), find(b)
        if ra == rb:
            if db - da != delta:
                raise ValueError(f"buffers {bufs[a].name}, {bufs[b].name}: contradictory relative offsets")
            continue
        parent[rb], rel[rb] = ra, da + delta - db
    groups: dict[int, list[tuple[int, int]]] = {}
    for i in range(len(bufs)):
        root, d = find(i)
        groups.setdefault(root, []).append((i, d))
    out = []
    for members in groups.values():
        low = min(d for _, d in members)
        members = [(i, d - low) for i, d in members]
        out.append(Unit(tuple(members), max(d + bufs[i].size for i, d in members),
                        min(bufs[i].first for i, _ in members), max(bufs[i].last for i, _ in members),
                        min(bufs[i].name for i, _ in members)))
    return out


def live_profile(bufs: Sequence[Interval], links: Sequence[tuple], steps: int | None = None) -> list[int]:
    """Bytes live at each step; linked buffers (a, b, delta) live at one step share max(0, min(size a, delta +
    size b) - delta) bytes, counted once. `links` may name buffers by index or by name."""
    steps = max((b.last for b in bufs), default=-1) + 1 if steps is None else steps
    delta = [0] * (steps + 1)
    for b in bufs:
        delta[b.first] += b.size
        delta[b.last + 1] -= b.size
    by = {**{i: b for i, b in enumerate(bufs)}, **{b.name: b for b in bufs}}
    for a, b, d in (link if len(link) == 3 else (*link, 0) for link in links):
        x, y = by[a], by[b]
        shared = max(0, min(x.size, d + y.size) - max(d, 0))
        first, last = max(x.first, y.first), min(x.last, y.last)
        if shared and first <= last:
            delta[first] -= shared
            delta[last + 1] += shared
    live, run = [], 0
    for d in delta[:steps]:
        run += d
        live.append(run)
    return live


def _pressure(live: Sequence[int], us: Sequence[Unit]) -> list[int]:
    """Per unit, the largest number of live bytes at any step of its lifetime."""
    return [max(live[u.first:u.last + 1], default=0) for u in us]


Key = Callable[[Unit, int], tuple]
ORDERS: dict[str, Key] = {  # unit, its pressure -> sort key (ascending)
    "size": lambda u, p: (-u.size, u.first, u.name),  # TFLite Micro's order: keep it first
    "first use": lambda u, p: (u.first, -u.size, u.name),
    "area": lambda u, p: (-u.size * u.span, u.first, u.name),
    "last use": lambda u, p: (-u.last, -u.size, u.name),
    "pressure": lambda u, p: (-p, -u.size, u.first, u.name),
}
# (order, tightest fit?) in the order tried. Measured on the paper models' train steps (584 plans): these reach
# the best arena of all 10 combinations in 582; lowest fit of "first use" alone in 392, of "size" in 347.
TRIALS = (("size", False), ("first use", False), ("area", False), ("last use", False), ("first use", True))


def place(bufs: Sequence[Interval], alignment: int, fixed: Mapping[int, int],
          links: Sequence[tuple[int, int, int]]) -> tuple[list[int], int, str]:
    """Offsets of `bufs` (by index), the arena and the name of the order that won (see the module docstring).

    `fixed`: buffer index -> offset (its unit goes there, before any other); `links`: (a, b, delta) keep buffer
    b at offset(a) + delta and let the two share bytes. Deterministic: the first trial reaching the smallest
    arena wins.
    """
    if placement_native.enabled():  # the same placement, compiled (placement.c)
        names = list(ORDERS)
        offsets, arena, won = placement_native.place(bufs, alignment, fixed, links,
                                                     [(names.index(o), t) for o, t in TRIALS])
        name, tightest = TRIALS[won]
        return offsets, arena, f"{name}, {'tightest' if tightest else 'lowest'} fit"
    us = units(bufs, links)
    conf = conflicts(bufs)
    live = live_profile(bufs, links)
    bound = _align(max(live, default=0), alignment)  # no arena can be smaller: stop there
    pressure = dict(zip(map(id, us), _pressure(live, us), strict=True))
    pinned, free = _pin(bufs, us, fixed)
    best: tuple[list[int], int, str] | None = None
    for name, tightest in TRIALS:
        key = ORDERS[name]
        order = sorted(free, key=lambda u: key(u, pressure[id(u)]))
        offsets, arena = _greedy(bufs, pinned, order, conf, alignment, tightest)
        if best is None or arena < best[1]:
            best = offsets, arena, f"{name}, {'tightest' if tightest else 'lowest'} fit"
        if best[1] <= bound:
            break
    assert best is not None
    return best


def _pin(bufs: Sequence[Interval], us: Sequence[Unit], fixed: Mapping[int, int]
         ) -> tuple[list[tuple[Unit, int]], list[Unit]]:
    """The units with a fixed member at their offsets, and the others."""
    pinned, free = [], []
    for unit in us:
        anchor = next(((i, d) for i, d in unit.members if i in fixed), None)
        if anchor is None:
            free.append(unit)
            continue
        at = fixed[anchor[0]] - anchor[1]
        if at < 0 or any(fixed.get(i, at + d) != at + d for i, d in unit.members):
            raise ValueError(f"buffer {bufs[anchor[0]].name}: its fixed offset contradicts its links")
        pinned.append((unit, at))
    return pinned, free


def _greedy(bufs: Sequence[Interval], pinned: Sequence[tuple[Unit, int]], order: Sequence[Unit],
            conf: list[list[int]], alignment: int, tightest: bool) -> tuple[list[int], int]:
    offsets: list[int | None] = [None] * len(bufs)
    for unit, at in pinned:
        for i, d in unit.members:
            offsets[i] = at + d
    for unit in order:
        at = _fit(unit, bufs, conf, offsets, alignment, tightest)
        for i, d in unit.members:
            offsets[i] = at + d
    placed = [o if o is not None else 0 for o in offsets]
    arena = max((_align(o + b.size, alignment) for o, b in zip(placed, bufs, strict=True) if b.size), default=0)
    return placed, arena


def _fit(unit: Unit, bufs: Sequence[Interval], conf: list[list[int]], offsets: list[int | None], alignment: int,
         tightest: bool) -> int:
    """An aligned unit offset where no member meets a placed buffer live with it: the lowest, or the start of the
    tightest free range (the one that leaves the least room unused; the open top when none is bounded)."""
    members = unit.members
    mine = {i for i, _ in members} if len(members) > 1 else ()
    banned = []  # unit offsets o in [lo, hi) would collide
    for i, d in members:
        size = bufs[i].size
        if not size:
            continue
        for j in conf[i]:
            o = offsets[j]
            if o is not None and j not in mine:
                banned.append((o - d - size + 1, o + bufs[j].size - d))
    banned.sort()
    at, best, best_room = 0, -1, -1
    for lo, hi in banned:
        if hi <= at:
            continue
        if lo > at:
            if not tightest:
                return at
            room = lo - at  # free offsets [at, lo)
            if best < 0 or room < best_room:
                best, best_room = at, room
        at = max(at, (hi + alignment - 1) // alignment * alignment)
    return at if best < 0 else best
