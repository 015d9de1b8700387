"""More TFLite builtins -> IR nodes: MAX_POOL_2D, MUL, SUB (broadcasting), CONCATENATION, SPLIT, SPLIT_V,
SLICE, STRIDED_SLICE (on int8 activations), EXPAND_DIMS, and standalone RELU, RELU6, LEAKY_RELU as tables.

Registered into `tflite_ops.CONVERTERS` (see the end of that module); helpers and checks are those of
`tflite_ops`. Byte-moving ops (concatenation, splits, slices) keep the quantization in TFLite's int8 kernels:
inputs and outputs must share it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tte.errors import UnsupportedError
from tte.frontend.tflite_model import Op, Subgraph
from tte.frontend.tflite_ops import _act, _bad, _n_inputs, _options, _same_shape_io, _window
from tte.frontend.tflite_ops import add as add_same_shape
from tte.frontend.tflite_schema import fb
from tte.ir import Node, Tensor


def _same_quant(op: Op, a: Tensor, b: Tensor) -> None:
    if not (np.float32(a.quant.s) == np.float32(b.quant.s) and a.quant.zp == b.quant.zp):
        raise UnsupportedError(f"{a.name} and {b.name} are quantized differently ({a.quant} vs {b.quant})",
                               node=op.name, op=op.kind, hint="TFLite's int8 kernel copies bytes; re-convert")


def max_pool(sg: Subgraph, op: Op) -> list[Node]:
    _n_inputs(op, 1)
    opts = _options(op, fb.Pool2DOptionsT)
    x, y = sg.activation(op.inputs[0], op.name, op.kind, 4), sg.activation(op.outputs[0], op.name, op.kind, 4)
    if x.shape[3] != y.shape[3] or x.shape[0] != y.shape[0]:
        raise _bad(op, f"pooling changes channels: {list(x.shape)} -> {list(y.shape)}")
    _same_quant(op, x, y)
    kernel, stride = (int(opts.filterHeight), int(opts.filterWidth)), (int(opts.strideH), int(opts.strideW))
    pad = _window(op, x, y, kernel, stride, opts.padding)
    return [Node("max_pool2d", op.name, (x.name,), (y.name,),
                 {"kernel": kernel, "stride": stride, "pad": pad, "act": _act(op, opts.fusedActivationFunction, y)})]


def _binary(ir_op: str, options_cls: type) -> Callable[[Subgraph, Op], list[Node]]:
    def convert(sg: Subgraph, op: Op) -> list[Node]:
        _n_inputs(op, 2)
        opts = _options(op, options_cls, required=False)
        a, b = (sg.activation(i, op.name, op.kind) for i in op.inputs)
        y = sg.activation(op.outputs[0], op.name, op.kind)
        try:
            shape = np.broadcast_shapes(a.shape, b.shape)
        except ValueError:
            shape = None
        if shape != y.shape or len(y.shape) > 4:
            raise UnsupportedError(f"{op.kind} of shapes {list(a.shape)} and {list(b.shape)} -> {list(y.shape)}",
                                   node=op.name, op=op.kind, hint="tte broadcasts up to 4-D, numpy rules")
        return [Node(ir_op, op.name, (a.name, b.name), (y.name,), {"act": _act(op, opts.fusedActivationFunction, y)})]

    return convert


def add(sg: Subgraph, op: Op) -> list[Node]:
    """ADD: `add` for equal shapes (tflite_ops.add), `add_broadcast` when the shapes differ."""
    _n_inputs(op, 2)
    a, b = (sg.activation(i, op.name, op.kind) for i in op.inputs)
    if a.shape == b.shape:
        return add_same_shape(sg, op)
    return _binary("add_broadcast", fb.AddOptionsT)(sg, op)


def concatenation(sg: Subgraph, op: Op) -> list[Node]:
    if not op.inputs or any(i < 0 for i in op.inputs) or len(op.outputs) != 1:
        raise _bad(op, "expected inputs and one output")
    opts = _options(op, fb.ConcatenationOptionsT)
    xs = [sg.activation(i, op.name, op.kind) for i in op.inputs]
    y = sg.activation(op.outputs[0], op.name, op.kind)
    rank = len(y.shape)
    axis = int(opts.axis) % max(rank, 1)
    if opts.fusedActivationFunction:
        raise UnsupportedError("fused activation on CONCATENATION", node=op.name, op=op.kind,
                               hint="convert without fusing an activation into the concatenation")
    for x in xs:
        _same_quant(op, x, y)
        others = [(d, e) for k, (d, e) in enumerate(zip(x.shape, y.shape, strict=False)) if k != axis]
        if len(x.shape) != rank or any(d != e for d, e in others):
            raise _bad(op, f"input {list(x.shape)} does not fit output {list(y.shape)} along axis {axis}")
    if sum(x.shape[axis] for x in xs) != y.shape[axis]:
        raise _bad(op, f"inputs do not add up to the output's {y.shape[axis]} along axis {axis}")
    return [Node("concat", op.name, tuple(x.name for x in xs), (y.name,), {"axis": axis})]


def _slices(sg: Subgraph, op: Op, x: Tensor, axis: int, sizes: list[int]) -> list[Node]:
    """One `slice` per output of a split along `axis` (outputs keep the input quantization)."""
    if len(sizes) != len(op.outputs) or sum(sizes) != x.shape[axis] or min(sizes) < 1:
        raise _bad(op, f"split sizes {sizes} do not divide {x.shape[axis]} into {len(op.outputs)} outputs")
    nodes, start = [], 0
    for out, n in zip(op.outputs, sizes, strict=True):
        y = sg.activation(out, op.name, op.kind)
        _same_quant(op, x, y)
        begin = tuple(start if k == axis else 0 for k in range(len(x.shape)))
        size = tuple(n if k == axis else d for k, d in enumerate(x.shape))
        if y.shape != size:
            raise _bad(op, f"output {y.name} has shape {list(y.shape)}, expected {list(size)}")
        nodes.append(Node("slice", sg.names[out], (x.name,), (y.name,),
                          {"begin": begin, "size": size, "strides": (1,) * len(size)}))
        start += n
    return nodes


def split(sg: Subgraph, op: Op) -> list[Node]:
    if len(op.inputs) != 2 or min(op.inputs) < 0:
        raise _bad(op, "SPLIT takes (axis, input)")
    x = sg.activation(op.inputs[1], op.name, op.kind)
    axis = int(sg.int_values(op.inputs[0], op.name, op.kind, "axis").ravel()[0]) % len(x.shape)
    n = len(op.outputs)
    if x.shape[axis] % n:
        raise _bad(op, f"{x.shape[axis]} does not split into {n} equal parts")
    return _slices(sg, op, x, axis, [x.shape[axis] // n] * n)


def split_v(sg: Subgraph, op: Op) -> list[Node]:
    if len(op.inputs) != 3 or min(op.inputs) < 0:
        raise _bad(op, "SPLIT_V takes (input, size_splits, axis)")
    x = sg.activation(op.inputs[0], op.name, op.kind)
    axis = int(sg.int_values(op.inputs[2], op.name, op.kind, "axis").ravel()[0]) % len(x.shape)
    sizes = [int(v) for v in sg.int_values(op.inputs[1], op.name, op.kind, "size_splits").ravel()]
    if sizes.count(-1) == 1:
        sizes[sizes.index(-1)] = x.shape[axis] - (sum(sizes) + 1)
    return _slices(sg, op, x, axis, sizes)


def _slice_node(sg: Subgraph, op: Op, x: Tensor, y: Tensor, begin: list[int], size: list[int], strides: list[int]
                ) -> list[Node]:
    _same_quant(op, x, y)
    for b, n, s, d in zip(begin, size, strides, x.shape, strict=True):
        if s < 1 or n < 1 or b < 0 or b + (n - 1) * s >= d:
            raise UnsupportedError(f"slice begin {begin} size {size} strides {strides} of {list(x.shape)}",
                                   node=op.name, op=op.kind, hint="tte slices with positive strides inside the input")
    nodes = []
    out = y.name
    if tuple(size) != y.shape:  # shrunk axes: slice, then reshape away the unit axes
        if int(np.prod(size)) != y.size:
            raise _bad(op, f"slice of size {size} does not give output {list(y.shape)}")
        out = f"{y.name}:slice"
        sg.ir[out] = Tensor(out, tuple(size), "int8", y.quant)
        nodes.append(Node("reshape", f"{op.name}:shrink", (out,), (y.name,)))
    slice_node = Node("slice", op.name, (x.name,), (out,), {"begin": tuple(begin), "size": tuple(size),
                                                            "strides": tuple(strides)})
    return [slice_node, *nodes]


def slice_op(sg: Subgraph, op: Op) -> list[Node]:
    _n_inputs(op, 3)
    x, y = sg.activation(op.inputs[0], op.name, op.kind), sg.activation(op.outputs[0], op.name, op.kind)
    begin = [int(v) for v in sg.int_values(op.inputs[1], op.name, op.kind, "begin").ravel()]
    size = [int(v) for v in sg.int_values(op.inputs[2], op.name, op.kind, "size").ravel()]
    if len(begin) != len(x.shape) or len(size) != len(x.shape):
        raise _bad(op, f"begin {begin} / size {size} for rank {len(x.shape)}")
    size = [d - b if n == -1 else n for b, n, d in zip(begin, size, x.shape, strict=True)]
    return _slice_node(sg, op, x, y, begin, size, [1] * len(begin))


def strided_slice(sg: Subgraph, op: Op) -> list[Node]:
    _n_inputs(op, 4)
    o = _options(op, fb.StridedSliceOptionsT, required=False)
    x, y = sg.activation(op.inputs[0], op.name, op.kind), sg.activation(op.outputs[0], op.name, op.kind)
    vals = [[int(v) for v in sg.int_values(i, op.name, op.kind, what).ravel()]
            for i, what in zip(op.inputs[1:], ("begin", "end", "strides"), strict=True)]
    if o.ellipsisMask or o.newAxisMask or o.offset or any(len(v) != len(x.shape) for v in vals):
        raise UnsupportedError("STRIDED_SLICE with ellipsis / new-axis masks or partial indices", node=op.name,
                               op=op.kind, hint="slice every axis explicitly")
    begin, size, strides = [], [], []
    for k, (b, e, s) in enumerate(zip(*vals, strict=True)):
        d = x.shape[k]
        idx = range(d)[slice(None if o.beginMask >> k & 1 else b, None if o.endMask >> k & 1 else e, s or None)]
        if o.shrinkAxisMask >> k & 1:
            idx = range(b % d, b % d + 1)
        if len(idx) == 0 or idx.step < 0:
            raise UnsupportedError("an empty or reversed slice", node=op.name, op=op.kind,
                                   hint="tte slices with positive strides")
        begin.append(idx.start)
        size.append(len(idx))
        strides.append(idx.step)
    return _slice_node(sg, op, x, y, begin, size, strides)


def expand_dims(sg: Subgraph, op: Op) -> list[Node]:
    x, y = sg.activation(op.inputs[0], op.name, op.kind), sg.activation(op.outputs[0], op.name, op.kind)
    if x.size != y.size:
        raise _bad(op, f"EXPAND_DIMS of {list(x.shape)} into {list(y.shape)} changes the element count")
    return [Node("reshape", op.name, (x.name,), (y.name,))]


def _relu(kind: str) -> Callable[[Subgraph, Op], list[Node]]:
    def convert(sg: Subgraph, op: Op) -> list[Node]:
        from tte.ops.relu_tables import relu_lut_node

        x, y = _same_shape_io(sg, op)
        alpha = 0.0
        if kind == "leaky_relu":
            alpha = float(_options(op, fb.LeakyReluOptionsT).alpha)
        return [relu_lut_node(kind, op.name, x, y, alpha)]

    return convert


EXTRA_CONVERTERS: dict[str, Callable[[Subgraph, Op], list[Node]]] = {
    "ADD": add,
    "MAX_POOL_2D": max_pool,
    "MUL": _binary("mul", fb.MulOptionsT),
    "SUB": _binary("sub", fb.SubOptionsT),
    "CONCATENATION": concatenation,
    "SPLIT": split,
    "SPLIT_V": split_v,
    "SLICE": slice_op,
    "STRIDED_SLICE": strided_slice,
    "EXPAND_DIMS": expand_dims,
    "RELU": _relu("relu"),
    "RELU6": _relu("relu6"),
    "LEAKY_RELU": _relu("leaky_relu"),
}
