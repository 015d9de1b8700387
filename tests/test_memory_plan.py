"""The memory planner: hand-made intervals with known optima, random intervals, and graph lifetimes."""

from __future__ import annotations

import numpy as np
import pytest

from tte.ir import Graph, IOSpec, Node
from tte.ops import cases as C
from tte.passes.memory_plan import Buffer, graph_buffers, plan, plan_graph


def _collisions(p) -> list[tuple[str, str]]:
    """Pairs of buffers that are live at the same step and share bytes."""
    bad = []
    bufs = [b for b in p.buffers if b.size]
    for i, a in enumerate(bufs):
        for b in bufs[i + 1:]:
            oa, ob = p.offsets[a.name], p.offsets[b.name]
            if a.overlaps(b) and oa < ob + b.size and ob < oa + a.size:
                bad.append((a.name, b.name))
    return bad


def test_chain_reuses_memory_of_dead_buffers():
    # A and C are never live together: the optimum puts both at 0 and B beside them.
    p = plan([Buffer("a", 1024, 0, 1), Buffer("b", 512, 1, 2), Buffer("c", 1024, 2, 3)])
    assert p.arena_bytes == 1536
    assert p.offsets == {"a": 0, "c": 0, "b": 1024}
    assert p.peak_live_bytes == 1536
    assert p.peak_step == 1


def test_disjoint_lifetimes_need_only_the_largest():
    p = plan([Buffer(f"t{i}", 100 * (i + 1), i, i) for i in range(5)], alignment=16)
    assert p.arena_bytes == 512  # 500 rounded up to the alignment
    assert set(p.offsets.values()) == {0}


def test_all_live_together_need_the_aligned_sum():
    p = plan([Buffer("x", 10, 0, 3), Buffer("y", 10, 1, 2), Buffer("z", 33, 0, 3)], alignment=16)
    assert p.arena_bytes == 48 + 16 + 16
    assert all(o % 16 == 0 for o in p.offsets.values())
    assert not _collisions(p)


def test_first_fit_uses_a_gap_between_buffers():
    # big1 and big2 are placed first at 0 and 256; "hole" (never live with big1) fits at 0, and "small"
    # in the gap between "hole" and big2.
    bufs = [Buffer("big1", 256, 0, 1), Buffer("big2", 256, 0, 4), Buffer("small", 48, 3, 4),
            Buffer("hole", 200, 2, 4)]
    p = plan(bufs, alignment=8)
    assert p.offsets["big1"] == 0 and p.offsets["big2"] == 256
    assert p.offsets["hole"] == 0
    assert p.offsets["small"] == 200
    assert p.arena_bytes == 512


def test_alignment_eight_and_sixteen():
    bufs = [Buffer("a", 6, 0, 1), Buffer("b", 6, 0, 1)]
    assert plan(bufs, alignment=8).offsets == {"a": 0, "b": 8}
    assert plan(bufs, alignment=8).arena_bytes == 16
    assert plan(bufs, alignment=16).offsets == {"a": 0, "b": 16}
    assert plan(bufs, alignment=16).arena_bytes == 32
    with pytest.raises(ValueError):
        plan(bufs, alignment=12)


