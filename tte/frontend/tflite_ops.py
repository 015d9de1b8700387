"""TFLite builtin operators -> IR nodes, one converter per op, each checking what it reads.

A converter takes the checked `Subgraph` and one `Op` and returns IR nodes; it raises ModelFormatError for an
inconsistent file (shapes that do not fit, missing options) and UnsupportedError for valid TFLite that tte does
not run (dilation, broadcasting, int16). Shapes are checked here so that a graph that loads also runs.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tte.errors import ModelFormatError, UnsupportedError
from tte.frontend.tflite_model import MAX_ELEMENTS, Op, Subgraph
from tte.frontend.tflite_schema import ACTIVATIONS, fb, same_pads
from tte.ir import Graph, Node, QParams, Tensor
from tte.quant import activation_range


def _bad(op: Op, message: str) -> ModelFormatError:
    return ModelFormatError(message, node=op.name, op=op.kind, hint="the file is inconsistent; re-export the model")


def _options(op: Op, cls: type, required: bool = True):
    if isinstance(op.options, cls):
        return op.options
    if required or op.options is not None:
        raise _bad(op, f"missing or wrong builtin options (expected {cls.__name__[:-1]})")
    return cls()


def _n_inputs(op: Op, low: int, high: int | None = None) -> None:
    high = low if high is None else high
    if not low <= len(op.inputs) <= high or any(i < 0 for i in op.inputs[:low]) or len(op.outputs) != 1:
        raise _bad(op, f"expected {low}..{high} inputs and 1 output, got {len(op.inputs)} and {len(op.outputs)}")


def _act(op: Op, code: int, y: Tensor) -> tuple[int, int]:
    if code not in ACTIVATIONS:
        raise UnsupportedError(f"fused activation {code} is not a clamp", node=op.name, op=op.kind,
                               hint="tte fuses NONE, RELU, RELU6 and RELU_N1_TO_1")
    return activation_range(ACTIVATIONS[code], y.quant.s, y.quant.zp)


def _window(op: Op, x: Tensor, y: Tensor, kernel: tuple[int, int], stride: tuple[int, int], padding: int
            ) -> tuple[int, int, int, int]:
    """Explicit (top, left, bottom, right) pads for SAME/VALID, after checking the output size they give."""
    if min(*kernel, *stride) < 1 or padding not in (fb.Padding.SAME, fb.Padding.VALID):
        raise _bad(op, f"invalid kernel {kernel}, stride {stride} or padding {padding}")
    (h, w), (oh, ow) = x.shape[1:3], y.shape[1:3]
    if padding == fb.Padding.SAME:
        (top, bottom), (left, right) = same_pads(h, kernel[0], stride[0], oh), same_pads(w, kernel[1], stride[1], ow)
    else:
        top = bottom = left = right = 0
    if (h + top + bottom) * (w + left + right) * x.shape[3] > MAX_ELEMENTS:
        raise _bad(op, f"kernel {kernel} needs padding {(top, left, bottom, right)} of a {h}x{w} input")
    expect = ((h + top + bottom - kernel[0]) // stride[0] + 1, (w + left + right - kernel[1]) // stride[1] + 1)
    if expect != (oh, ow) or min(h + top + bottom - kernel[0], w + left + right - kernel[1]) < 0:
        raise _bad(op, f"output {oh}x{ow} does not follow from input {h}x{w}, kernel {kernel}, stride {stride}")
    return top, left, bottom, right


def _bias(sg: Subgraph, op: Op, x: Tensor, w: Tensor, n: int) -> Tensor:
    """The int32 bias [n]; an absent bias (input -1) becomes zeros with scale s_in * s_w."""
    i = op.inputs[2] if len(op.inputs) > 2 else -1
    if i < 0:
        scale = np.broadcast_to(np.float64(x.quant.s) * w.quant.scale.astype(np.float64), (n,))
        name = f"{op.name}_bias"
        while name in sg.ir or name in sg.names:
            name += "_"
        t = Tensor(name, (n,), "int32", QParams(scale.astype(np.float32), np.zeros(n, np.int64), 0 if n > 1 else None),
                   np.zeros(n, np.int32))
        sg.ir[name] = t
        return t
    b = sg.constant(i, op.name, op.kind, "int32", axis=0)
    if b.shape != (n,):
        raise _bad(op, f"bias has shape {list(b.shape)}, expected [{n}]")
    return b


def _per_channel(sg: Subgraph, w: Tensor, axis: int) -> Tensor:
    """Conv weights per output channel, as the IR wants them (a per-tensor scale is repeated)."""
    if w.quant.per_channel or len(w.shape) != 4:
        return w
    n = w.shape[axis]
    q = QParams(np.full(n, w.quant.s, np.float32), np.full(n, w.quant.zp, np.int64), axis if n > 1 else None)
    sg.ir[w.name] = Tensor(w.name, w.shape, w.dtype, q, w.data)
    return sg.ir[w.name]


def conv2d(sg: Subgraph, op: Op) -> list[Node]:
    _n_inputs(op, 2, 3)
    depthwise = op.kind == "DEPTHWISE_CONV_2D"
    opts = _options(op, fb.DepthwiseConv2DOptionsT if depthwise else fb.Conv2DOptionsT)
    x, y = sg.activation(op.inputs[0], op.name, op.kind, 4), sg.activation(op.outputs[0], op.name, op.kind, 4)
    axis = 3 if depthwise else 0
    w = _per_channel(sg, sg.constant(op.inputs[1], op.name, op.kind, "int8", axis=axis), axis)
    if len(w.shape) != 4 or np.any(w.quant.zero_point != 0):
        raise UnsupportedError(f"weights {w.name} must be 4-D and symmetric (zero point 0)", node=op.name, op=op.kind,
                               hint="quantize weights per channel, symmetric int8")
    if (opts.dilationHFactor, opts.dilationWFactor) != (1, 1):
        raise UnsupportedError("dilated convolution", node=op.name, op=op.kind, hint="use dilation 1")
    cin, cout = x.shape[3], y.shape[3]
    attrs: dict = {}
    if depthwise:
        if w.shape[0] != 1 or w.shape[3] != cout or cout % cin:
            raise _bad(op, f"depthwise weights {list(w.shape)} do not fit {cin} -> {cout} channels")
        attrs["multiplier"] = cout // cin  # from the channel counts: depth_multiplier is not always reliable
    elif w.shape[0] != cout or w.shape[3] != cin:
        raise UnsupportedError(f"weights {list(w.shape)} do not fit {cin} -> {cout} channels (grouped convolution?)",
                               node=op.name, op=op.kind, hint="tte runs plain and depthwise convolutions")
    stride = (int(opts.strideH), int(opts.strideW))
    pad = _window(op, x, y, (w.shape[1], w.shape[2]), stride, opts.padding)
    b = _bias(sg, op, x, w, cout)
    node_op = "depthwise_conv2d" if depthwise else "conv2d"
    return [Node(node_op, op.name, (x.name, w.name, b.name), (y.name,),
                 {"stride": stride, "pad": pad, "act": _act(op, opts.fusedActivationFunction, y), **attrs})]


def fully_connected(sg: Subgraph, op: Op) -> list[Node]:
    _n_inputs(op, 2, 3)
    opts = _options(op, fb.FullyConnectedOptionsT, required=False)
    if opts.weightsFormat != fb.FullyConnectedOptionsWeightsFormat.DEFAULT:
        raise UnsupportedError("shuffled FULLY_CONNECTED weights", node=op.name, op=op.kind,
                               hint="convert with the default weights format")
    x, y = sg.activation(op.inputs[0], op.name, op.kind), sg.activation(op.outputs[0], op.name, op.kind)
    w = sg.constant(op.inputs[1], op.name, op.kind, "int8", axis=0)
    if len(w.shape) != 2 or x.size % w.shape[1] or y.size != x.size // w.shape[1] * w.shape[0]:
        raise _bad(op, f"weights {list(w.shape)} do not fit input {list(x.shape)} and output {list(y.shape)}")
    if w.quant.per_channel and np.any(w.quant.zero_point != 0):
        raise UnsupportedError("per-channel weights with a zero point", node=op.name, op=op.kind,
                               hint="quantize weights symmetrically")
    b = _bias(sg, op, x, w, w.shape[0])
    return [Node("fully_connected", op.name, (x.name, w.name, b.name), (y.name,),
                 {"act": _act(op, opts.fusedActivationFunction, y)})]


def add(sg: Subgraph, op: Op) -> list[Node]:
    _n_inputs(op, 2)
    opts = _options(op, fb.AddOptionsT, required=False)
    a, b = (sg.activation(i, op.name, op.kind) for i in op.inputs)
    y = sg.activation(op.outputs[0], op.name, op.kind)
    if not a.shape == b.shape == y.shape:
        raise UnsupportedError(f"ADD of shapes {list(a.shape)} and {list(b.shape)} -> {list(y.shape)}",
                               node=op.name, op=op.kind, hint="tte adds tensors of equal shape (no broadcasting)")
    return [Node("add", op.name, (a.name, b.name), (y.name,), {"act": _act(op, opts.fusedActivationFunction, y)})]


def average_pool(sg: Subgraph, op: Op) -> list[Node]:
    _n_inputs(op, 1)
    opts = _options(op, fb.Pool2DOptionsT)
    x, y = sg.activation(op.inputs[0], op.name, op.kind, 4), sg.activation(op.outputs[0], op.name, op.kind, 4)
    if x.shape[3] != y.shape[3] or x.shape[0] != y.shape[0]:
        raise _bad(op, f"pooling changes channels: {list(x.shape)} -> {list(y.shape)}")
    kernel, stride = (int(opts.filterHeight), int(opts.filterWidth)), (int(opts.strideH), int(opts.strideW))
    pad = _window(op, x, y, kernel, stride, opts.padding)
    return [Node("avg_pool2d", op.name, (x.name,), (y.name,),
                 {"kernel": kernel, "stride": stride, "pad": pad, "act": _act(op, opts.fusedActivationFunction, y)})]


def mean(sg: Subgraph, op: Op) -> list[Node]:
    _n_inputs(op, 2)
    opts = _options(op, fb.ReducerOptionsT, required=False)
    x, y = sg.activation(op.inputs[0], op.name, op.kind), sg.activation(op.outputs[0], op.name, op.kind)
    rank = len(x.shape)
    raw = sg.int_values(op.inputs[1], op.name, op.kind, "axis").ravel()
    if raw.size == 0 or np.any(raw < -rank) or np.any(raw >= rank):
        raise _bad(op, f"axes {raw.tolist()} out of range for rank {rank}")
    axes = tuple(sorted({int(a) % rank for a in raw}))
    keep = bool(opts.keepDims)
    expect = tuple(1 if d in axes else n for d, n in enumerate(x.shape) if keep or d not in axes)
    if y.shape != expect:
        raise _bad(op, f"output {list(y.shape)}, expected {list(expect)}")
    return [Node("mean", op.name, (x.name,), (y.name,), {"axes": axes, "keepdims": keep})]


def pad(sg: Subgraph, op: Op) -> list[Node]:
    _n_inputs(op, 2, 3 if op.kind == "PADV2" else 2)
    x, y = sg.activation(op.inputs[0], op.name, op.kind), sg.activation(op.outputs[0], op.name, op.kind)
    p = sg.int_values(op.inputs[1], op.name, op.kind, "paddings")
    if p.shape != (len(x.shape), 2) or np.any(p < 0):
        raise _bad(op, f"paddings of shape {list(p.shape)} for rank {len(x.shape)}")
    pads = tuple((int(a), int(b)) for a, b in p)
    if tuple(d + a + b for d, (a, b) in zip(x.shape, pads, strict=True)) != y.shape:
        raise _bad(op, f"padding {list(x.shape)} by {pads} does not give {list(y.shape)}")
    attrs: dict = {"pads": pads}
    if len(op.inputs) > 2 and op.inputs[2] >= 0:
        v = sg.value(op.inputs[2])
        if v is None or v.size != 1 or sg.type_name(op.inputs[2]) != "INT8":
            raise _bad(op, "PADV2 needs a constant int8 scalar pad value")
        if int(v.ravel()[0]) != y.quant.zp:
            attrs["value"] = int(v.ravel()[0])
    return [Node("pad", op.name, (x.name,), (y.name,), attrs)]


def reshape(sg: Subgraph, op: Op) -> list[Node]:
    if not op.inputs or op.inputs[0] < 0 or len(op.outputs) != 1:
        raise _bad(op, "expected an input and one output")
    x, y = sg.activation(op.inputs[0], op.name, op.kind), sg.activation(op.outputs[0], op.name, op.kind)
    if x.size != y.size:
        raise _bad(op, f"reshape of {list(x.shape)} into {list(y.shape)} changes the element count")
    if op.kind == "RESHAPE" and len(op.inputs) > 1 and op.inputs[1] >= 0 and sg.value(op.inputs[1]) is not None:
        want = sg.int_values(op.inputs[1], op.name, op.kind, "shape").ravel()
        known = [int(d) for d in want if d != -1]
        if len(known) < len(want) - 1 or np.any(want < -1) or (len(known) == len(want) and tuple(known) != y.shape):
            raise _bad(op, f"shape operand {want.tolist()} disagrees with output {list(y.shape)}")
    return [Node("reshape", op.name, (x.name,), (y.name,))]


def transpose(sg: Subgraph, op: Op) -> list[Node]:
    _n_inputs(op, 2)
    x, y = sg.activation(op.inputs[0], op.name, op.kind), sg.activation(op.outputs[0], op.name, op.kind)
    perm = tuple(int(v) for v in sg.int_values(op.inputs[1], op.name, op.kind, "permutation").ravel())
    if sorted(perm) != list(range(len(x.shape))) or tuple(x.shape[p] for p in perm) != y.shape:
        raise _bad(op, f"permutation {perm} does not map {list(x.shape)} to {list(y.shape)}")
    return [Node("transpose", op.name, (x.name,), (y.name,), {"perm": perm})]


def softmax(sg: Subgraph, op: Op) -> list[Node]:
    from tte.ops import OPS
    from tte.ops.softmax import node_params

    _n_inputs(op, 1)
    if "softmax" not in OPS:
        raise UnsupportedError("SOFTMAX is not implemented yet", node=op.name, op=op.kind,
                               hint="cut the model before the softmax")
    opts = _options(op, fb.SoftmaxOptionsT, required=False)
    x, y = sg.activation(op.inputs[0], op.name, op.kind), sg.activation(op.outputs[0], op.name, op.kind)
    if x.shape != y.shape or not np.isfinite(opts.beta) or opts.beta <= 0:
        raise _bad(op, f"softmax of {list(x.shape)} into {list(y.shape)} with beta {opts.beta}")
    node = Node("softmax", op.name, (x.name,), (y.name,), {"beta": float(opts.beta)})
    node_params(node, Graph(op.name, {x.name: x, y.name: y}, (node,), (), ()))  # its checks, now, not at run time
    return [node]


def _same_shape_io(sg: Subgraph, op: Op) -> tuple[Tensor, Tensor]:
    """The input and output of a one-input op that keeps the shape (activations, requantization)."""
    _n_inputs(op, 1)
    x, y = sg.activation(op.inputs[0], op.name, op.kind), sg.activation(op.outputs[0], op.name, op.kind)
    if x.shape != y.shape:
        raise _bad(op, f"shape changes from {list(x.shape)} to {list(y.shape)}")
    return x, y


def quantize(sg: Subgraph, op: Op) -> list[Node]:
    """int8 -> int8 QUANTIZE is a requantization; float -> int8 is handled at the input boundary."""
    x, y = _same_shape_io(sg, op)
    return [Node("requantize", op.name, (x.name,), (y.name,))]


def _lut(kind: str) -> Callable[[Subgraph, Op], list[Node]]:
    def convert(sg: Subgraph, op: Op) -> list[Node]:
        from tte.ops.activations import lut_node

        x, y = _same_shape_io(sg, op)
        return [lut_node(kind, op.name, x, y)]
    return convert


CONVERTERS: dict[str, Callable[[Subgraph, Op], list[Node]]] = {
    "CONV_2D": conv2d,
    "DEPTHWISE_CONV_2D": conv2d,
    "FULLY_CONNECTED": fully_connected,
    "ADD": add,
    "AVERAGE_POOL_2D": average_pool,
    "MEAN": mean,
    "PAD": pad,
    "PADV2": pad,
    "RESHAPE": reshape,
    "SQUEEZE": reshape,
    "TRANSPOSE": transpose,
    "SOFTMAX": softmax,
    "QUANTIZE": quantize,
    "HARD_SWISH": _lut("hard_swish"),
    "LOGISTIC": _lut("logistic"),
    "TANH": _lut("tanh"),
}

# Late import: tflite_ops_ext builds on the helpers above.
from tte.frontend.tflite_ops_ext import EXTRA_CONVERTERS  # noqa: E402

CONVERTERS.update(EXTRA_CONVERTERS)
