"""ONNX frontend: an int8 ONNX model (QDQ or QOperator, as onnxruntime.quantization writes it) -> IR graph.

    graph = tte.frontend.onnx.load("model.onnx")          # or tte.frontend.load, which also reads TFLite

The walk visits the nodes in order and dispatches on the op type to the QDQ folding (`onnx_qdq`) and the
QOperator mapping (`onnx_qop`); both kinds may appear in one graph (onnxruntime leaves some ops in float inside
QOperator models). The boundaries: the graph input's QuantizeLinear becomes a float IOSpec (layout NCHW for a
4-D input, NHWC when a float Transpose(0, 3, 1, 2) comes first), a final DequantizeLinear a float output.
Arithmetic follows TFLite Micro (see shared INT8_ARITHMETIC.md): against onnxruntime, which requantizes in
float, outputs agree within 1 LSB per layer.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from tte.errors import ModelFormatError, TteError, UnsupportedError
from tte.frontend import c_identifier, onnx_ops_ext, onnx_qdq, onnx_qop, onnx_shapes
from tte.frontend.onnx_common import QINT8_HINT, Ctx, FloatInput, node_name
from tte.ir import Graph, IOSpec

HANDLERS = {**onnx_qdq.HANDLERS, **onnx_shapes.HANDLERS, **onnx_qop.HANDLERS, **onnx_ops_ext.HANDLERS}
DOMAINS = ("", "ai.onnx", "com.microsoft")
QUANTIZE_HINT = ("quantize it first: `tte quantize model.onnx --data calib.npz` or onnxruntime.quantization."
                 "quantize_static(..., quant_format=QuantFormat.QDQ, per_channel=True)")
_FLOAT = onnx.TensorProto.FLOAT


def load(path: str | Path, name: str | None = None) -> Graph:
    """Read an int8 ONNX file into an IR graph (named after the file stem by default); every problem with the
    user's file raises a TteError."""
    name = c_identifier(name or Path(path).stem)
    try:
        model = onnx.load_model(str(path))
    except Exception as e:  # protobuf DecodeError, missing external data, ...: all mean a bad file
        raise ModelFormatError(f"{path}: not a readable ONNX file ({type(e).__name__}: {e})".strip(),
                               hint="check that the file is a complete .onnx or .tflite model") from None
    return convert(model, name)


def convert(model: onnx.ModelProto, name: str = "model") -> Graph:
    """Convert an in-memory ONNX model (see `load`)."""
    try:
        _check_model(model)
        ctx = Ctx(model)
        _graph_inputs(ctx)
        for i, node in enumerate(model.graph.node):
            if i not in ctx.done:
                _dispatch(ctx, node)
        outputs = _graph_outputs(ctx)
    except TteError:
        raise
    except (ValueError, KeyError, IndexError, TypeError, OverflowError) as e:
        # A damaged file can still parse as protobuf and hold inconsistent values (an initializer whose data
        # does not fit its dims, an attribute of the wrong type); report it as malformed, not as a crash.
        raise ModelFormatError(f"inconsistent model ({type(e).__name__}: {e})",
                               hint="check the file with onnx.checker.check_model(full_check=True)") from None
    nodes = _live_nodes(ctx, outputs)
    graph = Graph(name, ctx.tensors, nodes, tuple(ctx.inputs), outputs)
    graph = graph.with_nodes(graph.nodes)  # drop tensors of removed nodes
    graph.validate()
    return graph


def _check_model(model: onnx.ModelProto) -> None:
    # No onnx.checker here: it rejects models onnxruntime runs (e.g. outputs without a shape). Every value
    # read from the file is checked where it is used instead.
    if not model.graph.node:
        raise ModelFormatError("the model has no nodes", hint="check that the file is a complete ONNX model")
    _check_text(model)
    ops = {n.op_type for n in model.graph.node}
    if ops & {"DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul"}:
        raise UnsupportedError("dynamically quantized model (activations quantized at run time)", hint=QUANTIZE_HINT)
    if not any(op in ("QuantizeLinear", "QGemm") or op.startswith("QLinear") for op in ops):
        raise ModelFormatError("float model: no QuantizeLinear or QLinear* op, tte needs an int8 model",
                               hint=QUANTIZE_HINT)


