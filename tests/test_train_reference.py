"""The train step graph and its numpy reference: pruning, saved data, masks, schedule, arithmetic, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from train_helpers import NetBuilder, mobilenet_like

from tte import ops
from tte.errors import TteError
from tte.ir import Node
from tte.passes.memory_plan import plan_graph
from tte.quant import round_half_away
from tte.train import Trainer, TrainOptions, apply_head, memory_summary
from tte.train.forward_ops import PRE_CLAMP, clamp_range, mask_op, unpack_mask
from tte.train.fp32 import Xorshift32, exp_f32, log_f32, ordered_sum, round_update
from tte.train.spec import channel_importance, scheme_spec


@pytest.fixture(scope="module")
def net():
    return mobilenet_like()


def _x(graph, seed=0):
    t = graph[graph.inputs[0].tensor]
    return np.random.default_rng(seed).integers(-128, 128, t.shape).astype(np.int8)


def _index(tg, name):
    return [n.name for n in tg.graph.nodes].index(name)


# --- forward: mask variants ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("op", sorted(PRE_CLAMP))
def test_mask_variants_reproduce_the_op_and_mark_its_clamp(op):
    cases = ops.get(op).cases()
    assert cases, f"{op} has no test cases"
    for graph in cases:
        node = graph.nodes[0]
        for seed in range(3):
            inputs = [np.random.default_rng(seed + i).integers(-128, 128, graph[t].shape).astype(np.int8)
                      for i, t in enumerate(node.inputs) if t and not graph[t].is_const]
            args = [inputs.pop(0) if t and not graph[t].is_const else (graph[t].data if t else None)
                    for t in node.inputs]
            y = ops.get(op).reference(node, graph, args)[0]
            y2, packed = ops.get(mask_op(op)).reference(node, graph, args)
            pre = PRE_CLAMP[op](node, graph, args).reshape(y.shape)
            lo, hi = clamp_range(node)
            assert np.array_equal(y, y2)
            assert np.array_equal(np.clip(pre, lo, hi), y), f"{graph.name}: the pre-clamp value disagrees with {op}"
            assert packed.dtype == np.uint8 and packed.size == (y.size + 7) // 8
            assert np.array_equal(unpack_mask(packed, y.shape), (pre >= lo) & (pre <= hi))


# --- graph structure ----------------------------------------------------------------------------------------------


def test_backward_is_pruned_below_the_lowest_trained_layer(net):
    tg = Trainer(net, "last:2").program
    order = [n.name for n in net.nodes]
    lowest = order.index("blocks.1.pointwise2")
    owners = {n.name.split("/")[0] for n in tg.backward_nodes() if "/" in n.name}
    assert {o for o in owners if o in order} == {"blocks.1.pointwise2", "blocks.1.residual", "pool", "flatten",
                                                  "classifier"}
    assert "blocks.1.pointwise2/input_grad" not in [n.name for n in tg.graph.nodes]
    assert all(order.index(n) >= lowest for n in tg.masks)
    # the residual's skip input comes from below: it gets no gradient
    assert "blocks.0.pointwise2:out" not in tg.grads


def test_no_weight_gradient_for_frozen_weights(net):
    tg = Trainer(net, "bias-only").program
    assert not [n for n in tg.graph.nodes if n.op.endswith("weight_update") or n.op == "gather_channels"]
    assert tg.saved == {}
    assert {s for s, _ in tg.state} == {n.inputs[2] for n in net.nodes if n.op.endswith(("conv2d", "connected"))} \
        | {"tte:rng"}
    tg = Trainer(net, "mobiletl:1").program
    assert [n.name for n in tg.graph.nodes if n.op.endswith("weight_update")] == ["blocks.1.pointwise2/weight_update"]
    assert not [n for n in tg.graph.nodes if n.name == "blocks.1.pointwise1/input_grad"]


def test_saved_activations_only_for_trained_channels(net):
    spec = scheme_spec({"weights": {"blocks.1.pointwise1": 0.25, "blocks.1.depthwise": [5, 2, 9]}}, net)
    tr = Trainer(net, spec)
    tg = tr.program
    gathers = {n.name: n for n in tg.graph.nodes if n.op == "gather_channels"}
    assert set(gathers) == {"blocks.1.pointwise1/save", "blocks.1.depthwise/save"}
    imp = channel_importance(net.node("blocks.1.pointwise1"), net)
    assert gathers["blocks.1.pointwise1/save"].attrs["channels"] == tuple(sorted(np.argsort(-imp)[:2]))
    assert tg.graph[tg.saved["blocks.1.pointwise1"]].shape == (1, 3, 3, 2)
    assert tg.graph[tg.saved["blocks.1.depthwise"]].shape == (1, 3, 3, 3)
    env = tr.trace_step(_x(net), 1).env
    assert np.array_equal(env[tg.saved["blocks.1.depthwise"]], env["blocks.1.pointwise1:out"][..., [2, 5, 9]])
    summary = memory_summary(tg)
    assert summary["saved_activation_bytes"] == 9 * 2 + 9 * 3
    by_node = {layer["node"]: layer for layer in summary["layers"]}
    assert by_node["blocks.1.pointwise1"]["param_bytes"] == 24 * 2  # 24 outputs x 2 trained inputs, no bias
    assert by_node["blocks.1.depthwise"]["param_bytes"] == 9 * 3


def test_masks_are_one_bit_per_element(net):
    tg = Trainer(net, "full").program
    assert set(tg.masks) == {n.name for n in net.nodes if n.op not in ("reshape",)}
    for node, mask in tg.masks.items():
        t = tg.graph[mask]
        assert t.dtype == "uint8" and t.shape == ((net[net.node(node).outputs[0]].size + 7) // 8,)
    assert memory_summary(tg)["mask_bytes"] == sum(tg.graph[m].nbytes for m in tg.masks.values())


def test_schedule_dx_before_update_and_update_right_after(net):
    tg = Trainer(net, "full").program
    names = [n.name for n in tg.graph.nodes]
    assert len(set(names)) == len(names)
    loss = names.index("tte:loss")
    assert loss == tg.num_forward and all(not n.op.endswith(("grad", "update")) for n in tg.graph.nodes[:loss])
    for node in ("blocks.1.pointwise2", "blocks.0.depthwise", "classifier"):
        i_mask, i_bias = names.index(f"{node}/apply_mask"), names.index(f"{node}/bias_update")
        i_dx, i_w = names.index(f"{node}/input_grad"), names.index(f"{node}/weight_update")
        assert loss < i_mask < i_bias < i_dx < i_w
        between = [n.op for n in tg.graph.nodes[i_dx + 1:i_w]]
        assert set(between) <= {"grad_add"}, between
    assert names[-1] == "first_conv/weight_update"


def test_planner_accepts_the_train_step(net):
    tg = Trainer(net, "last:2").program
    external = [io.tensor for io in tg.graph.inputs] + [new for _, new in tg.state]
    plan = plan_graph(tg.graph, external=external)
    assert plan.arena_bytes >= plan_graph(net).arena_bytes
    assert "blocks.1.depthwise:out" in plan.offsets  # kept alive for the weight update


# --- arithmetic ---------------------------------------------------------------------------------------------------


def test_bias_and_weight_updates_follow_the_qas_rule(net):
    tr = Trainer(net, "last:1", TrainOptions(rounding="nearest"))
    x, lr = _x(net, 3), 0.5
    trace = tr.trace_step(x, 2)
    before = tr.params()
    tr.train_step(x, 2, lr)
    after = tr.params()
    node = next(n for n in tr.program.graph.nodes if n.name == "classifier/weight_update")
    xq = tr.program.graph["flatten:out"].quant
    g_real = trace.grads["classifier:w"]
    g = g_real / np.float32(xq.s)  # the sum the kernel forms, before s_x
    factor = np.asarray(node.attrs["factor"], np.float32)[:, None]
    expect = np.clip(before["classifier:w"] + round_half_away(-((np.float32(lr) * g) * factor)), -127, 127)
    assert np.array_equal(after["classifier:w"], expect)
    # the factor is s_x / s_w: in real terms the update is plain SGD, w_real -= lr * dL/dw_real (up to rounding)
    s_w = tr.program.graph["classifier:w"].quant.scale[:, None]
    moved = (after["classifier:w"].astype(np.float64) - before["classifier:w"]) * s_w
    free = np.abs(after["classifier:w"]) < 127  # not saturated
    assert free.mean() > 0.5
    assert np.all(np.abs(moved + lr * g_real)[free] <= 0.5001 * np.broadcast_to(s_w, free.shape)[free])
    bnode = next(n for n in tr.program.graph.nodes if n.name == "classifier/bias_update")
    step = round_half_away(-((np.float32(lr) * trace.grads["classifier:b"]) * np.float32(bnode.attrs["factor"])))
    assert np.array_equal(after["classifier:b"], before["classifier:b"] + step)
    assert np.any(step != 0) and np.any(after["classifier:w"] != before["classifier:w"])


def test_no_qas_is_sgd_on_the_integer_values(net):
    qas = Trainer(net, "last:1", TrainOptions(qas=True)).program
    raw = Trainer(net, "last:1", TrainOptions(qas=False)).program
    fq = np.asarray(next(n for n in qas.graph.nodes if n.name == "classifier/weight_update").attrs["factor"])
    fr = np.asarray(next(n for n in raw.graph.nodes if n.name == "classifier/weight_update").attrs["factor"])
    s_w = net["classifier:w"].quant.scale
    np.testing.assert_allclose(fr / fq, s_w.astype(np.float64) ** 2, rtol=1e-6)  # the paper's s_w^-2 mismatch


def test_same_seed_same_params_and_seed_matters(net):
    def train(seed: int, rounding: str = "stochastic") -> dict:
        tr = Trainer(net, "mobiletl:2", TrainOptions(seed=seed, rounding=rounding))
        for i in range(4):
            tr.train_step(_x(net, i), i % 6, 0.05)
        return tr.params()

    a, b, c = train(7), train(7), train(8)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert any(not np.array_equal(a[k], c[k]) for k in a if k != "tte:rng")
    n1, n2 = train(7, "nearest"), train(8, "nearest")
    assert "tte:rng" not in n1 and all(np.array_equal(n1[k], n2[k]) for k in n1)


def test_training_lowers_the_loss_on_a_sample(net):
    # the fp32 head: the random int8 classifier's output range (0.8 at most) caps how low its loss can go
    tr = Trainer(net, "full", TrainOptions(head="fp32"))
    x = _x(net, 5)
    losses = [tr.train_step(x, 4, 0.05) for _ in range(8)]
    assert losses[-1] < 0.5 * losses[0], losses
    assert int(np.argmax(tr.infer(x))) == 4


def test_fp32_head_starts_from_the_int8_head(net):
    tr8, tr32 = Trainer(net, "last:1"), Trainer(net, "last:1", TrainOptions(head="fp32"))
    x = _x(net, 2)
    z8, z32 = tr8.infer(x), tr32.infer(x)
    s = net[net.outputs[0].tensor].quant.s
    assert np.abs(z8 - z32).max() <= 1.5 * s  # only the int8 head's output rounding differs
    tr32.train_step(x, 1, 0.1)
    assert tr32.params()["classifier:w_f32"].dtype == np.float32
    new = Trainer(net, "bias-only", TrainOptions(head="new:3"))
    assert np.array_equal(new.infer(x), np.zeros(3, np.float32))
    new.train_step(x, 2, 0.1)
    assert int(np.argmax(new.infer(x))) == 2


def test_user_errors_are_one_line(net):
    tr = Trainer(net, "last:1")
    with pytest.raises(TteError, match="label 6 is outside 0..5"):
        tr.train_step(_x(net), 6, 0.1)
    with pytest.raises(TteError, match="input must be int8"):
        tr.train_step(_x(net).astype(np.float32), 1, 0.1)
    with pytest.raises(TteError, match="unknown rounding"):
        TrainOptions(rounding="up")
    with pytest.raises(TteError, match="cannot become an fp32 head"):
        nb = NetBuilder("convhead", np.random.default_rng(0).uniform(-1, 1, (4, 4, 4, 2)))
        nb.conv(3, 3, 1, act="none", name="last")
        apply_head(nb.graph(), "fp32")


def test_op_without_gradient_rule_below_a_trained_layer(net):
    table = tuple(int(v) for v in np.clip(np.arange(-128, 128) // 2, -128, 127))
    node = net.node("blocks.0.pointwise2")
    out = net[node.outputs[0]]
    lut = Node("lut", "lut", (node.outputs[0],), ("lut:out",), {"table": table})
    tensors = dict(net.tensors)
    tensors["lut:out"] = type(out)("lut:out", out.shape, "int8", out.quant)
    nodes = []
    for n in net.nodes:
        n = Node(n.op, n.name, tuple("lut:out" if t == node.outputs[0] else t for t in n.inputs), n.outputs, n.attrs)
        nodes.append(n)
        if n.name == node.name:
            nodes.append(lut)
    g = net.with_nodes(nodes, tensors)
    Trainer(g, "last:2")  # the lut lies below: fine
    with pytest.raises(TteError, match=r"node 'lut' \(lut\): no gradient rule"):
        Trainer(g, "full")


# --- float32 building blocks -----------------------------------------------------------------------------------


def test_xorshift32_vectorized_equals_the_scalar_loop():
    rng = Xorshift32(1)
    draws = rng.draws(10000)
    x, ref = 1, []
    for _ in range(10000):
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        ref.append(x)
    assert draws[0] == 270369 and np.array_equal(draws, np.array(ref, np.uint32))
    assert rng.state == ref[-1]
    u = Xorshift32(12345).uniform(1000)
    assert u.dtype == np.float32 and 0 <= u.min() and u.max() < 1


def test_ordered_sum_is_left_to_right_float32():
    terms = np.random.default_rng(0).normal(0, 1, (300, 7)).astype(np.float32) * np.float32(1e4)
    ref = np.zeros(7, np.float32)
    for t in terms:
        ref = ref + t
    assert np.array_equal(ordered_sum(terms), ref)


def test_exp_and_log_are_accurate():
    x = np.linspace(-80, 10, 20001, dtype=np.float32)
    np.testing.assert_allclose(exp_f32(x), np.exp(x.astype(np.float64)), rtol=3e-7)
    assert exp_f32(np.float32(-100.0)) == 0
    y = np.geomspace(1e-3, 1e6, 20001).astype(np.float32)
    np.testing.assert_allclose(log_f32(y), np.log(y.astype(np.float64)), rtol=3e-7, atol=1e-7)


def test_stochastic_rounding_is_unbiased():
    d = np.full(200000, 0.3, np.float32)
    steps = round_update(d, "stochastic", Xorshift32(99))
    assert set(np.unique(steps)) == {0, 1} and abs(steps.mean() - 0.3) < 0.005
    assert np.array_equal(round_update(np.array([0.5, -0.5, 0.49, -1.5], np.float32), "nearest", None),
                          [1, -1, 0, -2])


def test_written_slices_name_the_sram_part_of_each_weight(net):
    spec = scheme_spec({"bias": ["classifier"], "weights": {"blocks.1.pointwise1": [1, 4], "blocks.1.depthwise": [0],
                                                            "classifier": 1}}, net)
    slices = Trainer(net, spec).program.written_slices()
    assert slices == {"classifier:b": None, "classifier:w": None, "blocks.1.depthwise:w": (0,),
                      "blocks.1.pointwise1:w": (1, 4), "tte:rng": None}
