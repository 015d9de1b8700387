"""requantize: int8 -> int8 with a new scale and zero point (TFLite QUANTIZE between two int8 tensors)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tte.ir import Graph, Node
from tte.ops import OpDef, register
from tte.ops import cases as C
from tte.quant import mbqm, quantize_multiplier


def requantize_params(s_in: float, s_out: float) -> tuple[int, int]:
    return quantize_multiplier(float(np.float64(np.float32(s_in)) / np.float64(np.float32(s_out))))


def requantize_reference(node: Node, graph: Graph, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    qx, qy = graph[node.inputs[0]].quant, graph[node.outputs[0]].quant
    m, s = requantize_params(qx.s, qy.s)
    y = mbqm(inputs[0].astype(np.int64) - qx.zp, m, s) + qy.zp
    return [np.clip(y, -128, 127).astype(np.int8)]


def requantize_cases() -> list[Graph]:
    x = C.activation("requant_x", (1, 4, 4, 3), 0.05, 4)
    y = C.activation("requant_y", (1, 4, 4, 3), 0.08, -9)
    x2 = C.activation("requant2_x", (1, 10), 0.1, 0)
    y2 = C.activation("requant2_y", (1, 10), 0.03, 20)
    return [C.single_node("requantize", "requant", [x], [y]), C.single_node("requantize", "requant2", [x2], [y2])]


register(OpDef("requantize", requantize_reference, cases=requantize_cases))
