"""Forward ops of the train step: int8 ops that also emit a 1-bit clamp mask, and `gather_channels`.

`<op>_mask` (conv2d, depthwise_conv2d, fully_connected, add, mean, avg_pool2d, requantize) computes the int8
output of `<op>` (with `<op>`'s own reference) and, as a second output, the mask of its clamp: bit = 1 iff the
requantized value before the clamp lies in [act_min, act_max] (the derivative of the clamp, which covers ReLU,
ReLU6 and int8 saturation). Masks are packed 8 per byte, little-endian within a byte: element i (NHWC order of
the output) is bit (i & 7) of byte (i >> 3). A C kernel computes both outputs in one pass.

`gather_channels` copies the listed channels (last axis) of an int8 activation: what a train step saves for
a weight trained on part of its input channels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from tte import ops
from tte.ir import Graph, Node
from tte.ops import OpDef, register
from tte.ops.add import LEFT_SHIFT, add_params
from tte.ops.conv2d import patches
from tte.ops.pool import mean_params
from tte.ops.requantize import requantize_params
from tte.quant import conv_multipliers, mbqm, wrap_int32

PreClamp = Callable[[Node, Graph, Sequence[np.ndarray]], np.ndarray]

INT8_RANGE = (-128, 127)


def pack_mask(bits: np.ndarray) -> np.ndarray:
    """Pack booleans (any shape, C order) 8 per byte, element i -> bit i & 7 of byte i >> 3."""
    return np.packbits(np.asarray(bits, bool).reshape(-1), bitorder="little")


def unpack_mask(packed: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    n = int(np.prod(shape))
    return np.unpackbits(np.asarray(packed, np.uint8), count=n, bitorder="little").astype(bool).reshape(shape)


def mask_bytes(shape: tuple[int, ...]) -> int:
    return (int(np.prod(shape)) + 7) // 8


def clamp_range(node: Node) -> tuple[int, int]:
    return tuple(node.attrs.get("act", INT8_RANGE))  # type: ignore[return-value]


# --- pre-clamp values: the forward math of each op up to (not including) the clamp -----------------------------


def _requant(node: Node, graph: Graph, acc: np.ndarray, s_w: np.ndarray) -> np.ndarray:
    x, y = graph[node.inputs[0]], graph[node.outputs[0]]
    m, sh = conv_multipliers(x.quant.s, s_w, y.quant.s)
    if len(node.inputs) > 2 and node.inputs[2]:
        acc = wrap_int32(acc + graph[node.inputs[2]].data.astype(np.int64))
    return mbqm(acc, m, sh) + y.quant.zp


def _conv_pre(node: Node, graph: Graph, inputs: Sequence[np.ndarray]) -> np.ndarray:
    w = graph[node.inputs[1]]
    o, kh, kw, _ = w.shape
    p = patches(node, graph, inputs[0], kh, kw)
    oh, ow = p.shape[:2]
    acc = (p.reshape(oh * ow, -1) @ w.data.reshape(o, -1).T.astype(np.float64)).astype(np.int64)
    return _requant(node, graph, acc.reshape(1, oh, ow, o), w.quant.scale)


def _depthwise_pre(node: Node, graph: Graph, inputs: Sequence[np.ndarray]) -> np.ndarray:
    w = graph[node.inputs[1]]
    _, kh, kw, _ = w.shape
    p = np.repeat(patches(node, graph, inputs[0], kh, kw), node.attrs["multiplier"], axis=4)
    acc = np.einsum("hwijc,ijc->hwc", p, w.data[0].astype(np.float64)).astype(np.int64)
    return _requant(node, graph, acc[None], w.quant.scale)


def _fc_pre(node: Node, graph: Graph, inputs: Sequence[np.ndarray]) -> np.ndarray:
    xq, w = graph[node.inputs[0]].quant, graph[node.inputs[1]]
    x = inputs[0].reshape(-1, w.shape[1]).astype(np.float64) - xq.zp
    acc = (x @ (w.data.astype(np.float64) - w.quant.zp).T).astype(np.int64)
    return _requant(node, graph, acc, w.quant.scale).reshape(graph[node.outputs[0]].shape)


def _add_pre(node: Node, graph: Graph, inputs: Sequence[np.ndarray]) -> np.ndarray:
    qa, qb, qy = (graph[t].quant for t in (*node.inputs[:2], node.outputs[0]))
    (m1, s1), (m2, s2), (mo, so) = add_params(qa.s, qb.s, qy.s)
    a = (inputs[0].astype(np.int64) - qa.zp) << LEFT_SHIFT
    b = (inputs[1].astype(np.int64) - qb.zp) << LEFT_SHIFT
    return mbqm(mbqm(a, m1, s1) + mbqm(b, m2, s2), mo, so) + qy.zp


def _mean_pre(node: Node, graph: Graph, inputs: Sequence[np.ndarray]) -> np.ndarray:
    qx, qy = graph[node.inputs[0]].quant, graph[node.outputs[0]].quant
    axes = tuple(node.attrs["axes"])
    x = inputs[0].astype(np.int64)
    n = int(np.prod([x.shape[a] for a in axes]))
    total = x.sum(axis=axes, keepdims=True) - qx.zp * n
    m, s = mean_params(qx.s, qy.s, n)
    pre = mbqm(total, m, s) + qy.zp
    return pre.reshape(graph[node.outputs[0]].shape)


def _avg_pool_pre(node: Node, graph: Graph, inputs: Sequence[np.ndarray]) -> np.ndarray:
    # The average of int8 values is an int8 value: the unclamped op is the op with the full int8 range.
    return ops.get("avg_pool2d").reference(node.with_attrs(act=INT8_RANGE), graph, inputs)[0].astype(np.int64)


def _requantize_pre(node: Node, graph: Graph, inputs: Sequence[np.ndarray]) -> np.ndarray:
    qx, qy = graph[node.inputs[0]].quant, graph[node.outputs[0]].quant
    m, s = requantize_params(qx.s, qy.s)
    return mbqm(inputs[0].astype(np.int64) - qx.zp, m, s) + qy.zp


PRE_CLAMP: dict[str, PreClamp] = {
    "conv2d": _conv_pre,
    "depthwise_conv2d": _depthwise_pre,
    "fully_connected": _fc_pre,
    "add": _add_pre,
    "mean": _mean_pre,
    "avg_pool2d": _avg_pool_pre,
    "requantize": _requantize_pre,
}


def needs_mask(node: Node) -> bool:
    """True when the op's clamp can cut the gradient (an average pool over the full int8 range cannot)."""
    if node.op not in PRE_CLAMP:
        return False
    return not (node.op == "avg_pool2d" and clamp_range(node) == INT8_RANGE)


