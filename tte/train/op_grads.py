"""Gradient rules, forward savers and backward ops for max_pool2d, lut (activations), mul, sub, add_broadcast,
concat, slice.

What each saves in the forward pass (the pruned backward's needs only):
- max_pool2d -> `max_pool2d_mask`: the arg-max code of every output, `index_bits` (1, 2, 4 or 8) bits each:
  the tap index ky * kw + kx of the first maximal tap, or kh * kw when the gradient is cut (the maximum lies
  outside the clamp, or the window is empty). Packed like masks: element i at bit i * bits of the byte stream.
- lut with a two-valued derivative (Relu, Relu6, Clip, LeakyRelu, HardSigmoid) -> `lut_mask`: 1 bit per
  element (bit = the derivative takes its larger value); HardSwish likewise, its derivative approximated by the
  step x > TrainOptions.hard_swish_threshold. Any other table (Sigmoid, Tanh) keeps its int8 input alive and
  reads a 256-entry float32 derivative table (`lut_table_grad`).
- mul, sub -> `mul_mask`, `sub_mask`: the clamp mask (tte/train/forward_ops.py); their input gradients read
  the other operand (int8, alive anyway in an SE block) and sum over broadcast axes.
- concat, slice: nothing (the gradient is sliced or zero-padded).
Float sums follow output raster order (NHWC), each term rounded to float32 (the C kernels do the same).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tte.errors import TteError
from tte.ir import Graph, Node
from tte.ops import OpDef, register
from tte.ops.binary import add_broadcast_pre_clamp, mul_pre_clamp, sub_pre_clamp
from tte.ops.concat_slice import slice_index, slice_reference
from tte.ops.max_pool import max_pool_reference, windows
from tte.train.autodiff import FORWARD_SAVES, grad_rule
from tte.train.forward_ops import PRE_CLAMP, mask_op, pack_mask, unpack_mask
from tte.train.fp32 import F32, f32

INT8_RANGE = (-128, 127)

# --- max_pool2d --------------------------------------------------------------------------------------------


def index_bits(node: Node) -> int:
    """Bits per arg-max code: room for kh * kw taps, plus the 'cut' code when the clamp or padding can cut."""
    kh, kw = node.attrs["kernel"]
    pt, pl, pb, pr = node.attrs["pad"]
    cut = tuple(node.attrs["act"]) != INT8_RANGE or max(pt, pb) >= kh or max(pl, pr) >= kw
    codes = kh * kw + (1 if cut else 0)
    for bits in (1, 2, 4, 8):
        if codes <= 1 << bits:
            return bits
    raise TteError(f"max pool window {kh}x{kw} is too large to train through", node=node.name, op=node.op,
                   hint="windows of up to 255 taps are supported")


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """Pack small unsigned codes `bits` bits each, little-endian within bytes (element i at bit i * bits)."""
    expanded = ((codes.reshape(-1, 1).astype(np.uint16) >> np.arange(bits, dtype=np.uint16)) & 1).astype(bool)
    return pack_mask(expanded)


def unpack_codes(packed: np.ndarray, count: int, bits: int) -> np.ndarray:
    raw = unpack_mask(packed, (count, bits)).astype(np.int64)
    return (raw << np.arange(bits)).sum(axis=1)


def argmax_codes(node: Node, x: np.ndarray) -> np.ndarray:
    """The arg-max code of every output element (NHWC order), as max_pool2d_mask saves it."""
    kh, kw = node.attrs["kernel"]
    win = windows(node, x)  # [OH, OW, C, KH, KW], out-of-image taps at -1000
    flat = win.reshape(*win.shape[:3], kh * kw)
    best = flat.max(axis=3)
    codes = flat.argmax(axis=3)  # the first maximal tap
    lo, hi = node.attrs["act"]
    cut = (best < lo) | (best > hi) | (best < -128)
    return np.where(cut, kh * kw, codes)[None]


def max_pool_mask_reference(node: Node, graph: Graph, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    y = max_pool_reference(node, graph, inputs)[0]
    return [y, pack_codes(argmax_codes(node, inputs[0]), int(node.attrs["index_bits"]))]


def max_pool_grad_reference(node: Node, graph: Graph, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    dy = f32(inputs[0])
    _, oh, ow, c = dy.shape
    _, h, w, _ = graph[node.outputs[0]].shape
    kh, kw = node.attrs["kernel"]
    sh, sw = node.attrs["stride"]
    pt, pl = node.attrs["pad"][:2]
    codes = unpack_codes(inputs[1], dy.size, int(node.attrs["index_bits"])).reshape(oh, ow, c)
    oy, ox, ch = np.meshgrid(np.arange(oh), np.arange(ow), np.arange(c), indexing="ij")
    iy, ix = oy * sh - pt + codes // kw, ox * sw - pl + codes % kw
    routed = codes < kh * kw
    dx = np.zeros(h * w * c, np.float32)
    np.add.at(dx, ((iy * w + ix) * c + ch)[routed], dy[0][routed])  # sequential, in output order
    return [dx.reshape(1, h, w, c)]


def _save_argmax(b, node: Node) -> Node:
    y = b.tensors[node.outputs[0]]
    bits = index_bits(node)
    codes = b.tensor(f"{node.name}:argmax", ((y.size * bits + 7) // 8,), "uint8")
    b.masks[node.name] = codes
    return Node("max_pool2d_mask", node.name, node.inputs, (*node.outputs, codes), {**node.attrs, "index_bits": bits})


@grad_rule("max_pool2d")
def _max_pool_rule(b, node: Node, dy: str) -> None:
    x = node.inputs[0]
    if b.depends.get(x):
        dx = b.grad_tensor(x)
        attrs = {k: node.attrs[k] for k in ("kernel", "stride", "pad", "act")}
        attrs["index_bits"] = index_bits(node)
        b.emit(Node("max_pool2d_grad", f"{node.name}/grad", (dy, b.masks[node.name]), (dx,), attrs))
        b.contribute(x, dx)


FORWARD_SAVES["max_pool2d"] = _save_argmax


# --- lut: activation tables ----------------------------------------------------------------------------------

HARD_SWISH = ("hard_swish", "HardSwish")


def _tflite_derivative(node: Node, graph: Graph) -> np.ndarray | None:
    """d y / d x (float64) at every input code of a TFLite activation table, from its source op."""
    q = graph[node.inputs[0]].quant
    x = (np.arange(-128, 128) - q.zp) * np.float64(np.float32(q.s))
    kind = node.attrs.get("source_op")
    if kind == "logistic":
        s = 1.0 / (1.0 + np.exp(-x))
        return s * (1.0 - s)
    if kind == "tanh":
        return 1.0 - np.tanh(x) ** 2
    if kind == "hard_swish":
        return np.where(x < -3, 0.0, np.where(x > 3, 1.0, x / 3 + 0.5))
    if kind == "relu":
        return (x > 0).astype(np.float64)
    if kind == "relu6":  # PyTorch's hardtanh: strictly inside (0, 6)
        return ((x > 0) & (x < 6)).astype(np.float64)
    if kind == "leaky_relu":
        return np.where(x > 0, 1.0, float(node.attrs["alpha"]))
    return None


def lut_derivative(node: Node, graph: Graph) -> np.ndarray:
    """The 256 float32 derivatives of a lut node (its `deriv` attribute, or from its TFLite source op)."""
    if "deriv" in node.attrs:
        return np.asarray(node.attrs["deriv"], np.float32)
    d = _tflite_derivative(node, graph)
    if d is None:
        raise TteError(f"no gradient rule for this table (no derivative known for source op "
                       f"'{node.attrs.get('source_op', 'none')}'), and a trained layer lies below it", node=node.name,
                       op="lut", hint="train only layers above it (e.g. --update last:N)")
    return d.astype(np.float32)


def lut_step(node: Node, graph: Graph, threshold: float) -> tuple[np.ndarray, float, float] | None:
    """(bit per input code, value for bit 0, value for bit 1) when the derivative is a step, else None."""
    if node.attrs.get("source_op") in HARD_SWISH:
        q = graph[node.inputs[0]].quant
        x = (np.arange(-128, 128) - q.zp) * np.float64(np.float32(q.s))
        return x > threshold, 0.0, 1.0
    d = lut_derivative(node, graph)
    values = np.unique(d)
    if values.size > 2:
        return None
    return d == values[-1], float(values[0]), float(values[-1])


def lut_mask_reference(node: Node, graph: Graph, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    x = inputs[0].astype(np.int64) + 128
    y = np.asarray(node.attrs["table"], np.int8)[x]
    return [y, pack_mask(np.asarray(node.attrs["mask_table"], bool)[x])]


def lut_step_grad_reference(node: Node, graph: Graph, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    dy = f32(inputs[0])
    bits = unpack_mask(inputs[1], dy.shape)
    return [dy * np.where(bits, F32(node.attrs["hi"]), F32(node.attrs["lo"])).astype(np.float32)]


def lut_table_grad_reference(node: Node, graph: Graph, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    table = np.asarray(node.attrs["deriv"], np.float32)
    return [f32(inputs[0]) * table[inputs[1].astype(np.int64) + 128]]


def _save_lut(b, node: Node) -> Node:
    step = lut_step(node, b.fwd, b.opts.hard_swish_threshold)
    if step is None:
        return node  # the input stays alive: lut_table_grad reads it
    y = b.tensors[node.outputs[0]]
    mask = b.tensor(f"{node.name}:mask", ((y.size + 7) // 8,), "uint8")
    b.masks[node.name] = mask
    return Node("lut_mask", node.name, node.inputs, (*node.outputs, mask),
                {**node.attrs, "mask_table": tuple(int(v) for v in step[0])})


@grad_rule("lut")
def _lut_rule(b, node: Node, dy: str) -> None:
    x = node.inputs[0]
    if not b.depends.get(x):
        return
    dx = b.grad_tensor(x)
    if node.name in b.masks:
        _, lo, hi = lut_step(node, b.fwd, b.opts.hard_swish_threshold)
        b.emit(Node("lut_step_grad", f"{node.name}/grad", (dy, b.masks[node.name]), (dx,), {"lo": lo, "hi": hi}))
    else:
        deriv = tuple(float(v) for v in lut_derivative(node, b.fwd))
        b.emit(Node("lut_table_grad", f"{node.name}/grad", (dy, x), (dx,), {"deriv": deriv}))
    b.contribute(x, dx)


FORWARD_SAVES["lut"] = _save_lut

# --- mul, sub --------------------------------------------------------------------------------------------------


def reduce_to(values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum float32 `values` (an output-shaped array) over the axes broadcast from `shape`, sequentially in the
    output's raster order."""
    out_shape = values.shape
    lead = (1,) * (len(out_shape) - len(shape)) + tuple(shape)
    idx = np.ravel_multi_index(tuple(np.where(np.asarray(lead)[:, None] == 1, 0, np.indices(out_shape).reshape(
        len(out_shape), -1))), lead)
    acc = np.zeros(int(np.prod(lead)), np.float32)
    np.add.at(acc, idx, f32(values).reshape(-1))
    return acc.reshape(shape)


