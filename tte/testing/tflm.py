"""Run .tflite bytes or IR graphs in tflite-micro, the bit-exact oracle of the int8 forward pass.

`run_tflite` is the raw interface (TFLite input order, TFLite dtypes). `run_graph` writes an IR graph with
`tte.testing.tflite_writer` and takes and returns int8 arrays by IR tensor name, like `tte.reference.run`, so the
two can be compared directly; with `keep=True` it returns every intermediate tensor too, for layer-by-layer
debugging (TFLM's kPreserveAllTensors mode).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from tte.frontend.tflite_schema import fb
from tte.ir import Graph
from tte.quant import dequantize, quantize_float


@dataclass
class TflmResult:
    outputs: list[np.ndarray]
    # Every tensor by its TFLite name (constants included); empty unless run with preserve_all.
    tensors: dict[str, np.ndarray] = field(default_factory=dict)


def arena_size(model: bytes) -> int:
    """A generous arena: every tensor's bytes twice plus a fixed allowance for TFLM's own structures."""
    m = fb.ModelT.InitFromObj(fb.Model.GetRootAs(model, 0))
    total = sum(int(np.prod(t.shape if t.shape is not None else (), dtype=np.int64)) * 4
                for sg in m.subgraphs for t in sg.tensors)
    return 2 * total + 256 * 1024


def run_tflite(model: bytes, inputs: Sequence[np.ndarray], preserve_all: bool = False) -> TflmResult:
    """Invoke tflite-micro once on `inputs` (in the model's input order). Raises RuntimeError when TFLM fails."""
    from tflite_micro.python.tflite_micro import runtime  # heavy import: only when a test needs the oracle

    config = (runtime.InterpreterConfig.kPreserveAllTensors if preserve_all
              else runtime.InterpreterConfig.kAllocationRecording)
    interp = runtime.Interpreter.from_bytes(model, arena_size=arena_size(model), intrepreter_config=config)
    for i, x in enumerate(inputs):
        interp.set_input(np.ascontiguousarray(x), i)
    interp.invoke()
    m = fb.Model.GetRootAs(model, 0)
    sg = m.Subgraphs(0)
    outputs = [np.array(interp.get_output(i)) for i in range(sg.OutputsLength())]
    tensors: dict[str, np.ndarray] = {}
    if preserve_all:
        for i in range(sg.TensorsLength()):
            name = sg.Tensors(i).Name().decode("utf-8", "replace")
            tensors[name] = np.array(interp.GetTensor(i, 0)["tensor_data"])
    return TflmResult(outputs, tensors)


def run_graph(graph: Graph, inputs: Mapping[str, np.ndarray] | np.ndarray, keep: bool = False,
              model: bytes | None = None) -> dict[str, np.ndarray]:
    """Run an IR graph in tflite-micro on int8 inputs by tensor name; returns int8 outputs by tensor name.

    Float boundaries (IOSpec.is_float) are crossed exactly: int8 inputs are dequantized before TFLM's QUANTIZE
    (which gives the same int8 back), float outputs are quantized again. With `keep`, every tensor TFLM computed
    under an IR tensor name is returned as well. `model` skips writing when the bytes are already at hand.
    """
    from tte.testing.tflite_writer import write_tflite

    if not isinstance(inputs, Mapping):
        inputs = {graph.inputs[0].tensor: inputs}
    model = write_tflite(graph) if model is None else model
    feed = []
    for io in graph.inputs:
        x, q = np.asarray(inputs[io.tensor]), graph[io.tensor].quant
        feed.append(dequantize(x, q.s, q.zp) if io.is_float else x.astype(np.int8))
    res = run_tflite(model, feed, preserve_all=keep)
    out: dict[str, np.ndarray] = {}
    if keep:
        out.update({k: v for k, v in res.tensors.items() if k in graph.tensors and not graph[k].is_const})
    for io, y in zip(graph.outputs, res.outputs, strict=True):
        q = graph[io.tensor].quant
        out[io.tensor] = quantize_float(y, q.s, q.zp) if io.is_float else y
    return out


def first_mismatch(graph: Graph, inputs: Mapping[str, np.ndarray] | np.ndarray, model: bytes | None = None
                   ) -> str | None:
    """The first node (in graph order) whose output differs between tte.reference and tflite-micro, with a
    short description; None when every layer agrees. The tool for finding which kernel drifted."""
    from tte import reference

    ref, tflm = reference.run(graph, inputs, keep=True), run_graph(graph, inputs, keep=True, model=model)
    for node in graph.nodes:
        for t in node.outputs:
            if t in tflm and not np.array_equal(ref[t], tflm[t]):
                diff = np.flatnonzero(ref[t] != tflm[t])
                i = diff[0]
                return (f"{node.name} ({node.op}): {diff.size}/{ref[t].size} values differ, first at flat index {i}: "
                        f"reference {ref[t].flat[i]}, tflite-micro {tflm[t].flat[i]}")
    return None
