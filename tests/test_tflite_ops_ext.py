"""TFLite import of MAX_POOL_2D, MUL, SUB, ADD (broadcasting), CONCATENATION, SPLIT, SPLIT_V, SLICE,
STRIDED_SLICE, EXPAND_DIMS and standalone RELU / RELU6 / LEAKY_RELU: files written from IR cases (and by hand for
the split ops) load back into graphs whose reference output equals tflite-micro's, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from tte import reference
from tte.frontend.tflite import load
from tte.frontend.tflite_schema import fb
from tte.ir import Graph, IOSpec
from tte.ops import OPS
from tte.ops.cases import activation, random_inputs
from tte.ops.relu_tables import relu_lut_node
from tte.testing.tflite_writer import _Writer, write_tflite
from tte.testing.tflm import run_tflite

NEW_OPS = ("max_pool2d", "mul", "sub", "add_broadcast", "concat", "slice")


def _check(model: bytes, seeds=(0, 1, 2)) -> Graph:
    g = load(model)
    for seed in seeds:
        x = random_inputs(g, seed)
        want = run_tflite(model, [x[io.tensor] for io in g.inputs]).outputs
        got = reference.run(g, x)
        for io, w in zip(g.outputs, want, strict=True):
            np.testing.assert_array_equal(got[io.tensor], w.reshape(got[io.tensor].shape))
    return g


@pytest.mark.parametrize("case", [c for op in NEW_OPS for c in OPS[op].cases()], ids=lambda c: c.name)
def test_written_cases_load_and_match(case: Graph) -> None:
    g = _check(write_tflite(case))
    assert [n.op for n in g.nodes] == [n.op for n in case.nodes]


@pytest.mark.parametrize("kind", ["relu", "relu6", "leaky_relu"])
def test_standalone_activations(kind: str) -> None:
    x = activation("x", (1, 4, 4, 8), 0.05, 7)
    y = activation("y", (1, 4, 4, 8), 0.05 if kind == "relu6" else 0.03, 7 if kind == "relu6" else -20)
    g = Graph(kind, {"x": x, "y": y}, (relu_lut_node(kind, kind, x, y, alpha=0.15),),
              (IOSpec("x", x.shape, is_float=False),), (IOSpec("y", y.shape, is_float=False),))
    loaded = _check(write_tflite(g))
    assert loaded.nodes[0].op == "lut" and loaded.nodes[0].attrs["source_op"] == kind


def _split_model(kind: str) -> bytes:
    """x [1, 4, 4, 6] -> SPLIT / SPLIT_V on channels; one part -> STRIDED_SLICE (shrink) -> EXPAND_DIMS."""
    g = Graph("s", {"x": activation("x", (1, 4, 4, 6), 0.1, -3)}, (), (IOSpec("x", (1, 4, 4, 6), is_float=False),),
              ())
    w = _Writer(g)
    x = w.tensor("x")
    w.inputs.append(x)
    q = g["x"].quant
    sizes = [2, 4] if kind == "SPLIT_V" else [3, 3]
    outs = [w.new_tensor(f"part{i}", (1, 4, 4, n), "int8", q) for i, n in enumerate(sizes)]
    if kind == "SPLIT":
        w.op(fb.BuiltinOperator.SPLIT, [w.const_int32("axis", 3), x], outs, fb.BuiltinOptions.SplitOptions,
             fb.SplitOptionsT())
    else:
        w.op(fb.BuiltinOperator.SPLIT_V, [x, w.const_int32("sizes", sizes), w.const_int32("axis", 3)], outs,
             fb.BuiltinOptions.SplitVOptions, fb.SplitVOptionsT())
    shrunk = w.new_tensor("row", (1, 4, sizes[1]), "int8", q)
    opts = fb.StridedSliceOptionsT()
    opts.shrinkAxisMask = 0b10
    w.op(fb.BuiltinOperator.STRIDED_SLICE, [outs[1], w.const_int32("b", [0, 2, 0, 0]), w.const_int32("e", [1, 3, 4, 9]),
                                            w.const_int32("st", [1, 1, 1, 1])], [shrunk],
         fb.BuiltinOptions.StridedSliceOptions, opts)
    e = w.new_tensor("expanded", (1, 1, 4, sizes[1]), "int8", q)
    w.op(fb.BuiltinOperator.EXPAND_DIMS, [shrunk, w.const_int32("dim", 1)], [e])
    w.outputs += [outs[0], e]
    return w.finish()


@pytest.mark.parametrize("kind", ["SPLIT", "SPLIT_V"])
def test_split_expand_dims_strided_slice(kind: str) -> None:
    g = _check(_split_model(kind))
    assert [n.op for n in g.nodes] == ["slice", "slice", "slice", "reshape", "reshape"]