def _check_text(model: onnx.ModelProto) -> None:
    """protobuf hands out a string field that is not valid UTF-8 as bytes: only a damaged file has one."""
    g = model.graph
    names = [*(t.name for t in g.initializer), *(v.name for v in (*g.input, *g.output))]
    for n in g.node:
        names += [n.op_type, n.name, n.domain, *n.input, *n.output, *(a.name for a in n.attribute)]
    names += [o.domain for o in model.opset_import]
    if not all(isinstance(t, str) for t in names):
        raise ModelFormatError("names in the graph are not valid UTF-8 text", hint="the file is damaged")


def _dispatch(ctx: Ctx, node: onnx.NodeProto) -> None:
    handler = HANDLERS.get(node.op_type) if node.domain in DOMAINS else None
    if handler is None:
        op = node.op_type if node.domain in DOMAINS else f"{node.domain}.{node.op_type}"
        raise UnsupportedError("op is not supported", node=node_name(node), op=op,
                               hint=f"supported ONNX ops: {', '.join(sorted(HANDLERS))}")
    if not node.output or not node.input:
        if node.op_type != "Constant":
            raise ModelFormatError("node without inputs or outputs", node=node_name(node), op=node.op_type)
    handler(ctx, node)


def _graph_inputs(ctx: Ctx) -> None:
    """Register the float graph inputs (batch 1); the QuantizeLinear after each makes it an IR input."""
    for vi in ctx.graph.input:
        if vi.name in ctx.consts:  # old exporters list initializers as inputs too
            continue
        tt = vi.type.tensor_type
        if tt.elem_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8):
            raise UnsupportedError(f"graph input {vi.name!r} is already quantized",
                                   hint="give the model a float input followed by QuantizeLinear")
        if tt.elem_type != _FLOAT:
            raise UnsupportedError(f"graph input {vi.name!r} has element type {tt.elem_type}, not float32")
        dims = []
        for i, d in enumerate(tt.shape.dim):
            if d.HasField("dim_value") and d.dim_value > 0:
                dims.append(int(d.dim_value))
            elif i == 0:
                dims.append(1)  # a symbolic batch dimension: tte runs batch 1
            else:
                raise UnsupportedError(f"graph input {vi.name!r} has a dynamic dimension {i}",
                                       hint="fix the input shape (onnxruntime.tools.make_dynamic_shape_fixed)")
        if dims and dims[0] != 1:
            raise UnsupportedError(f"graph input {vi.name!r} has batch size {dims[0]}", hint="export with batch 1")
        shape = tuple(dims)
        ctx.onnx_input_shapes[vi.name] = shape
        ctx.float_inputs[vi.name] = FloatInput(vi.name, "NCHW" if len(shape) == 4 else "NHWC", shape)


def _graph_outputs(ctx: Ctx) -> tuple[IOSpec, ...]:
    """A graph output is an int8 tensor (is_float=False) or its dequantized value (is_float=True)."""
    outs = []
    for vi in ctx.graph.output:
        if vi.name not in ctx.acts:
            raise UnsupportedError(f"graph output {vi.name!r} is not a quantized tensor tte computes",
                                   hint=QINT8_HINT)
        ir = ctx.acts[vi.name]
        shape = ctx.shape(ir)
        outs.append(IOSpec(ir, shape, "NCHW" if len(shape) == 4 else "NHWC", vi.name in ctx.float_names))
    if not ctx.inputs:
        raise UnsupportedError("the model has no quantized float input", hint=QUANTIZE_HINT)
    return tuple(outs)


def _live_nodes(ctx: Ctx, outputs: tuple[IOSpec, ...]) -> list:
    """The emitted nodes some output depends on (tables fused into later tables leave dead ones behind)."""
    needed = {io.tensor for io in outputs}
    keep = []
    for node in reversed(ctx.nodes):
        if any(t in needed for t in node.outputs):
            keep.append(node)
            needed.update(t for t in node.inputs if t)
    return keep[::-1]
