"""mul, sub and add_broadcast: TFLite Micro's int8 MUL, SUB and ADD, with broadcasting (numpy rules, rank <= 4).

- MUL: y = clamp(MBQM((a - zp_a) * (b - zp_b), M, S) + zp_y), M, S = QuantizeMultiplier(s_a * s_b / s_y) in
  double. Squeeze-and-excitation multiplies a [1, H, W, C] map by a [1, 1, 1, C] gate.
- SUB: ADD's arithmetic with the second term subtracted: both inputs rescaled to 2 * max(s_a, s_b) with 20 bits
  of headroom, y = clamp(MBQM(MBQM(a', M1, S1) - MBQM(b', M2, S2), Mo, So) + zp_y).
- ADD_BROADCAST: the same with the terms added (TFLite's ADD when the shapes differ: a per-channel offset, a
  [1, 1, 1, C] branch added to a map). Equal shapes stay `add` (tte/ops/add.py, which has faster kernels).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tte.ir import Graph, Node
from tte.ops import OpDef, register
from tte.ops import cases as C
from tte.ops.add import LEFT_SHIFT, add_params
from tte.quant import activation_range, mbqm, quantize_multiplier


def mul_params(s_a: float, s_b: float, s_y: float) -> tuple[int, int]:
    """(M, shift) of s_a * s_b / s_y, computed in double from the float32 scales as TFLite Micro's MulPrepare."""
    return quantize_multiplier(float(np.float32(s_a)) * float(np.float32(s_b)) / float(np.float32(s_y)))


def mul_pre_clamp(node: Node, graph: Graph, inputs: Sequence[np.ndarray]) -> np.ndarray:
    """The requantized product before the clamp, broadcast to the output shape."""
    qa, qb, qy = (graph[t].quant for t in (*node.inputs[:2], node.outputs[0]))
    m, s = mul_params(qa.s, qb.s, qy.s)
    prod = (inputs[0].astype(np.int64) - qa.zp) * (inputs[1].astype(np.int64) - qb.zp)
    return np.broadcast_to(mbqm(prod, m, s) + qy.zp, graph[node.outputs[0]].shape)


def _rescaled_terms(node: Node, graph: Graph, inputs: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """ADD / SUB's inputs rescaled to the common scale 2 * max(s_a, s_b), with LEFT_SHIFT bits of headroom."""
    qa, qb, qy = (graph[t].quant for t in (*node.inputs[:2], node.outputs[0]))
    (m1, s1), (m2, s2), _ = add_params(qa.s, qb.s, qy.s)
    a = mbqm((inputs[0].astype(np.int64) - qa.zp) << LEFT_SHIFT, m1, s1)
    b = mbqm((inputs[1].astype(np.int64) - qb.zp) << LEFT_SHIFT, m2, s2)
    return a, b


def _rescaled_output(node: Node, graph: Graph, total: np.ndarray) -> np.ndarray:
    qa, qb, qy = (graph[t].quant for t in (*node.inputs[:2], node.outputs[0]))
    mo, so = add_params(qa.s, qb.s, qy.s)[2]
    return np.broadcast_to(mbqm(total, mo, so) + qy.zp, graph[node.outputs[0]].shape)


def sub_pre_clamp(node: Node, graph: Graph, inputs: Sequence[np.ndarray]) -> np.ndarray:
    a, b = _rescaled_terms(node, graph, inputs)
    return _rescaled_output(node, graph, a - b)


def add_broadcast_pre_clamp(node: Node, graph: Graph, inputs: Sequence[np.ndarray]) -> np.ndarray:
    a, b = _rescaled_terms(node, graph, inputs)
    return _rescaled_output(node, graph, a + b)


def _clamped(pre_clamp):
    def reference(node: Node, graph: Graph, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        lo, hi = node.attrs["act"]
        return [np.clip(pre_clamp(node, graph, inputs), lo, hi).astype(np.int8)]

    return reference


def _case(op: str, name: str, sa: tuple, sb: tuple, scales: tuple, act: str, seed: int) -> Graph:
    rng = np.random.default_rng(seed)
    a = C.activation(f"{name}_a", sa, scales[0], int(rng.integers(-20, 20)))
    b = C.activation(f"{name}_b", sb, scales[1], int(rng.integers(-20, 20)))
    shape = tuple(int(d) for d in np.broadcast_shapes(sa, sb))
    y = C.activation(f"{name}_y", shape, scales[2], int(rng.integers(-20, 20)))
    return C.single_node(op, name, [a, b], [y], act=activation_range(act, scales[2], y.quant.zp))


def mul_cases() -> list[Graph]:
    return [
        _case("mul", "mul_same", (1, 4, 4, 6), (1, 4, 4, 6), (0.05, 0.04, 0.08), "none", 0),
        _case("mul", "mul_se", (1, 5, 5, 8), (1, 1, 1, 8), (0.05, 1 / 256, 0.03), "none", 1),
        _case("mul", "mul_se_relu6", (1, 3, 4, 6), (1, 1, 1, 6), (0.1, 0.004, 0.05), "relu6", 2),
        _case("mul", "mul_row", (1, 6), (1, 1), (0.02, 0.1, 0.01), "relu", 3),
        _case("mul", "mul_left_bcast", (1, 1, 1, 5), (1, 3, 3, 5), (0.02, 0.05, 0.02), "none", 4),
    ]


def sub_cases() -> list[Graph]:
    return [
        _case("sub", "sub_same", (1, 4, 4, 6), (1, 4, 4, 6), (0.05, 0.04, 0.08), "none", 5),
        _case("sub", "sub_bcast", (1, 3, 5, 4), (1, 1, 1, 4), (0.03, 0.07, 0.05), "relu", 6),
        _case("sub", "sub_flat", (1, 10), (1, 10), (0.1, 0.1, 0.1), "none", 7),
    ]


def add_broadcast_cases() -> list[Graph]:
    return [
        _case("add_broadcast", "add_bcast_channel", (1, 4, 5, 6), (1, 1, 1, 6), (0.05, 0.02, 0.06), "none", 8),
        _case("add_broadcast", "add_bcast_left_relu", (1, 1, 1, 8), (1, 3, 3, 8), (0.1, 0.03, 0.08), "relu", 9),
        _case("add_broadcast", "add_bcast_scalar", (1, 3, 4, 5), (1, 1, 1, 1), (0.04, 0.05, 0.05), "relu6", 10),
        _case("add_broadcast", "add_bcast_row", (1, 2, 7), (1, 1, 7), (0.03, 0.03, 0.05), "none", 11),
    ]


register(OpDef("mul", _clamped(mul_pre_clamp), lambda n, g: g[n.outputs[0]].size, mul_cases))
register(OpDef("sub", _clamped(sub_pre_clamp), cases=sub_cases))
register(OpDef("add_broadcast", _clamped(add_broadcast_pre_clamp), cases=add_broadcast_cases))
