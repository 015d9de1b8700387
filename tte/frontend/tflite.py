"""TFLite frontend: a full-integer .tflite model (as the TF converter writes it) -> tte IR.

    graph = load("kws.tflite")            # or load(raw_bytes, name="kws")

What it reads: int8 activations, int8 weights (per channel or per tensor), int32 biases, float32 only at the
boundary (QUANTIZE after a float input, DEQUANTIZE before a float output: these become the IOSpec). Ops:
CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, ADD, AVERAGE_POOL_2D, MEAN, PAD, PADV2, RESHAPE, SQUEEZE,
TRANSPOSE, SOFTMAX, QUANTIZE (int8 -> int8), HARD_SWISH, LOGISTIC, TANH; shape arithmetic on constants
(SHAPE, STRIDED_SLICE, PACK, ...) is evaluated at import. Each node is named after its first output tensor.

Everything read from the file is validated before use; problems are reported as ModelFormatError (damaged or
non-quantized file) or UnsupportedError (valid TFLite that tte does not run), naming the node and op.
"""

from __future__ import annotations

from pathlib import Path

from tte.errors import ModelFormatError, TteError, UnsupportedError
from tte.frontend import c_identifier
from tte.frontend.tflite_fold import FOLDABLE, fold_shape_arithmetic, fuse_pads
from tte.frontend.tflite_model import FLOAT_HINT, Op, Subgraph, parse
from tte.frontend.tflite_ops import CONVERTERS
from tte.ir import Graph, IOSpec, Node

SUPPORTED_OPS = tuple(sorted({*CONVERTERS, "DEQUANTIZE"}))


def load(source: str | Path | bytes, name: str | None = None) -> Graph:
    """Read an int8 .tflite model (path or bytes) as an IR graph named `name` (default: the file stem)."""
    data, stem = _read(source)
    model = parse(data)
    sg = Subgraph(model, data)
    ops = fold_shape_arithmetic(sg, sg.operators())
    inputs, ops = _graph_inputs(sg, ops)
    outputs, ops = _graph_outputs(sg, ops)
    _reject_float(sg, ops)
    nodes: list[Node] = []
    for op in ops:
        convert = CONVERTERS.get(op.kind)
        if convert is None:
            raise UnsupportedError(f"TFLite op {op.kind} is not supported", node=op.name, op=op.kind,
                                   hint=f"supported ops: {', '.join(SUPPORTED_OPS)} (and shape arithmetic: "
                                        f"{', '.join(FOLDABLE)})")
        nodes.extend(convert(sg, op))
    nodes = fuse_pads(nodes, sg.ir, {io.tensor for io in outputs})
    graph = Graph(c_identifier(name or stem), sg.ir, nodes, inputs, outputs)
    _check_dataflow(graph)
    return graph.with_nodes(graph.nodes)


def _read(source: str | Path | bytes) -> tuple[bytes, str]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), "model"
    path = Path(source)
    try:
        return path.read_bytes(), path.stem
    except OSError as e:
        raise TteError(f"cannot read {path}: {e.strerror or e}", hint="check the model path") from None


def _consumers(ops: list[Op], tensor: int) -> list[Op]:
    return [op for op in ops if tensor in op.inputs]


def _graph_inputs(sg: Subgraph, ops: list[Op]) -> tuple[list[IOSpec], list[Op]]:
    """IOSpecs of the graph inputs; a float input's QUANTIZE op is absorbed into its IOSpec."""
    specs = []
    for i in sg.io_indices("input"):
        kind = sg.type_name(i)
        if kind == "FLOAT32":
            users = _consumers(ops, i)
            q = users[0] if len(users) == 1 and users[0].kind == "QUANTIZE" else None
            if q is None or len(q.inputs) != 1 or sg.type_name(q.outputs[0]) != "INT8":
                reader = f" (read by {users[0].kind} '{users[0].name}')" if users else ""
                raise ModelFormatError(f"the model is not fully quantized: float input {sg.names[i]} is not "
                                       f"quantized to int8 first{reader}", hint=FLOAT_HINT)
            x = sg.activation(q.outputs[0], q.name, q.kind)
            specs.append(IOSpec(x.name, x.shape, "NHWC", is_float=True))
            ops = [op for op in ops if op is not q]
        else:
            x = sg.activation(i, sg.names[i], "graph input")
            specs.append(IOSpec(x.name, x.shape, "NHWC", is_float=False))
    return specs, ops


def _graph_outputs(sg: Subgraph, ops: list[Op]) -> tuple[list[IOSpec], list[Op]]:
    """IOSpecs of the graph outputs; a float output's DEQUANTIZE op is absorbed into its IOSpec."""
    specs = []
    for i in sg.io_indices("output"):
        if sg.type_name(i) == "FLOAT32":
            makers = [op for op in ops if i in op.outputs]
            d = makers[0] if len(makers) == 1 and makers[0].kind == "DEQUANTIZE" else None
            if d is None or len(d.inputs) != 1 or d.inputs[0] < 0 or sg.type_name(d.inputs[0]) != "INT8":
                raise ModelFormatError(f"the model is not fully quantized: float output {sg.names[i]} is not "
                                       "dequantized from int8", hint=FLOAT_HINT)
            y = sg.activation(d.inputs[0], d.name, d.kind)
            specs.append(IOSpec(y.name, y.shape, "NHWC", is_float=True))
            ops = [op for op in ops if op is not d]
        else:
            y = sg.activation(i, sg.names[i], "graph output")
            specs.append(IOSpec(y.name, y.shape, "NHWC", is_float=False))
    return specs, ops


def _reject_float(sg: Subgraph, ops: list[Op]) -> None:
    """A float op inside the graph means the model was not converted with full-integer quantization."""
    for op in ops:
        for i in (*op.inputs, *op.outputs):
            if i >= 0 and sg.type_name(i) == "FLOAT32":
                raise ModelFormatError(f"the model is not fully quantized (tensor {sg.names[i]} is float32)",
                                       node=op.name, op=op.kind, hint=FLOAT_HINT)


def _check_dataflow(graph: Graph) -> None:
    """Every tensor computed once, before it is read; graph inputs never overwritten."""
    made = {io.tensor for io in graph.inputs}
    for n in graph.nodes:
        for t in n.outputs:
            if t in made or graph[t].is_const:
                raise ModelFormatError(f"tensor {t} is written twice (or is a constant)", node=n.name, op=n.op,
                                       hint="the file is inconsistent; re-export the model")
            made.add(t)
    try:
        graph.validate()
    except ValueError as e:
        raise ModelFormatError(f"{e}", hint="operators must come in execution order; re-export the model") from None