def mul_input_grad_reference(node: Node, graph: Graph, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """d(operand) = reduce(dacc * other_real): other_real = (float)(q - zp) * s, one rounding each."""
    dacc = f32(inputs[0])
    q = graph[node.inputs[1]].quant
    other = ((inputs[1].astype(np.int32) - np.int32(q.zp)).astype(np.float32) * F32(q.s)).astype(np.float32)
    terms = (dacc * np.broadcast_to(other, dacc.shape)).astype(np.float32)
    return [reduce_to(terms, graph[node.outputs[0]].shape)]


def reduce_grad_reference(node: Node, graph: Graph, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """reduce(dacc * scale) to the output's shape (scale is +1 or -1: exact)."""
    return [reduce_to(f32(inputs[0]) * F32(node.attrs["scale"]), graph[node.outputs[0]].shape)]


@grad_rule("mul")
def _mul_rule(b, node: Node, dy: str) -> None:
    dacc = b.masked(node, dy)
    a, c = node.inputs[:2]
    for x, other in ((a, c), (c, a)):
        if b.depends.get(x):
            dx = b.grad_tensor(x)
            b.emit(Node("mul_input_grad", f"{node.name}/grad_{'a' if x == a else 'b'}", (dacc, other), (dx,)))
            b.contribute(x, dx)


@grad_rule("sub")
def _sub_rule(b, node: Node, dy: str) -> None:
    _add_sub_rule(b, node, dy, (1.0, -1.0))


@grad_rule("add_broadcast")
def _add_broadcast_rule(b, node: Node, dy: str) -> None:
    _add_sub_rule(b, node, dy, (1.0, 1.0))


def _add_sub_rule(b, node: Node, dy: str, scales: tuple[float, float]) -> None:
    """d(operand) = scale * dacc, summed over the axes the operand was broadcast along."""
    dacc = b.masked(node, dy)
    for x, scale in zip(node.inputs[:2], scales, strict=True):
        if not b.depends.get(x):
            continue
        if scale == 1.0 and b.tensors[x].shape == b.tensors[dacc].shape:
            b.contribute(x, dacc)
            continue
        dx = b.grad_tensor(x)
        which = "a" if x == node.inputs[0] else "b"
        b.emit(Node("reduce_grad", f"{node.name}/grad_{which}", (dacc,), (dx,), {"scale": scale}))
        b.contribute(x, dx)


# --- concat, slice ---------------------------------------------------------------------------------------------


def slice_grad_reference(node: Node, graph: Graph, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    dx = np.zeros(graph[node.outputs[0]].shape, np.float32)
    dx[slice_index(node)] = f32(inputs[0])
    return [dx]


@grad_rule("concat")
def _concat_rule(b, node: Node, dy: str) -> None:
    axis = int(node.attrs["axis"])
    start = 0
    for x in node.inputs:
        shape = b.tensors[x].shape
        if b.depends.get(x):
            begin = tuple(start if k == axis else 0 for k in range(len(shape)))
            dx = b.grad_tensor(x)
            b.emit(Node("slice_f32", f"{node.name}/grad_{x}", (dy,), (dx,),
                        {"begin": begin, "size": shape, "strides": (1,) * len(shape)}))
            b.contribute(x, dx)
        start += shape[axis]


@grad_rule("slice")
def _slice_rule(b, node: Node, dy: str) -> None:
    x = node.inputs[0]
    if b.depends.get(x):
        dx = b.grad_tensor(x)
        b.emit(Node("slice_grad", f"{node.name}/grad", (dy,), (dx,),
                    {k: node.attrs[k] for k in ("begin", "size", "strides")}))
        b.contribute(x, dx)


def _masked_forward(op: str):
    pre_clamp = PRE_CLAMP[op]

    def reference(node: Node, graph: Graph, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        pre = pre_clamp(node, graph, inputs)
        lo, hi = node.attrs["act"]
        return [np.clip(pre, lo, hi).astype(np.int8), pack_mask((pre >= lo) & (pre <= hi))]

    return reference


def _register() -> None:
    PRE_CLAMP["mul"] = mul_pre_clamp
    PRE_CLAMP["sub"] = sub_pre_clamp
    PRE_CLAMP["add_broadcast"] = add_broadcast_pre_clamp
    for op in ("mul", "sub", "add_broadcast"):
        register(OpDef(mask_op(op), _masked_forward(op)))
    register(OpDef("max_pool2d_mask", max_pool_mask_reference))
    register(OpDef("max_pool2d_grad", max_pool_grad_reference))
    register(OpDef("lut_mask", lut_mask_reference))
    register(OpDef("lut_step_grad", lut_step_grad_reference))
    register(OpDef("lut_table_grad", lut_table_grad_reference))
    register(OpDef("mul_input_grad", mul_input_grad_reference))
    register(OpDef("reduce_grad", reduce_grad_reference))
    register(OpDef("slice_f32", slice_reference))
    register(OpDef("slice_grad", slice_grad_reference))


_register()
