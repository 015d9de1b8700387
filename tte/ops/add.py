"""add: TFLite Micro's int8 ADD of two tensors of equal shape.

Both inputs are rescaled to a common scale 2 * max(s1, s2) with 20 bits of headroom, summed, and rescaled to
the output: y = MBQM(MBQM((q1 - zp1) << 20, M1, S1) + MBQM((q2 - zp2) << 20, M2, S2), Mo, So) + zp_out.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tte.ir import Graph, Node
from tte.ops import OpDef, register
from tte.ops import cases as C
from tte.quant import activation_range, mbqm, quantize_multiplier

LEFT_SHIFT = 20


def add_params(s1: float, s2: float, s_out: float) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """(M, shift) for input 1, input 2 and the output, computed in double as TFLite Micro does."""
    twice_max = 2.0 * max(float(np.float32(s1)), float(np.float32(s2)))
    m1 = quantize_multiplier(float(np.float32(s1)) / twice_max)
    m2 = quantize_multiplier(float(np.float32(s2)) / twice_max)
    mo = quantize_multiplier(twice_max / ((1 << LEFT_SHIFT) * float(np.float32(s_out))))
    return m1, m2, mo


def add_reference(node: Node, graph: Graph, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    qa, qb, qy = (graph[t].quant for t in (*node.inputs[:2], node.outputs[0]))
    (m1, s1), (m2, s2), (mo, so) = add_params(qa.s, qb.s, qy.s)
    a = (inputs[0].astype(np.int64) - qa.zp) << LEFT_SHIFT
    b = (inputs[1].astype(np.int64) - qb.zp) << LEFT_SHIFT
    out = mbqm(mbqm(a, m1, s1) + mbqm(b, m2, s2), mo, so) + qy.zp
    lo, hi = node.attrs["act"]
    return [np.clip(out, lo, hi).astype(np.int8)]


def _add_case(name: str, shape: tuple, sa: float, sb: float, so: float, act: str, seed: int) -> Graph:
    rng = np.random.default_rng(seed)
    a = C.activation(f"{name}_a", shape, sa, int(rng.integers(-20, 20)))
    b = C.activation(f"{name}_b", shape, sb, int(rng.integers(-20, 20)))
    y = C.activation(f"{name}_y", shape, so, int(rng.integers(-20, 20)))
    return C.single_node("add", name, [a, b], [y], act=activation_range(act, so, y.quant.zp))


def add_cases() -> list[Graph]:
    return [
        _add_case("add_same_scale", (1, 4, 4, 8), 0.05, 0.05, 0.1, "none", 0),
        _add_case("add_mixed", (1, 3, 5, 6), 0.02, 0.07, 0.06, "none", 1),
        _add_case("add_relu", (1, 2, 2, 16), 0.1, 0.03, 0.08, "relu", 2),
        _add_case("add_relu6", (1, 3, 3, 8), 0.05, 0.04, 0.03, "relu6", 3),
    ]


register(OpDef("add", add_reference, lambda n, g: 0, add_cases))
