"""Write an IR graph as a full-integer .tflite file, so that tflite-micro can serve as the oracle.

`write_tflite(graph)` maps every IR op to the TFLite builtin that computes the same integer arithmetic. What
TFLite cannot say is refused with `UnsupportedError` rather than approximated: explicit paddings that are
neither SAME nor VALID become a PAD op in front of a VALID convolution (an average pool cannot do that, since
TFLite counts only the taps inside the image), and an `act` clamp must be one of the fused activations
(NONE, RELU, RELU6, RELU_N1_TO_1 as `tte.quant.activation_range` computes them).

Graph inputs and outputs whose IOSpec says `is_float` get float32 tensors with QUANTIZE / DEQUANTIZE boundary
ops, as the TF converter writes them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import flatbuffers
import numpy as np

from tte.errors import UnsupportedError
from tte.frontend.tflite_schema import ACTIVATION_CODES, fb, same_pads
from tte.ir import Graph, Node, QParams, Tensor
from tte.quant import activation_range

_TYPES = {"int8": fb.TensorType.INT8, "int32": fb.TensorType.INT32, "float32": fb.TensorType.FLOAT32,
          "int16": fb.TensorType.INT16, "uint8": fb.TensorType.UINT8}
_LUT_SOURCES = {"hard_swish": fb.BuiltinOperator.HARD_SWISH, "logistic": fb.BuiltinOperator.LOGISTIC,
                "tanh": fb.BuiltinOperator.TANH, "relu": fb.BuiltinOperator.RELU, "relu6": fb.BuiltinOperator.RELU6,
                "leaky_relu": fb.BuiltinOperator.LEAKY_RELU}


def write_tflite(graph: Graph) -> bytes:
    """The graph as .tflite bytes (schema version 3, one subgraph). Raises UnsupportedError for what TFLite
    cannot express exactly (a plain `lut`, a clamp that is no fused activation, an odd average-pool padding)."""
    w = _Writer(graph)
    for io in graph.inputs:
        w.graph_input(io.tensor, io.is_float, io.layout)
    for node in graph.nodes:
        emit = _EMITTERS.get(node.op)
        if emit is None or (node.op == "lut" and node.attrs.get("source_op") not in _LUT_SOURCES):
            raise UnsupportedError("the TFLite writer cannot express this op", node=node.name, op=node.op,
                                   hint="only lut nodes with attrs source_op in hard_swish/logistic/tanh can be "
                                        f"written; ops: {', '.join(sorted(_EMITTERS))}")
        emit(w, node)
    for io in graph.outputs:
        w.graph_output(io.tensor, io.is_float, io.layout)
    return w.finish()


class _Writer:
    """Accumulates tensors, buffers, opcodes and operators of one subgraph."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.tensors: list[fb.TensorT] = []
        self.buffers: list[fb.BufferT] = [fb.BufferT()]  # buffer 0: the empty sentinel every model starts with
        self.index: dict[str, int] = {}
        self.opcodes: dict[int, int] = {}
        self.operators: list[fb.OperatorT] = []
        self.inputs: list[int] = []
        self.outputs: list[int] = []

    # --- tensors -------------------------------------------------------------------------------------
    def tensor(self, name: str) -> int:
        """Index of the IR tensor `name`, created on first use."""
        if name not in self.index:
            t = self.graph[name]
            self.index[name] = self.new_tensor(t.name, t.shape, t.dtype, t.quant, t.data)
        return self.index[name]

    def new_tensor(self, name: str, shape: tuple[int, ...], dtype: str, quant: QParams | None = None,
                   data: np.ndarray | None = None) -> int:
        t = fb.TensorT()
        t.name = name
        t.shape = np.asarray(shape, dtype=np.int32)
        t.type = _TYPES[dtype]
        t.quantization = _quantization(quant)
        b = fb.BufferT()  # the converter gives every tensor its own buffer, empty for activations
        if data is not None:
            little = np.ascontiguousarray(data, dtype=np.asarray(data).dtype.newbyteorder("<"))
            b.data = np.frombuffer(little.tobytes(), dtype=np.uint8)
        self.buffers.append(b)
        t.buffer = len(self.buffers) - 1
        self.tensors.append(t)
        return len(self.tensors) - 1

    def const_int32(self, name: str, values: np.ndarray | list) -> int:
        v = np.asarray(values, dtype=np.int32)
        return self.new_tensor(name, v.shape, "int32", None, v)

    def like(self, name: str, template: Tensor, shape: tuple[int, ...]) -> int:
        """A new activation with `template`'s dtype and quantization and another shape."""
        return self.new_tensor(name, shape, template.dtype, template.quant)

    # --- operators -----------------------------------------------------------------------------------
    def op(self, code: int, inputs: list[int], outputs: list[int], options_type: int = 0, options=None) -> None:
        self.opcodes.setdefault(code, len(self.opcodes))
        o = fb.OperatorT()
        o.opcodeIndex = self.opcodes[code]
        o.inputs = np.asarray(inputs, dtype=np.int32)
        o.outputs = np.asarray(outputs, dtype=np.int32)
        o.builtinOptionsType = options_type
        o.builtinOptions = options
        self.operators.append(o)

    def graph_input(self, name: str, is_float: bool, layout: str) -> None:
        if not is_float:
            self.inputs.append(self.tensor(name))
            return
        t = _float_boundary(self.graph[name], layout)
        f = self.new_tensor(f"{name}_float", t.shape, "float32")
        self.inputs.append(f)
        self.op(fb.BuiltinOperator.QUANTIZE, [f], [self.tensor(name)], fb.BuiltinOptions.QuantizeOptions,
                fb.QuantizeOptionsT())

    def graph_output(self, name: str, is_float: bool, layout: str) -> None:
        if not is_float:
            self.outputs.append(self.tensor(name))
            return
        t = _float_boundary(self.graph[name], layout)
        f = self.new_tensor(f"{name}_float", t.shape, "float32")
        self.op(fb.BuiltinOperator.DEQUANTIZE, [self.tensor(name)], [f])
        self.outputs.append(f)

    def finish(self) -> bytes:
        codes = sorted(self.opcodes, key=self.opcodes.get)
        model = fb.ModelT()
        model.version = 3
        model.description = f"tte {self.graph.name}"
        model.operatorCodes = []
        for code in codes:
            oc = fb.OperatorCodeT()
            oc.builtinCode = code
            oc.deprecatedBuiltinCode = min(code, fb.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES)
            model.operatorCodes.append(oc)
        sg = fb.SubGraphT()
        sg.name = self.graph.name
        sg.tensors, sg.operators = self.tensors, self.operators
        sg.inputs = np.asarray(self.inputs, dtype=np.int32)
        sg.outputs = np.asarray(self.outputs, dtype=np.int32)
        model.subgraphs = [sg]
        model.buffers = self.buffers
        return pack_model(model)


