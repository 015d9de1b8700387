"""The compiled placement (tte/passes/placement.c) against the Python reference (tte/passes/placement.py): the
same offsets, arena and winning trial on random plans (links, pins, zero sizes) and on real train steps."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from tte.passes import placement, placement_native

pytestmark = pytest.mark.skipif(not placement_native.enabled(), reason="no host C compiler")


@dataclass(frozen=True)
class Buf:
    name: str
    size: int
    first: int
    last: int


def _python(bufs, alignment, fixed, links, monkeypatch):
    monkeypatch.setenv("TTE_PLACEMENT", "python")
    try:
        return placement.place(bufs, alignment, fixed, links)
    finally:
        monkeypatch.delenv("TTE_PLACEMENT")


def _random_case(rng: random.Random):
    n = rng.randint(0, 60)
    steps = rng.randint(1, 40)
    bufs = []
    for i in range(n):
        a = rng.randrange(steps)
        b = min(steps - 1, a + rng.choice([0, 0, 1, 2, 5, 20]))
        size = rng.choice([0, 1, 7, 16, 48, 100, 1000, 4096, rng.randint(1, 20000)])
        bufs.append(Buf(f"t{rng.randrange(10**6)}_{i}", size, a, b))
    alignment = rng.choice([1, 4, 16])
    links = []
    for _ in range(rng.randint(0, n // 6)):  # a chain of nests or ties between distinct, unlinked buffers
        a, b = rng.sample(range(n), 2) if n >= 2 else (0, 0)
        if a == b or any(x in (a, b) for link in links for x in link[:2]):
            continue
        links.append((a, b, alignment * rng.randint(-3, 3)))
    fixed = {}
    if n and rng.random() < 0.5:  # one pinned buffer, linked or not (a link may push its unit below 0)
        fixed[rng.randrange(n)] = alignment * rng.randint(0, 8)
    return bufs, alignment, fixed, links


@pytest.mark.parametrize("seed", range(40))
def test_native_equals_python_on_random_plans(seed, monkeypatch):
    rng = random.Random(seed)
    for _ in range(25):
        bufs, alignment, fixed, links = _random_case(rng)
        for trials in (placement.TRIALS, (("pressure", True), ("size", False))):
            monkeypatch.setattr(placement, "TRIALS", trials)
            assert _outcome(placement.place, bufs, alignment, fixed, links) == _outcome(
                lambda *a: _python(*a, monkeypatch), bufs, alignment, fixed, links)


def _outcome(place, *args):
    try:
        return place(*args)
    except ValueError as e:
        return str(e)


def test_native_raises_as_python(monkeypatch):
    bufs = [Buf("a", 16, 0, 1), Buf("b", 16, 0, 1), Buf("c", 16, 0, 1)]
    links = [(0, 1, 16), (1, 2, 16), (0, 2, 16)]  # c at a + 32 and at a + 16
    with pytest.raises(ValueError, match="contradictory"):
        placement.place(bufs, 16, {}, links)
    with pytest.raises(ValueError, match="fixed offset"):
        placement.place(bufs, 16, {0: 0, 1: 0}, [(0, 1, 16)])


def test_native_equals_python_on_real_train_steps(monkeypatch):
    """Every placement of a few mbv2 schemes' train steps, striped stages under a tight budget included."""
    from pathlib import Path

    import tte
    from tte.auto.cost import CostModel, Item
    from tte.frontend import load
    from tte.passes import memory_plan

    model = Path(tte.__file__).resolve().parents[1].parent / "shared" / "models" / "mbv2-w0.35-int8.onnx"
    if not model.exists():
        pytest.skip("shared models absent")
    native, seen = placement_native.place, []

    def both(bufs, alignment, fixed, links, trials):
        got = native(bufs, alignment, fixed, links, trials)
        seen.append(len(bufs))
        monkeypatch.setenv("TTE_PLACEMENT", "python")
        try:
            ref = placement.place(bufs, alignment, fixed, links)
        finally:
            monkeypatch.delenv("TTE_PLACEMENT")
        names = list(placement.ORDERS)
        order, tightest = trials[got[2]]
        assert (got[0], got[1]) == (ref[0], ref[1])
        assert ref[2] == f"{names[order]}, {'tightest' if tightest else 'lowest'} fit"
        return got

    monkeypatch.setattr(placement_native, "place", both)
    memory_plan._MEMO.clear()
    cm = CostModel(load(model), "new:10", "stm32f746", 128 * 1024)
    layers = [n.name for n in cm.layers]
    for scheme in ((), (Item(layers[-1], "bias"), Item(layers[-2], "weight", 0.5)),
                   (Item(layers[-8], "bias"), Item(layers[-5], "weight", 1.0))):
        cm.exact(scheme)
    assert len(seen) >= 10 and max(seen) > 100