def test_random_intervals_never_collide_and_cover_the_peak():
    rng = np.random.default_rng(1234)
    for trial in range(300):
        n = int(rng.integers(1, 25))
        steps = int(rng.integers(1, 30))
        bufs = []
        for i in range(n):
            a, b = sorted(rng.integers(0, steps, size=2))
            bufs.append(Buffer(f"b{i}", int(rng.integers(0, 5000)), int(a), int(b)))
        alignment = 8 if trial % 2 else 16
        p = plan(bufs, alignment=alignment)
        assert not _collisions(p), trial
        assert all(p.offsets[b.name] % alignment == 0 for b in bufs)
        assert p.arena_bytes >= max(p.live_bytes())
        assert all(p.offsets[b.name] + b.size <= p.arena_bytes for b in bufs)
        assert p.arena_bytes <= sum(-(-b.size // alignment) * alignment for b in bufs)


def test_plan_is_deterministic():
    bufs = [Buffer(f"b{i}", 64, i % 3, i % 3 + 1) for i in range(9)]
    assert plan(bufs).offsets == plan(list(reversed(bufs))).offsets


def _conv_reshape_fc() -> Graph:
    rng = np.random.default_rng(0)
    x = C.activation("x", (1, 4, 4, 2), 0.05, 0)
    w = C.conv_weights("w", (3, 3, 3, 2), 0, rng)
    b = C.bias("b", 3, 0.05, w.quant.scale, rng)
    y = C.activation("y", (1, 4, 4, 3), 0.05, 1)
    flat = C.activation("flat", (1, 48), 0.05, 1)
    fw = C.conv_weights("fw", (5, 48), 0, rng)
    fb = C.bias("fb", 5, 0.05, fw.quant.scale, rng)
    z = C.activation("z", (1, 5), 0.1, 0)
    nodes = (
        Node("conv2d", "conv", ("x", "w", "b"), ("y",), dict(stride=(1, 1), pad=(1, 1, 1, 1), act=(-128, 127))),
        Node("reshape", "flatten", ("y",), ("flat",)),
        Node("fully_connected", "fc", ("flat", "fw", "fb"), ("z",), dict(act=(-128, 127))),
    )
    tensors = {t.name: t for t in (x, w, b, y, flat, fw, fb, z)}
    return Graph("g", tensors, nodes, (IOSpec("x", x.shape),), (IOSpec("z", z.shape),))


def test_graph_reshape_aliases_its_input_and_extends_its_lifetime():
    g = _conv_reshape_fc()
    bufs, aliases, _ = graph_buffers(g)
    by_name = {b.name: b for b in bufs}
    assert aliases == {"flat": "y"}
    assert "flat" not in by_name and "w" not in by_name
    assert (by_name["y"].first, by_name["y"].last) == (0, 2)  # read by fc through the alias
    assert by_name["x"].first == 0 and by_name["x"].last == 0 and by_name["z"].last == 2
    p = plan_graph(g, external=("x", "z"))
    assert {b.name for b in p.buffers} == {"y"}
    assert p.offset("flat") == p.offset("y") == 0
    assert p.arena_bytes == 48


def test_graph_copy_nodes_do_not_alias():
    bufs, aliases, _ = graph_buffers(_conv_reshape_fc(), copies=("flatten",))
    assert aliases == {}
    assert {b.name for b in bufs} == {"x", "y", "flat", "z"}


def test_text_lists_every_buffer_and_a_timeline():
    p = plan([Buffer("a", 1024, 0, 1), Buffer("b", 512, 1, 2), Buffer("c", 1024, 2, 3)],
             step_names=("n0", "n1", "n2", "n3"))
    text = p.to_text()
    assert "arena 1536 bytes, peak live 1536 bytes at step 1 (n1)" in text
    rows = [line for line in text.splitlines() if line.startswith(("a ", "b ", "c "))]
    assert rows == ["a    |##..|", "c    |..##|", "b    |.##.|"]
    assert "     0     1024     2     3  c" in text


def test_fixed_offsets_are_kept_and_avoided():
    rng = np.random.default_rng(4)
    bufs = [Buffer(f"t{i}", int(rng.integers(1, 300)), int(a), int(a + rng.integers(0, 4)))
            for i, a in enumerate(rng.integers(0, 10, 30))]
    p = plan(bufs, 16, fixed={"t3": 4096, "t7": 0})
    assert p.offsets["t3"] == 4096 and p.offsets["t7"] == 0 and not _collisions(p)
    with pytest.raises(ValueError, match="fixed offsets"):
        plan(bufs, 16, fixed={"t3": 5})


def test_train_step_gradients_work_in_place_and_have_kinds():
    """apply_mask and grad_add overwrite an input that dies at that node; plan.txt names each buffer's kind."""
    import tte.train  # noqa: F401  (registers the training ops)
    from tte.ir import Tensor
    from tte.passes.train_plan import plan_train_step, train_aliases

    t = {n: Tensor(n, (1, 4, 4, 8), "float32") for n in ("dy", "dacc", "g2", "sum", "keep")}
    t["m"] = Tensor("m", (16,), "uint8")
    t["x"] = Tensor("x", (1, 4, 4, 8), "int8")
    nodes = (Node("mean_grad", "f", ("x",), ("m", "keep")),  # stands in for a forward node and its mask
             Node("mean_grad", "g", ("x",), ("dy",)),
             Node("apply_mask", "a", ("dy", "m"), ("dacc",)),
             Node("mean_grad", "h", ("x",), ("g2",)),
             Node("grad_add", "s", ("dacc", "g2"), ("sum",)),
             Node("mean_grad", "k", ("sum", "keep"), ("x2",)))
    t["x2"] = Tensor("x2", (1, 4, 4, 8), "float32")
    g = Graph("g", t, nodes, (IOSpec("x", (1, 4, 4, 8)),), (IOSpec("x2", (1, 4, 4, 8)),))
    assert train_aliases(g).roots == {"dacc": "dy", "sum": "dy"}
    p = plan_train_step(g, 1, {"m"}, external={"x2"})
    assert {b.name: p.kinds[b.name] for b in p.buffers} == {"x": "saved", "m": "mask", "keep": "saved",
                                                           "dy": "gradient", "g2": "gradient"}
    assert "by kind:" in p.to_text() and not _collisions(p)


# --- placement orders, nests (tte/passes/placement.py) ---------------------------------------------------------


def _tflite_arena(bufs, alignment=16, **kw) -> int:
    """The arena of TFLite Micro's order alone (the first trial)."""
    import tte.passes.memory_plan as mp
    from tte.passes import placement

    saved = placement.TRIALS
    placement.TRIALS = saved[:1]
    mp._MEMO.clear()
    try:
        return plan(bufs, alignment, **kw).arena_bytes
    finally:
        placement.TRIALS = saved
        mp._MEMO.clear()


def test_first_use_order_closes_the_gap_largest_first_leaves():
    """The forward of an inverted-residual block (proxyless, blocks.1-3): largest first puts every 48 KB
    expansion at 0, then the residual stacks the 16 KB tensors to 96 KB; the best order reaches the live peak."""
    kb = 1024
    bufs = [Buffer("b1.out", 16 * kb, 0, 4), Buffer("b2.pw1", 48 * kb, 1, 2), Buffer("b2.dw", 48 * kb, 3, 3),
            Buffer("b2.pw2", 16 * kb, 3, 4), Buffer("b2.res", 16 * kb, 4, 5), Buffer("b3.pw1", 48 * kb, 5, 6),
            Buffer("input", 48 * kb, 0, 0)]
    p = plan(bufs)
    assert _tflite_arena(bufs) == 96 * kb
    assert p.arena_bytes == p.peak_live_bytes == 80 * kb and not _collisions(p)
    assert p.order and f"placed by {p.order}" in p.to_text()


def test_random_plans_never_exceed_the_tflite_order():
    rng = np.random.default_rng(77)
    for trial in range(60):
        bufs = []
        for i in range(int(rng.integers(5, 40))):
            a = int(rng.integers(0, 30))
            bufs.append(Buffer(f"b{i}", int(rng.integers(1, 4000)), a, a + int(rng.integers(0, 6))))
        p = plan(bufs)
        assert not _collisions(p), trial
        assert -(-p.peak_live_bytes // 16) * 16 <= p.arena_bytes <= _tflite_arena(bufs), trial


def test_nested_buffer_sits_at_its_offset_and_shares_only_with_its_host():
    rng = np.random.default_rng(3)
    for trial in range(40):
        bufs = [Buffer("x", 4800, 0, 0), Buffer("y", 1600, 0, 5)]
        bufs += [Buffer(f"o{i}", int(rng.integers(16, 3000)), int(a), int(a + rng.integers(0, 3)))
                 for i, a in enumerate(rng.integers(0, 6, 12))]
        delta = int(rng.choice([-1024, -16, 0, 32, 4000]))
        p = plan(bufs, nested=[("x", "y", delta)])
        assert p.offsets["y"] == p.offsets["x"] + delta and min(p.offsets.values()) >= 0
        assert [c for c in _collisions(p) if set(c) != {"x", "y"}] == [], trial
        shared = max(0, min(4800, delta + 1600) - max(delta, 0))
        assert p.live_bytes()[0] == sum(b.size for b in p.live_at(0)) - shared


def test_nest_below_a_fixed_input_at_zero_is_dropped():
    bufs = [Buffer("x", 4800, 0, 0), Buffer("y", 1600, 0, 5), Buffer("z", 100, 1, 2)]
    p = plan(bufs, fixed={"x": 0}, nested=[("x", "y", -512)])
    assert p.nested == () and not _collisions(p) and p.offsets["x"] == 0
    q = plan(bufs, fixed={"x": 512}, nested=[("x", "y", -512)])
    assert q.nested == (("x", "y", -512),) and q.offsets["y"] == 0