def unpack_model(data: bytes) -> fb.ModelT:
    """A .tflite file as the schema's object API (for tests that edit a written model)."""
    return fb.ModelT.InitFromObj(fb.Model.GetRootAs(data, 0))


def pack_model(model: fb.ModelT) -> bytes:
    """Object API -> .tflite bytes with the 'TFL3' identifier."""
    builder = flatbuffers.Builder(4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _quantization(q: QParams | None) -> fb.QuantizationParametersT | None:
    if q is None:
        return None
    p = fb.QuantizationParametersT()
    p.scale = np.asarray(q.scale, dtype=np.float32)
    p.zeroPoint = np.asarray(q.zero_point, dtype=np.int64)
    p.quantizedDimension = q.axis or 0
    return p


def _float_boundary(t: Tensor, layout: str) -> Tensor:
    if layout != "NHWC" and len(t.shape) == 4:
        raise UnsupportedError(f"float input/output {t.name} in {layout} layout: the TFLite writer writes NHWC only")
    return t


# --- op emitters ---------------------------------------------------------------------------------------

def _fused(w: _Writer, node: Node) -> int:
    """The fused activation code whose clamp equals node.attrs['act'] for the output quantization."""
    q = w.graph[node.outputs[0]].quant
    act = tuple(int(v) for v in node.attrs["act"])
    for name in ("none", "relu6", "relu", "relu_n1_to_1"):
        if activation_range(name, q.s, q.zp) == act:
            return ACTIVATION_CODES[name]
    raise UnsupportedError(f"clamp {act} is no TFLite fused activation for output q({q.s:g}, {q.zp})",
                           node=node.name, op=node.op,
                           hint="use tte.quant.activation_range('relu'|'relu6'|'relu_n1_to_1', scale, zp)")


def _padding(w: _Writer, node: Node, kernel: tuple[int, int]) -> tuple[int, tuple[int, int, int, int] | None]:
    """(SAME or VALID, the explicit pads a PAD op must add first, or None)."""
    x, y = w.graph[node.inputs[0]], w.graph[node.outputs[0]]
    pad = tuple(int(p) for p in node.attrs["pad"])
    if not any(pad):
        return fb.Padding.VALID, None
    (sh, sw), (kh, kw) = node.attrs["stride"], kernel
    h, wd = x.shape[1:3]
    same_out = (math.ceil(h / sh), math.ceil(wd / sw))
    top, bottom = same_pads(h, kh, sh, same_out[0])
    left, right = same_pads(wd, kw, sw, same_out[1])
    if tuple(y.shape[1:3]) == same_out and pad == (top, left, bottom, right):
        return fb.Padding.SAME, None
    return fb.Padding.VALID, pad


def _padded_input(w: _Writer, node: Node, kernel: tuple[int, int]) -> tuple[int, int]:
    """(padding code, input tensor index), inserting a PAD op when the pads are neither SAME nor VALID."""
    code, pad = _padding(w, node, kernel)
    if pad is None:
        return code, w.tensor(node.inputs[0])
    x = w.graph[node.inputs[0]]
    pt, pl, pb, pr = pad
    shape = (x.shape[0], x.shape[1] + pt + pb, x.shape[2] + pl + pr, x.shape[3])
    padded = w.like(f"{node.name}_padded", x, shape)
    paddings = w.const_int32(f"{node.name}_paddings", [[0, 0], [pt, pb], [pl, pr], [0, 0]])
    w.op(fb.BuiltinOperator.PAD, [w.tensor(x.name), paddings], [padded], fb.BuiltinOptions.PadOptions,
         fb.PadOptionsT())
    return code, padded


def _conv(w: _Writer, node: Node) -> None:
    wt = w.graph[node.inputs[1]]
    depthwise = node.op == "depthwise_conv2d"
    code, x = _padded_input(w, node, wt.shape[1:3])
    opts = fb.DepthwiseConv2DOptionsT() if depthwise else fb.Conv2DOptionsT()
    opts.padding = code
    opts.strideH, opts.strideW = (int(s) for s in node.attrs["stride"])
    opts.fusedActivationFunction = _fused(w, node)
    inputs = [x, w.tensor(wt.name), w.tensor(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else -1]
    if depthwise:
        opts.depthMultiplier = int(node.attrs["multiplier"])
        w.op(fb.BuiltinOperator.DEPTHWISE_CONV_2D, inputs, [w.tensor(node.outputs[0])],
             fb.BuiltinOptions.DepthwiseConv2DOptions, opts)
    else:
        w.op(fb.BuiltinOperator.CONV_2D, inputs, [w.tensor(node.outputs[0])], fb.BuiltinOptions.Conv2DOptions, opts)


def _fully_connected(w: _Writer, node: Node) -> None:
    opts = fb.FullyConnectedOptionsT()
    opts.fusedActivationFunction = _fused(w, node)
    opts.keepNumDims = len(w.graph[node.outputs[0]].shape) > 2
    bias = w.tensor(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else -1
    w.op(fb.BuiltinOperator.FULLY_CONNECTED, [w.tensor(node.inputs[0]), w.tensor(node.inputs[1]), bias],
         [w.tensor(node.outputs[0])], fb.BuiltinOptions.FullyConnectedOptions, opts)


def _add(w: _Writer, node: Node) -> None:
    opts = fb.AddOptionsT()
    opts.fusedActivationFunction = _fused(w, node)
    w.op(fb.BuiltinOperator.ADD, [w.tensor(t) for t in node.inputs[:2]], [w.tensor(node.outputs[0])],
         fb.BuiltinOptions.AddOptions, opts)


def _avg_pool(w: _Writer, node: Node) -> None:
    kernel = tuple(int(k) for k in node.attrs["kernel"])
    code, pad = _padding(w, node, kernel)
    if pad is not None:
        raise UnsupportedError(f"average-pool padding {pad} is neither SAME nor VALID", node=node.name, op=node.op,
                               hint="TFLite counts only in-image taps, so a PAD op would change the result")
    opts = fb.Pool2DOptionsT()
    opts.padding = code
    opts.strideH, opts.strideW = (int(s) for s in node.attrs["stride"])
    opts.filterHeight, opts.filterWidth = kernel
    opts.fusedActivationFunction = _fused(w, node)
    w.op(fb.BuiltinOperator.AVERAGE_POOL_2D, [w.tensor(node.inputs[0])], [w.tensor(node.outputs[0])],
         fb.BuiltinOptions.Pool2DOptions, opts)


def _mean(w: _Writer, node: Node) -> None:
    axes = w.const_int32(f"{node.name}_axes", list(node.attrs["axes"]))
    opts = fb.ReducerOptionsT()
    opts.keepDims = bool(node.attrs.get("keepdims", True))
    w.op(fb.BuiltinOperator.MEAN, [w.tensor(node.inputs[0]), axes], [w.tensor(node.outputs[0])],
         fb.BuiltinOptions.ReducerOptions, opts)


def _pad(w: _Writer, node: Node) -> None:
    y = w.graph[node.outputs[0]]
    paddings = w.const_int32(f"{node.name}_paddings", [list(p) for p in node.attrs["pads"]])
    value = node.attrs.get("value")
    if value is None or int(value) == y.quant.zp:
        w.op(fb.BuiltinOperator.PAD, [w.tensor(node.inputs[0]), paddings], [w.tensor(y.name)],
             fb.BuiltinOptions.PadOptions, fb.PadOptionsT())
        return
    v = w.new_tensor(f"{node.name}_value", (), "int8", y.quant, np.asarray(int(value), np.int8))
    w.op(fb.BuiltinOperator.PADV2, [w.tensor(node.inputs[0]), paddings, v], [w.tensor(y.name)],
         fb.BuiltinOptions.PadV2Options, fb.PadV2OptionsT())


def _reshape(w: _Writer, node: Node) -> None:
    shape = list(w.graph[node.outputs[0]].shape)
    opts = fb.ReshapeOptionsT()
    opts.newShape = np.asarray(shape, dtype=np.int32)
    w.op(fb.BuiltinOperator.RESHAPE, [w.tensor(node.inputs[0]), w.const_int32(f"{node.name}_shape", shape)],
         [w.tensor(node.outputs[0])], fb.BuiltinOptions.ReshapeOptions, opts)


def _transpose(w: _Writer, node: Node) -> None:
    perm = w.const_int32(f"{node.name}_perm", list(node.attrs["perm"]))
    w.op(fb.BuiltinOperator.TRANSPOSE, [w.tensor(node.inputs[0]), perm], [w.tensor(node.outputs[0])],
         fb.BuiltinOptions.TransposeOptions, fb.TransposeOptionsT())


def _unary(code: int, options_type: int = 0, options: Callable[[Node], object] | None = None):
    def emit(w: _Writer, node: Node) -> None:
        w.op(code, [w.tensor(node.inputs[0])], [w.tensor(node.outputs[0])], options_type,
             options(node) if options else None)
    return emit


def _softmax_options(node: Node) -> fb.SoftmaxOptionsT:
    opts = fb.SoftmaxOptionsT()
    opts.beta = float(node.attrs.get("beta", 1.0))
    return opts


def _lut(w: _Writer, node: Node) -> None:
    if node.attrs["source_op"] == "leaky_relu":
        opts = fb.LeakyReluOptionsT()
        opts.alpha = float(node.attrs["alpha"])
        _unary(fb.BuiltinOperator.LEAKY_RELU, fb.BuiltinOptions.LeakyReluOptions, lambda n: opts)(w, node)
        return
    _unary(_LUT_SOURCES[node.attrs["source_op"]])(w, node)


def _max_pool(w: _Writer, node: Node) -> None:
    kernel = tuple(int(k) for k in node.attrs["kernel"])
    code, pad = _padding(w, node, kernel)
    if pad is not None:
        raise UnsupportedError(f"max-pool padding {pad} is neither SAME nor VALID", node=node.name, op=node.op,
                               hint="a PAD op would add zero-point values that can win the maximum")
    opts = fb.Pool2DOptionsT()
    opts.padding = code
    opts.strideH, opts.strideW = (int(s) for s in node.attrs["stride"])
    opts.filterHeight, opts.filterWidth = kernel
    opts.fusedActivationFunction = _fused(w, node)
    w.op(fb.BuiltinOperator.MAX_POOL_2D, [w.tensor(node.inputs[0])], [w.tensor(node.outputs[0])],
         fb.BuiltinOptions.Pool2DOptions, opts)


def _binary(code: int, options_type: int, options_cls: type) -> Callable[[_Writer, Node], None]:
    def emit(w: _Writer, node: Node) -> None:
        opts = options_cls()
        opts.fusedActivationFunction = _fused(w, node)
        w.op(code, [w.tensor(t) for t in node.inputs[:2]], [w.tensor(node.outputs[0])], options_type, opts)
    return emit


def _concat(w: _Writer, node: Node) -> None:
    opts = fb.ConcatenationOptionsT()
    opts.axis = int(node.attrs["axis"])
    w.op(fb.BuiltinOperator.CONCATENATION, [w.tensor(t) for t in node.inputs], [w.tensor(node.outputs[0])],
         fb.BuiltinOptions.ConcatenationOptions, opts)


def _slice(w: _Writer, node: Node) -> None:
    begin, size = list(node.attrs["begin"]), list(node.attrs["size"])
    strides = list(node.attrs.get("strides") or [1] * len(begin))
    x, y = w.tensor(node.inputs[0]), w.tensor(node.outputs[0])
    if all(s == 1 for s in strides):
        w.op(fb.BuiltinOperator.SLICE, [x, w.const_int32(f"{node.name}_begin", begin),
                                        w.const_int32(f"{node.name}_size", size)], [y],
             fb.BuiltinOptions.SliceOptions, fb.SliceOptionsT())
        return
    end = [b + (n - 1) * s + 1 for b, n, s in zip(begin, size, strides, strict=True)]
    w.op(fb.BuiltinOperator.STRIDED_SLICE, [x, w.const_int32(f"{node.name}_begin", begin),
                                            w.const_int32(f"{node.name}_end", end),
                                            w.const_int32(f"{node.name}_strides", strides)], [y],
         fb.BuiltinOptions.StridedSliceOptions, fb.StridedSliceOptionsT())


_EMITTERS: dict[str, Callable[[_Writer, Node], None]] = {
    "conv2d": _conv,
    "depthwise_conv2d": _conv,
    "fully_connected": _fully_connected,
    "add": _add,
    "add_broadcast": _add,
    "avg_pool2d": _avg_pool,
    "mean": _mean,
    "pad": _pad,
    "reshape": _reshape,
    "transpose": _transpose,
    "requantize": _unary(fb.BuiltinOperator.QUANTIZE, fb.BuiltinOptions.QuantizeOptions,
                         lambda n: fb.QuantizeOptionsT()),
    "softmax": _unary(fb.BuiltinOperator.SOFTMAX, fb.BuiltinOptions.SoftmaxOptions, _softmax_options),
    "lut": _lut,
    "max_pool2d": _max_pool,
    "mul": _binary(fb.BuiltinOperator.MUL, fb.BuiltinOptions.MulOptions, fb.MulOptionsT),
    "sub": _binary(fb.BuiltinOperator.SUB, fb.BuiltinOptions.SubOptions, fb.SubOptionsT),
    "concat": _concat,
    "slice": _slice,
}