def mask_op(op: str) -> str:
    return f"{op}_mask"


def _masked(op: str) -> Callable[[Node, Graph, Sequence[np.ndarray]], list[np.ndarray]]:
    pre_clamp = PRE_CLAMP[op]
    base = ops.get(op)

    def reference(node: Node, graph: Graph, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        # The int8 output comes from the op's own reference, so the forward pass stays bit-exact with it by
        # construction; tests check that clamping `pre` reproduces it (a C kernel computes both at once).
        y = base.reference(node, graph, inputs)[0]
        pre = pre_clamp(node, graph, inputs)
        lo, hi = clamp_range(node)
        return [y, pack_mask((pre >= lo) & (pre <= hi))]

    return reference


def gather_channels_reference(node: Node, graph: Graph, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    # A fully connected layer's input channels are its flattened features: view x as the output's leading shape.
    lead = graph[node.outputs[0]].shape[:-1]
    channels = np.asarray(node.attrs["channels"], np.int64)
    return [np.ascontiguousarray(inputs[0].reshape(*lead, -1)[..., channels])]


def _register() -> None:
    for op in PRE_CLAMP:
        register(OpDef(mask_op(op), _masked(op), ops.get(op).macs))
    register(OpDef("gather_channels", gather_channels_reference))


_register()
