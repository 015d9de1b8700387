"""Shared state and helpers of the ONNX frontend: constants, quantization parameters, layouts, IR emission.

The ONNX graph is NCHW and float-typed between QuantizeLinear/DequantizeLinear (QDQ) or int8 between QLinear*
ops (QOperator). The IR is int8 NHWC. `Ctx` maps every ONNX tensor name to what it is on the IR side:
- a constant (`consts`: raw arrays; `qconsts`: integer constants with the quantization of their DequantizeLinear),
- an int8 activation (`acts`: ONNX name -> IR tensor); a DequantizeLinear output maps to the same IR tensor as
  its input (`float_names` remembers it is float on the ONNX side),
- a float graph input not yet quantized (`float_inputs`).
4-D activations are NHWC in the IR; `onnx_shapes` keeps their NCHW shape for the shape arithmetic of later ops.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from tte.errors import ModelFormatError, UnsupportedError
from tte.ir import IOSpec, Node, QParams, Tensor

NCHW_TO_NHWC = (0, 2, 3, 1)
Handler = Callable[["Ctx", onnx.NodeProto], None]
QINT8_HINT = "quantize with onnxruntime.quantization.quantize_static(..., activation_type=QuantType.QInt8, " \
             "weight_type=QuantType.QInt8)"


@dataclass(frozen=True)
class QConst:
    """An integer constant with its quantization: a weight or bias after folding its DequantizeLinear."""

    q: np.ndarray
    scale: np.ndarray  # float32, 1-D
    zp: np.ndarray  # int64, 1-D, same size as scale
    axis: int | None  # None: per tensor

    def real(self) -> np.ndarray:
        """The float value, as DequantizeLinear computes it (float32)."""
        shape = [1] * self.q.ndim
        if self.axis is not None:
            shape[self.axis] = -1
        s = self.scale.reshape(shape) if self.axis is not None else self.scale[0]
        z = self.zp.reshape(shape) if self.axis is not None else self.zp[0]
        return ((self.q.astype(np.int64) - z).astype(np.float32) * s).astype(np.float32)


@dataclass(frozen=True)
class FloatInput:
    """A float graph input on its way to its QuantizeLinear: the user's layout, its (NCHW) shape, and the
    zero-padding Pads met on the way, applied after quantizing (Q(pad(x, 0)) == pad(Q(x), zp))."""

    graph_input: str
    layout: str
    shape: tuple[int, ...]
    pads: tuple[tuple[onnx.NodeProto, tuple[int, ...]], ...] = ()


@dataclass(frozen=True)
class Out:
    """Where an op writes: the IR tensor name, its quantization and the integer clamp (fused Relu/Clip)."""

    name: str
    quant: QParams
    act: tuple[int, int] = (-128, 127)


def ir_shape(onnx_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The IR (NHWC) shape of an activation with this ONNX (NCHW) shape; other ranks keep their layout."""
    if len(onnx_shape) == 4:
        return tuple(onnx_shape[i] for i in NCHW_TO_NHWC)
    return tuple(onnx_shape)


def layout_perm(rank: int) -> tuple[int, ...]:
    """IR axis k holds ONNX axis layout_perm(rank)[k]."""
    return NCHW_TO_NHWC if rank == 4 else tuple(range(rank))


def quantize_rne(x: np.ndarray, q: QParams, lo: int = -128, hi: int = 127) -> np.ndarray:
    """QuantizeLinear as onnxruntime computes it: x / scale in float32, round half to even, + zp, clamp."""
    y = np.round(np.asarray(x, np.float32) / np.float32(q.s)).astype(np.float64) + q.zp
    return np.clip(y, lo, hi).astype(np.int64)


def dequantize(codes: np.ndarray, q: QParams) -> np.ndarray:
    """DequantizeLinear: (q - zp) * scale in float32."""
    return (np.asarray(codes, np.int64) - q.zp).astype(np.float32) * np.float32(q.s)


def clamp_range(lo: float, hi: float, q: QParams) -> tuple[int, int]:
    """The int8 clamp equal to a float clip to [lo, hi] followed by QuantizeLinear (rounding is monotonic)."""
    wide = (-(2**40), 2**40)
    qlo = -128 if lo == -np.inf else max(-128, int(quantize_rne(np.float32(lo), q, *wide)))
    qhi = 127 if hi == np.inf else min(127, int(quantize_rne(np.float32(hi), q, *wide)))
    return qlo, qhi


def opt_input(node: onnx.NodeProto, i: int) -> str | None:
    """Input i of a node, or None when it is absent (missing or the empty name)."""
    return node.input[i] if len(node.input) > i and node.input[i] else None


def node_name(node: onnx.NodeProto) -> str:
    """The source name of a node (its first output when the node has no name)."""
    return node.name or (node.output[0] if node.output else node.op_type)


def attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    for a in node.attribute:
        if a.name == name:
            v = onnx.helper.get_attribute_value(a)
            return v.decode() if isinstance(v, bytes) else v
    return default


def unsupported(node: onnx.NodeProto, message: str, hint: str | None = None) -> UnsupportedError:
    return UnsupportedError(message, node=node_name(node), op=node.op_type, hint=hint)


def malformed(node: onnx.NodeProto, message: str) -> ModelFormatError:
    return ModelFormatError(message, node=node_name(node), op=node.op_type, hint="check the file with onnx.checker")


def default_opset(model: onnx.ModelProto) -> int:
    """The opset of the default ONNX domain (the one whose op semantics matter; contrib domains are versioned
    separately and listed by onnxruntime whether used or not)."""
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            return int(o.version)
    raise ModelFormatError("the model imports no default-domain opset", hint="re-export the model")


class Ctx:
    """The state of one ONNX -> IR conversion (see the module docstring)."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.graph = model.graph
        self.opset = default_opset(model)
        self.consts: dict[str, np.ndarray] = {}
        for t in model.graph.initializer:
            self.consts[t.name] = numpy_helper.to_array(t)
        self.qconsts: dict[str, QConst] = {}
        self.acts: dict[str, str] = {}
        self.float_names: set[str] = set()
        self.float_inputs: dict[str, FloatInput] = {}
        self.input_ir: dict[str, str] = {}  # graph input -> its quantized IR tensor
        self.onnx_shapes: dict[str, tuple[int, ...]] = {}
        self.tensors: dict[str, Tensor] = {}
        self.nodes: list[Node] = []
        self.inputs: list[IOSpec] = []
        # lut outputs as functions of an earlier activation: IR name -> (root IR name, 256 codes indexed root + 128)
        self.lut_src: dict[str, tuple[str, np.ndarray]] = {}
        self.hard_swish_gates: set[str] = set()  # HardSigmoid(x) outputs with HardSwish's alpha and beta
        self.consumers: dict[str, list[int]] = {}
        for i, n in enumerate(model.graph.node):
            for t in n.input:
                if t:
                    self.consumers.setdefault(t, []).append(i)
        self.done: set[int] = set()  # nodes already converted as part of an earlier node (Relu, Clip, Q)
        self.graph_outputs = {o.name for o in model.graph.output}
        self.onnx_input_shapes: dict[str, tuple[int, ...]] = {}
        # ONNX value names: IR constants never take one, so an activation's IR name is its ONNX name.
        self.reserved = {t for n in model.graph.node for t in (*n.input, *n.output)} | set(self.consts)

    # ---- constants

    def is_const(self, name: str) -> bool:
        return name in self.consts or name in self.qconsts

    def const(self, node: onnx.NodeProto, name: str, what: str) -> np.ndarray:
        """A raw constant input (initializer or Constant node)."""
        if name not in self.consts:
            raise unsupported(node, f"{what} ({name!r}) must be a constant initializer")
        return self.consts[name]

    def scalar(self, node: onnx.NodeProto, name: str, what: str) -> float:
        v = self.qconsts[name].real() if name in self.qconsts else self.const(node, name, what)
        if np.size(v) != 1:
            raise unsupported(node, f"{what} must be a scalar, got shape {list(np.shape(v))}")
        return float(np.asarray(v).reshape(-1)[0])

    def qparams(self, node: onnx.NodeProto, scale: str, zp: str | None, what: str) -> QParams:
        """Per-tensor int8 activation quantization from scale / zero-point inputs."""
        s = np.asarray(self.const(node, scale, f"{what} scale"), np.float32).reshape(-1)
        if not zp:
            raise unsupported(node, f"{what} has no zero point, i.e. uint8", QINT8_HINT)
        z = np.asarray(self.const(node, zp, f"{what} zero point"))
        if z.dtype == np.uint8:
            raise unsupported(node, f"{what} is uint8; tte needs int8 activations", QINT8_HINT)
        if z.dtype != np.int8:
            raise unsupported(node, f"{what} has type {z.dtype}; tte needs int8 activations", QINT8_HINT)
        if s.size != 1 or z.size != 1:
            raise unsupported(node, f"{what} is quantized per channel; activations must be per tensor")
        if not (np.isfinite(s[0]) and s[0] > 0):
            raise malformed(node, f"{what} scale {s[0]} is not a positive number")
        return QParams(s, z.astype(np.int64).reshape(-1))

    def weight(self, node: onnx.NodeProto, q: str, scale: str, zp: str | None, axis: int) -> QConst:
        """Integer weights with explicit scale / zero point (QOperator inputs)."""
        data = self.const(node, q, "weight")
        s = np.asarray(self.const(node, scale, "weight scale"), np.float32).reshape(-1)
        z = np.asarray(self.const(node, zp, "weight zero point")).reshape(-1) if zp else np.zeros(1, data.dtype)
        return check_weight(node, QConst(data, s, z.astype(np.int64), axis if s.size > 1 else None))

    def qconst(self, node: onnx.NodeProto, name: str, what: str) -> QConst:
        if name not in self.qconsts:
            if name in self.acts:
                raise unsupported(node, f"{what} ({name!r}) is computed; tte needs constant weights")
            raise unsupported(node, f"{what} ({name!r}) is not a quantized constant",
                              "quantize the weights (onnxruntime.quantization.quantize_static)")
        return check_weight(node, self.qconsts[name])

    # ---- activations

    def act(self, node: onnx.NodeProto, name: str) -> str:
        """The IR tensor of an activation input."""
        if name in self.acts:
            return self.acts[name]
        if name in self.float_inputs:
            raise unsupported(node, f"reads the float graph input {name!r} without quantizing it",
                              "quantize the model with `tte quantize` or onnxruntime quantize_static")
        if self.is_const(name):
            raise unsupported(node, f"input {name!r} is a constant where tte expects an activation")
        raise unsupported(node, f"input {name!r} is a float value tte cannot map to an int8 tensor",
                          "every op must read DequantizeLinear outputs (QDQ) or int8 tensors (QOperator)")

    def act_q(self, name: str) -> QParams:
        return self.tensors[name].quant

    def shape(self, ir_name: str) -> tuple[int, ...]:
        return self.onnx_shapes[ir_name]

    def new_act(self, name: str, onnx_shape: tuple[int, ...], quant: QParams, raw: bool = False) -> str:
        """Create the IR int8 tensor for an ONNX activation of that (NCHW) shape; `raw`: keep the axis order
        (for the NCHW-ordered temporaries around a Flatten)."""
        if any(d <= 0 for d in onnx_shape):
            raise ModelFormatError(f"tensor {name!r} would have shape {list(onnx_shape)}",
                                   hint="check the model's shapes and attributes")
        name = self.unique(name)
        shape = tuple(onnx_shape) if raw else ir_shape(onnx_shape)
        self.tensors[name] = Tensor(name, shape, "int8", quant)
        self.onnx_shapes[name] = tuple(int(d) for d in onnx_shape)
        return name

    def with_quant(self, ir_name: str, quant: QParams, source: str) -> str:
        """The tensor read with another quantization: the same bytes under a new scale / zero point (a reshape
        is a byte alias). onnxruntime never writes this; a hand-made graph may."""
        if same_quant(self.act_q(ir_name), quant):
            return ir_name
        out = self.new_act(f"{ir_name}:as_{source}", self.shape(ir_name), quant)
        self.emit("reshape", source, [ir_name], [out])
        return out

    # ---- emission

    def unique(self, name: str, avoid_onnx_names: bool = False) -> str:
        base, i = name, 1
        while name in self.tensors or (avoid_onnx_names and name in self.reserved):
            name, i = f"{base}_{i}", i + 1
        return name

    def const_tensor(self, name: str, data: np.ndarray, dtype: str, quant: QParams | None) -> str:
        name = self.unique(name, avoid_onnx_names=True)
        self.tensors[name] = Tensor(name, data.shape, dtype, quant, data)
        return name

    def emit(self, op: str, name: str, inputs: list[str], outputs: list[str], **attrs: Any) -> None:
        self.nodes.append(Node(op, name, tuple(inputs), tuple(outputs), attrs))


def same_quant(a: QParams, b: QParams) -> bool:
    return a.scale.shape == b.scale.shape and bool(np.all(a.scale == b.scale) and np.all(a.zero_point == b.zero_point))


def check_weight(node: onnx.NodeProto, w: QConst) -> QConst:
    """int8 weights with a valid scale vector (uint8 and other types are a quantization setting to change)."""
    if w.q.dtype == np.uint8:
        raise unsupported(node, "weights are uint8; tte needs int8 weights", QINT8_HINT)
    if w.q.dtype != np.int8:
        raise unsupported(node, f"weights have type {w.q.dtype}; tte needs int8 weights", QINT8_HINT)
    if w.axis is not None and not (-w.q.ndim <= w.axis < w.q.ndim and w.q.shape[w.axis] == w.scale.size):
        raise malformed(node, f"{w.scale.size} weight scales do not match axis {w.axis} of shape {list(w.q.shape)}")
    if w.zp.size != w.scale.size or not np.all(np.isfinite(w.scale) & (w.scale > 0)):
        raise malformed(node, "weight scales must be positive and match the zero points")
    axis = None if w.axis is None else w.axis % w.q.ndim
    return QConst(w.q, w.scale, w.zp, axis)
