"""Ops that move bytes without arithmetic: reshape (an alias), transpose, pad (with the zero point)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tte.ir import Graph, Node
from tte.ops import OpDef, register
from tte.ops import cases as C


def reshape_reference(node: Node, graph: Graph, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    return [inputs[0].reshape(graph[node.outputs[0]].shape)]


def transpose_reference(node: Node, graph: Graph, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    return [np.ascontiguousarray(np.transpose(inputs[0], node.attrs["perm"]))]


def pad_reference(node: Node, graph: Graph, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    value = node.attrs.get("value", graph[node.outputs[0]].quant.zp)
    return [np.pad(inputs[0], node.attrs["pads"], constant_values=value)]


def reshape_cases() -> list[Graph]:
    x = C.activation("reshape_x", (1, 2, 3, 4), 0.1, 3)
    y = C.activation("reshape_y", (1, 24), 0.1, 3)
    return [C.single_node("reshape", "reshape", [x], [y])]


def transpose_cases() -> list[Graph]:
    x = C.activation("transpose_x", (1, 2, 3, 4), 0.1, 3)
    y = C.activation("transpose_y", (1, 4, 2, 3), 0.1, 3)
    return [C.single_node("transpose", "transpose", [x], [y], perm=(0, 3, 1, 2))]


def pad_cases() -> list[Graph]:
    x = C.activation("pad_x", (1, 5, 4, 3), 0.1, -7)
    y = C.activation("pad_y", (1, 6, 7, 3), 0.1, -7)
    # A pad value other than the zero point (TFLite PADV2), and padding of the channel axis.
    x2 = C.activation("pad_value_x", (1, 3, 3, 4), 0.1, 5)
    y2 = C.activation("pad_value_y", (1, 5, 3, 6), 0.1, 5)
    return [C.single_node("pad", "pad", [x], [y], pads=((0, 0), (0, 1), (1, 2), (0, 0))),
            C.single_node("pad", "pad_value", [x2], [y2], pads=((0, 0), (1, 1), (0, 0), (2, 0)), value=-100)]


register(OpDef("reshape", reshape_reference, cases=reshape_cases, inplace_alias=True))
register(OpDef("transpose", transpose_reference, cases=transpose_cases))
register(OpDef("pad", pad_reference, cases=pad_cases))
