"""fully_connected: TFLite Micro's int8 FULLY_CONNECTED (per-tensor or per-channel weights).

acc = sum (w - zp_w) * (x - zp_in) + bias; y = MBQM(acc, M[o], shift[o]) + zp_out, clamped to act.
The input is flattened to [batch, I].
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tte.ir import Graph, Node, QParams, Tensor
from tte.ops import OpDef, register
from tte.ops import cases as C
from tte.ops.conv2d import case_out_scale
from tte.quant import activation_range, conv_multipliers, mbqm, wrap_int32


def fc_reference(node: Node, graph: Graph, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    xq, w, y = graph[node.inputs[0]].quant, graph[node.inputs[1]], graph[node.outputs[0]]
    o, i = w.shape
    x = inputs[0].reshape(-1, i).astype(np.float64) - xq.zp
    wc = w.data.astype(np.float64) - w.quant.zp
    acc = (x @ wc.T).astype(np.int64)
    if len(node.inputs) > 2 and node.inputs[2]:
        acc = wrap_int32(acc + graph[node.inputs[2]].data.astype(np.int64))
    m, sh = conv_multipliers(xq.s, w.quant.scale, y.quant.s)
    out = mbqm(acc, m, sh) + y.quant.zp
    lo, hi = node.attrs["act"]
    return [np.clip(out, lo, hi).astype(np.int8).reshape(y.shape)]


def fc_macs(node: Node, graph: Graph) -> int:
    return int(np.prod(graph[node.inputs[1]].shape)) * (graph[node.inputs[0]].size // graph[node.inputs[1]].shape[1])


def _fc_case(name: str, i: int, o: int, per_channel: bool, act: str, seed: int, rank: int = 2) -> Graph:
    """`rank` 4 keeps the dimensions ([1, 1, 1, I] -> [1, 1, 1, O], TFLite's keep_num_dims)."""
    rng = np.random.default_rng(seed)
    lead = (1,) * (rank - 1)
    x = C.activation(f"{name}_x", (*lead, i), 0.04, int(rng.integers(-30, 30)))
    w = C.conv_weights(f"{name}_w", (o, i), 0, rng)
    if not per_channel:
        w = Tensor(w.name, w.shape, "int8", QParams(np.float32(0.01), 0), w.data)
    b = C.bias(f"{name}_b", o, x.quant.s, np.broadcast_to(w.quant.scale, (o,)), rng)
    y = C.activation(f"{name}_y", (*lead, o), case_out_scale(x.quant.s, w, i), int(rng.integers(-10, 10)))
    return C.single_node("fully_connected", name, [x, w, b], [y], act=activation_range(act, y.quant.s, y.quant.zp))


def fc_cases() -> list[Graph]:
    return [
        _fc_case("fc_per_tensor", 32, 10, False, "none", 0),
        _fc_case("fc_per_channel", 48, 12, True, "none", 1),
        _fc_case("fc_relu", 20, 7, False, "relu", 2),
        _fc_case("fc_relu6_per_channel", 24, 9, True, "relu6", 3),
        _fc_case("fc_keep_dims", 16, 6, True, "none", 4, rank=4),
    ]


register(OpDef("fully_connected", fc_reference, fc_macs, fc_cases))
