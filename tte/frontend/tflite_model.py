"""Reading a .tflite flatbuffer defensively: parse once, then validate every index, shape, buffer and scale
before anything trusts it.

Flatbuffer accessors do no checking: a truncated or corrupted file raises whatever the generated code trips
over (IndexError, struct.error, UnicodeDecodeError, RecursionError, ValueError...). `parse` unpacks the whole
model into the object API inside one guard and turns any of those into ModelFormatError; `Subgraph` then checks
each value at the moment it is used and reports a user error naming the node.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tte.errors import ModelFormatError, UnsupportedError
from tte.frontend.tflite_schema import OP_NAMES, TYPE_NAMES, fb
from tte.ir import QParams, Tensor

# Largest tensor accepted (elements): far above any MCU model, low enough that a corrupted shape cannot make
# the reference interpreter allocate gigabytes.
MAX_ELEMENTS = 1 << 24
_NUMPY_TYPES = {"INT8": np.int8, "INT32": np.int32, "INT64": np.int64, "FLOAT32": np.float32, "UINT8": np.uint8,
                "INT16": np.int16}
_IR_TYPES = {"INT8": "int8", "INT32": "int32", "FLOAT32": "float32"}
FLOAT_HINT = ("convert it with full-integer quantization (TFLiteConverter with optimizations=[tf.lite.Optimize."
              "DEFAULT], a representative_dataset and target_spec.supported_ops=[tf.lite.OpsSet.TFLITE_BUILTINS_INT8])")


def parse(data: bytes) -> fb.ModelT:
    """The whole model in the flatbuffer object API; ModelFormatError for anything that is not a sound .tflite."""
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ModelFormatError("not a TFLite model (no 'TFL3' flatbuffer identifier)",
                               hint="pass a .tflite file written by the TensorFlow Lite converter")
    try:
        model = fb.ModelT.InitFromObj(fb.Model.GetRootAs(data, 0))
    except Exception as e:  # noqa: BLE001 - any exception here means corrupt bytes, never a tte bug
        raise ModelFormatError(f"corrupt TFLite flatbuffer ({type(e).__name__})",
                               hint="re-export the model; the file is truncated or damaged") from e
    if not model.subgraphs or model.subgraphs[0] is None:
        raise ModelFormatError("the TFLite model has no subgraph", hint="re-export the model")
    return model


@dataclass
class Op:
    """One TFLite operator, with its indices checked and its node name resolved."""

    index: int
    kind: str  # builtin operator name, e.g. "CONV_2D" (or "CUSTOM:<code>")
    name: str  # the IR node name: the op's first output tensor name
    inputs: list[int]  # -1 = absent optional input
    outputs: list[int]
    options: Any


class Subgraph:
    """Checked access to the tensors, buffers and operators of subgraph 0."""

    def __init__(self, model: fb.ModelT, data: bytes):
        self.model, self.data = model, data
        self.sg = model.subgraphs[0]
        self.raw_tensors: list[fb.TensorT] = list(self.sg.tensors or [])
        self.buffers: list[fb.BufferT] = list(model.buffers or [])
        self.names = _unique_names(self.raw_tensors)
        self.folded: dict[int, np.ndarray] = {}  # int32 shape arithmetic evaluated at import
        self.ir: dict[str, Tensor] = {}

    # --- structure ---------------------------------------------------------------------------------
    def io_indices(self, which: str) -> list[int]:
        raw = self.sg.inputs if which == "input" else self.sg.outputs
        idx = [int(i) for i in (raw if raw is not None else [])]
        if not idx:
            raise ModelFormatError(f"the TFLite subgraph has no {which}s", hint="re-export the model")
        for i in idx:
            self.check_index(i, f"graph {which}")
        return idx

    def check_index(self, i: int, what: str, node: str | None = None, op: str | None = None) -> None:
        if not 0 <= i < len(self.raw_tensors) or self.raw_tensors[i] is None:
            raise ModelFormatError(f"{what} refers to tensor {i}, which does not exist", node=node, op=op,
                                   hint="the file is damaged; re-export the model")

    def operators(self) -> list[Op]:
        ops = []
        codes = self.model.operatorCodes or []
        for k, o in enumerate(self.sg.operators or []):
            if o is None or not 0 <= o.opcodeIndex < len(codes) or codes[o.opcodeIndex] is None:
                raise ModelFormatError(f"operator {k} has an invalid opcode index", hint="re-export the model")
            kind = _op_kind(codes[o.opcodeIndex])
            inputs = [int(i) for i in (o.inputs if o.inputs is not None else [])]
            outputs = [int(i) for i in (o.outputs if o.outputs is not None else [])]
            if not outputs:
                raise ModelFormatError(f"operator {k} has no outputs", op=kind, hint="re-export the model")
            for i in outputs:
                self.check_index(i, f"operator {k} output", op=kind)
            name = self.names[outputs[0]]
            for i in inputs:
                if i != -1:
                    self.check_index(i, "input", node=name, op=kind)
            ops.append(Op(k, kind, name, inputs, outputs, o.builtinOptions))
        return ops

    # --- tensors -----------------------------------------------------------------------------------
    def type_name(self, i: int) -> str:
        return TYPE_NAMES.get(self.raw_tensors[i].type, f"type {self.raw_tensors[i].type}")

    def shape(self, i: int) -> tuple[int, ...]:
        raw = self.raw_tensors[i].shape
        shape = tuple(int(d) for d in (raw if raw is not None else []))
        if any(d < 0 for d in shape) or int(np.prod(shape, dtype=np.float64)) > MAX_ELEMENTS:
            raise ModelFormatError(f"tensor {self.names[i]} has an invalid shape {list(shape)}",
                                   hint="re-export the model with a fixed batch size of 1")
        return shape

    def value(self, i: int) -> np.ndarray | None:
        """The constant data of tensor i (typed and shaped), or None for an activation."""
        if i in self.folded:
            return self.folded[i]
        t = self.raw_tensors[i]
        if not 0 <= t.buffer < len(self.buffers):
            raise ModelFormatError(f"tensor {self.names[i]} refers to buffer {t.buffer}, which does not exist",
                                   hint="the file is damaged; re-export the model")
        raw = self._buffer_bytes(self.buffers[t.buffer], i)
        if raw is None:
            return None
        kind = self.type_name(i)
        if kind not in _NUMPY_TYPES:
            raise UnsupportedError(f"constant tensor {self.names[i]} has type {kind}",
                                   hint="tte reads int8 models with int32 biases")
        dtype, shape = np.dtype(_NUMPY_TYPES[kind]).newbyteorder("<"), self.shape(i)
        if len(raw) != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
            raise ModelFormatError(f"tensor {self.names[i]}: buffer holds {len(raw)} bytes, shape {list(shape)} "
                                   f"of {kind} needs {int(np.prod(shape)) * dtype.itemsize}",
                                   hint="the file is damaged; re-export the model")
        return np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("=")).reshape(shape)

    def _buffer_bytes(self, b: fb.BufferT | None, i: int) -> bytes | None:
        if b is None:
            return None
        if b.offset > 1:  # models over 2 GB keep buffers after the flatbuffer, addressed by offset and size
            if b.offset + b.size > len(self.data):
                raise ModelFormatError(f"tensor {self.names[i]}: buffer lies outside the file",
                                       hint="the file is truncated; re-export the model")
            return self.data[b.offset:b.offset + b.size] or None
        if b.data is None or len(b.data) == 0:
            return None
        return np.asarray(b.data, dtype=np.uint8).tobytes()

    def quant(self, i: int, node: str, op: str, axis: int | None = None) -> QParams:
        """Validated quantization of tensor i: per tensor, or per channel along `axis` when given."""
        q = self.raw_tensors[i].quantization
        scale = np.asarray(q.scale if q is not None and q.scale is not None else [], dtype=np.float64)
        if scale.size == 0:
            if self.type_name(i) == "FLOAT32":
                raise ModelFormatError("the model is not quantized (float32 tensors)", node=node, op=op,
                                       hint=FLOAT_HINT)
            raise ModelFormatError(f"tensor {self.names[i]} has no quantization parameters", node=node, op=op,
                                   hint=FLOAT_HINT)
        zp = np.asarray(q.zeroPoint if q.zeroPoint is not None else np.zeros(scale.size), dtype=np.int64)
        # Real scales lie far inside [1e-15, 1e15]; outside it, fixed-point multipliers overflow float32 math.
        if zp.size != scale.size or not np.all((scale > 1e-15) & (scale < 1e15)):
            raise ModelFormatError(f"tensor {self.names[i]} has invalid quantization (scales {scale[:4]}, "
                                   f"zero points {zp[:4]})", node=node, op=op, hint="re-export the model")
        if scale.size == 1:
            return QParams(scale, zp)
        shape = self.shape(i)
        qd = int(q.quantizedDimension)
        if axis is None or qd != axis or axis >= len(shape) or scale.size != shape[axis]:
            raise UnsupportedError(f"tensor {self.names[i]} has {scale.size} scales along axis {qd}", node=node,
                                   op=op, hint="tte takes per-channel quantization only for weights "
                                               "(conv axis 0, depthwise axis 3, fully connected axis 0)")
        return QParams(scale, zp, axis)

    def activation(self, i: int, node: str, op: str, rank: int | None = None) -> Tensor:
        """The int8 activation tensor i (per-tensor quantized, not constant) as an IR tensor."""
        name = self.names[i]
        if name in self.ir:
            t = self.ir[name]
            if t.is_const:
                raise UnsupportedError(f"constant operand {name}", node=node, op=op,
                                       hint="tte takes constants only as weights, biases and shapes")
        else:
            kind = self.type_name(i)
            if kind == "FLOAT32":
                raise ModelFormatError("the model is not quantized (float32 activations)", node=node, op=op,
                                       hint=FLOAT_HINT)
            if kind != "INT8":
                raise UnsupportedError(f"activation {name} is {kind}; tte runs int8 activations", node=node, op=op,
                                       hint="quantize with int8 activations (not 16x8)")
            if self.value(i) is not None:
                raise UnsupportedError(f"constant operand {name}", node=node, op=op,
                                       hint="tte takes constants only as weights, biases and shapes")
            q = self.quant(i, node, op)
            if not -128 <= q.zp <= 127:
                raise ModelFormatError(f"tensor {name}: int8 zero point {q.zp}", node=node, op=op,
                                       hint="re-export the model")
            t = self.ir[name] = Tensor(name, self.shape(i), "int8", q)
        if rank is not None and len(t.shape) != rank:
            raise UnsupportedError(f"tensor {name} has shape {list(t.shape)}, expected rank {rank}", node=node, op=op,
                                   hint="tte reads NHWC image models with batch 1")
        if any(d == 0 for d in t.shape):
            raise ModelFormatError(f"tensor {name} is empty (shape {list(t.shape)})", node=node, op=op)
        if len(t.shape) == 4 and t.shape[0] != 1:
            raise UnsupportedError(f"tensor {name} has batch size {t.shape[0]}", node=node, op=op,
                                   hint="tte runs batch 1; convert the model with batch size 1")
        return t

    def constant(self, i: int, node: str, op: str, dtype: str, axis: int | None = None,
                 name: str | None = None) -> Tensor:
        """A quantized constant (weights int8, biases int32) as an IR tensor."""
        data = self.value(i)
        if data is None:
            raise UnsupportedError(f"tensor {self.names[i]} is computed at run time; tte needs it constant",
                                   node=node, op=op, hint="freeze the weights before converting")
        if self.type_name(i) != dtype.upper():
            hint = FLOAT_HINT if self.type_name(i) == "FLOAT32" else "tte reads int8 weights and int32 biases"
            raise ModelFormatError(f"constant {self.names[i]} is {self.type_name(i)}, expected {dtype}", node=node,
                                   op=op, hint=hint)
        name = name or self.names[i]
        t = Tensor(name, data.shape, _IR_TYPES[dtype.upper()], self.quant(i, node, op, axis), data)
        seen = self.ir.get(name)
        if seen is not None:
            if seen.dtype != t.dtype or (seen.quant.per_channel and seen.quant.axis != axis):
                raise UnsupportedError(f"constant {name} is used in two roles", node=node, op=op,
                                       hint="give each layer its own weights")
            return seen
        self.ir[name] = t
        return t

    def int_values(self, i: int, node: str, op: str, what: str) -> np.ndarray:
        """An integer constant operand (axes, paddings, perm, shape) as int64."""
        v = self.value(i) if i >= 0 else None
        if v is None or v.dtype.kind not in "iu":
            raise UnsupportedError(f"the {what} must be a constant integer tensor", node=node, op=op,
                                   hint="tte needs static shapes; convert with a fixed input shape")
        return v.astype(np.int64)


def _unique_names(tensors: list[fb.TensorT]) -> list[str]:
    names, seen = [], set()
    for i, t in enumerate(tensors):
        raw = t.name if t is not None and t.name is not None else b""
        base = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        name, k = base or f"tensor_{i}", 0
        while name in seen:  # TFLite does not promise unique names; IR names must be
            k += 1
            name = f"{base}_{i}" if k == 1 else f"{base}_{i}_{k}"
        seen.add(name)
        names.append(name)
    return names


def _op_kind(code: fb.OperatorCodeT) -> str:
    builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
    if builtin == fb.BuiltinOperator.CUSTOM:
        custom = code.customCode.decode("utf-8", "replace") if isinstance(code.customCode, bytes) else code.customCode
        return f"CUSTOM:{custom}"
    return OP_NAMES.get(builtin, f"BUILTIN_{builtin}")

