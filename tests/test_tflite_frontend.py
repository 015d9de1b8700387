"""The TFLite frontend: write -> load round trips, a MobileNetV2-style model against tflite-micro, Keras shape
arithmetic, absent biases, and the errors a user sees for models tte cannot take."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tte import reference
from tte.errors import ModelFormatError, TteError, UnsupportedError
from tte.frontend.tflite import load
from tte.frontend.tflite_schema import fb
from tte.ir import Graph, IOSpec, Node, QParams, Tensor
from tte.ops import OPS
from tte.ops.cases import random_inputs
from tte.testing.models import mobilenetv2, op_zoo, small_cnn
from tte.testing.tflite_writer import pack_model, unpack_model, write_tflite
from tte.testing.tflm import first_mismatch, run_graph, run_tflite


def _expressible_cases() -> list:
    out = []
    for op in sorted(OPS):
        for case in OPS[op].cases():
            try:
                write_tflite(case)
            except UnsupportedError:
                continue
            out.append(pytest.param(case, id=f"{op}/{case.name}"))
    return out


def _same_quant(a: QParams | None, b: QParams | None) -> bool:
    if a is None or b is None:
        return a is b
    return (a.axis == b.axis and np.array_equal(a.scale, b.scale)
            and np.array_equal(np.broadcast_to(a.zero_point, a.scale.shape), b.zero_point))


def assert_same_graph(orig: Graph, loaded: Graph, by_name: bool) -> None:
    """Same ops with the same attributes, tensors with the same shapes, quantization and data."""
    assert [n.op for n in loaded.nodes] == [n.op for n in orig.nodes]
    for a, b in zip(orig.nodes, loaded.nodes, strict=True):
        if by_name:
            assert a.name == b.name
        assert dict(a.attrs) == dict(b.attrs), a.name
        for ta, tb in zip((*a.inputs, *a.outputs), (*b.inputs, *b.outputs), strict=True):
            x, y = orig[ta], loaded[tb]
            assert (x.shape, x.dtype) == (y.shape, y.dtype), ta
            assert _same_quant(x.quant, y.quant), ta
            assert (x.data is None) == (y.data is None) and (x.data is None or np.array_equal(x.data, y.data)), ta
    assert [(i.shape, i.is_float) for i in loaded.inputs] == [(i.shape, i.is_float) for i in orig.inputs]
    assert [(o.shape, o.is_float) for o in loaded.outputs] == [(o.shape, o.is_float) for o in orig.outputs]


def _rename_inputs(x: dict, orig: Graph, loaded: Graph) -> dict:
    return {b.tensor: x[a.tensor] for a, b in zip(orig.inputs, loaded.inputs, strict=True)}


@pytest.mark.parametrize("case", _expressible_cases())
def test_round_trip_of_op_cases(case: Graph) -> None:
    loaded = load(write_tflite(case), name=case.name)
    assert_same_graph(case, loaded, by_name=False)
    x = random_inputs(case, 5)
    want = reference.run(case, x)
    got = reference.run(loaded, _rename_inputs(x, case, loaded))
    for a, b in zip(case.outputs, loaded.outputs, strict=True):
        np.testing.assert_array_equal(got[b.tensor], want[a.tensor])


@pytest.fixture(scope="module")
def mbv2() -> Graph:
    return mobilenetv2()


def test_mobilenetv2_round_trip_keeps_names(mbv2: Graph) -> None:
    loaded = load(write_tflite(mbv2), name="mbv2_tiny")
    # Symmetric padding of the stride-2 layers goes through PAD ops in TFLite; the import folds them back.
    assert_same_graph(mbv2, loaded, by_name=True)
    assert loaded.name == "mbv2_tiny"


@pytest.mark.parametrize("pad_mode, float_io", [("symmetric", False), ("same", True)])
def test_mobilenetv2_reference_equals_tflite_micro(pad_mode: str, float_io: bool) -> None:
    g = mobilenetv2(pad_mode=pad_mode, float_io=float_io, seed=1)
    model = write_tflite(g)
    out = g.outputs[0].tensor
    for seed in range(6):
        x = random_inputs(g, 100 + seed)
        np.testing.assert_array_equal(reference.run(g, x)[out], run_graph(g, x, model=model)[out])
    # The model is realistic: its logits rarely saturate and they depend on the input.
    logits = np.stack([reference.run(g, random_inputs(g, s))[out] for s in range(4)]).astype(int)
    assert np.mean(np.abs(logits) >= 127) < 0.1
    assert np.mean(logits.std(axis=0) > 2) >= 0.5


def test_mobilenetv2_layer_by_layer(mbv2: Graph) -> None:
    """Every intermediate tensor TFLM preserved equals the reference's (the debugging path works)."""
    x = random_inputs(mbv2, 3)
    assert first_mismatch(mbv2, x) is None
    ref = reference.run(mbv2, x, keep=True)
    tflm = run_graph(mbv2, x, keep=True)
    layers = [n.outputs[0] for n in mbv2.nodes]
    assert set(layers) <= set(tflm)
    for t in layers:
        np.testing.assert_array_equal(ref[t], tflm[t], err_msg=t)
        # Calibrated scales: few values saturate (a ReLU layer's zero sits at -128, so only linear ones count).
        linear = mbv2[t].quant.zp != -128
        assert np.mean(ref[t] == 127) < 0.05 and (not linear or np.mean(ref[t] == -128) < 0.05), f"{t} saturates"


@pytest.mark.parametrize("float_io", [False, True])
def test_op_zoo_round_trip_and_tflite_micro(float_io: bool) -> None:
    """Every op the writer expresses, chained in one graph: round trip, then reference == TFLM per layer."""
    g = op_zoo(float_io=float_io)
    model = write_tflite(g)
    assert_same_graph(g, load(model), by_name=True)
    for seed in range(3):
        x = random_inputs(g, seed)
        ref, tflm = reference.run(g, x, keep=True), run_graph(g, x, keep=True, model=model)
        for n in g.nodes:
            np.testing.assert_array_equal(ref[n.outputs[0]], tflm[n.outputs[0]], err_msg=n.name)


def test_first_mismatch_names_the_drifting_layer(mbv2: Graph) -> None:
    """A model whose pointwise conv has another bias in TFLM is caught at that layer, not later."""
    model = unpack_model(write_tflite(mbv2))
    sg = model.subgraphs[0]
    bias = next(t for t in sg.tensors if t.name == b"blocks.1.pointwise1.bias")
    data = np.frombuffer(model.buffers[bias.buffer].data.tobytes(), "<i4") + 1000
    model.buffers[bias.buffer].data = np.frombuffer(data.astype("<i4").tobytes(), np.uint8)
    found = first_mismatch(mbv2, random_inputs(mbv2, 0), model=pack_model(model))
    assert found is not None and found.startswith("blocks.1.pointwise1 (conv2d)"), found


def test_float_boundary_is_the_iospec() -> None:
    g = small_cnn(float_io=True)
    model = write_tflite(g)
    kinds = [fb.BuiltinOperator.QUANTIZE, fb.BuiltinOperator.DEQUANTIZE]
    codes = [c.builtinCode for c in unpack_model(model).operatorCodes]
    assert all(k in codes for k in kinds)
    loaded = load(model)
    assert [n.op for n in loaded.nodes] == [n.op for n in g.nodes]
    assert loaded.inputs[0].is_float and loaded.outputs[0].is_float
    # TFLM quantizes a float input as tte.quant.quantize_float does: the int8 outputs agree.
    x = np.random.default_rng(0).uniform(-1, 1, g.inputs[0].shape).astype(np.float32)
    q = g[g.inputs[0].tensor].quant
    from tte.quant import dequantize, quantize_float
    xq = quantize_float(x, q.s, q.zp)
    y = run_tflite(model, [x]).outputs[0]
    qo = g[g.outputs[0].tensor].quant
    want = reference.run(g, xq)[g.outputs[0].tensor]
    np.testing.assert_array_equal(y, dequantize(want, qo.s, qo.zp))


# --- editing written models into converter idioms -------------------------------------------------------

def _opcode(m: fb.ModelT, code: int) -> int:
    for i, c in enumerate(m.operatorCodes):
        if c.builtinCode == code:
            return i
    oc = fb.OperatorCodeT()
    oc.builtinCode, oc.deprecatedBuiltinCode = code, min(code, 127)
    m.operatorCodes.append(oc)
    return len(m.operatorCodes) - 1


def _const(m: fb.ModelT, name: str, values: np.ndarray) -> int:
    sg = m.subgraphs[0]
    buf = fb.BufferT()
    buf.data = np.frombuffer(np.ascontiguousarray(values, np.int32).tobytes(), np.uint8)
    m.buffers.append(buf)
    t = fb.TensorT()
    t.name, t.type, t.buffer = name, fb.TensorType.INT32, len(m.buffers) - 1
    t.shape = np.asarray(np.shape(values), np.int32)
    sg.tensors.append(t)
    return len(sg.tensors) - 1


def _int_tensor(m: fb.ModelT, name: str, shape: tuple) -> int:
    sg = m.subgraphs[0]
    m.buffers.append(fb.BufferT())
    t = fb.TensorT()
    t.name, t.type, t.buffer, t.shape = name, fb.TensorType.INT32, len(m.buffers) - 1, np.asarray(shape, np.int32)
    sg.tensors.append(t)
    return len(sg.tensors) - 1


def _op(m: fb.ModelT, code: int, inputs: list, outputs: list, opts_type: int = 0, opts=None) -> fb.OperatorT:
    o = fb.OperatorT()
    o.opcodeIndex = _opcode(m, code)
    o.inputs, o.outputs = np.asarray(inputs, np.int32), np.asarray(outputs, np.int32)
    o.builtinOptionsType, o.builtinOptions = opts_type, opts
    return o


def keras_flatten(model: bytes) -> bytes:
    """Rewrite each RESHAPE's constant shape as Keras 3 does with an open batch dimension:
    SHAPE(x) -> STRIDED_SLICE [0:1] (shrink) -> PACK(batch, rest) -> RESHAPE."""
    m = unpack_model(model)
    sg = m.subgraphs[0]
    ops = []
    for op in sg.operators:
        if m.operatorCodes[op.opcodeIndex].builtinCode == fb.BuiltinOperator.RESHAPE:
            x, y = int(op.inputs[0]), int(op.outputs[0])
            rest = [int(d) for d in sg.tensors[y].shape[1:]]
            shape = _int_tensor(m, f"{y}_shape", (len(sg.tensors[x].shape),))
            batch = _int_tensor(m, f"{y}_batch", ())
            packed = _int_tensor(m, f"{y}_packed", (1 + len(rest),))
            ss = fb.StridedSliceOptionsT()
            ss.shrinkAxisMask = 1
            pack = fb.PackOptionsT()
            pack.valuesCount, pack.axis = 1 + len(rest), 0
            ops.append(_op(m, fb.BuiltinOperator.SHAPE, [x], [shape], fb.BuiltinOptions.ShapeOptions,
                           fb.ShapeOptionsT()))
            ops[-1].builtinOptions.outType = fb.TensorType.INT32
            ops.append(_op(m, fb.BuiltinOperator.STRIDED_SLICE,
                           [shape, _const(m, "b", [0]), _const(m, "e", [1]), _const(m, "s", [1])], [batch],
                           fb.BuiltinOptions.StridedSliceOptions, ss))
            ops.append(_op(m, fb.BuiltinOperator.PACK, [batch, *(_const(m, "d", np.int32(d)) for d in rest)],
                           [packed], fb.BuiltinOptions.PackOptions, pack))
            op.inputs = np.asarray([x, packed], np.int32)
            op.builtinOptions = None
            op.builtinOptionsType = 0
            sg.tensors[y].shapeSignature = np.asarray([-1, *rest], np.int32)
        ops.append(op)
    sg.operators = ops
    return pack_model(m)


def _with_flatten(g: Graph) -> Graph:
    """small_cnn with an explicit Flatten (reshape) before the classifier, as Keras models have."""
    pool = g["pool"]
    flat = Tensor("flatten", (1, pool.size), "int8", pool.quant)
    nodes = []
    for n in g.nodes:
        if n.name == "classifier":
            nodes.append(Node("reshape", "flatten", ("pool",), ("flatten",)))
            n = Node(n.op, n.name, ("flatten", *n.inputs[1:]), n.outputs, n.attrs)
        nodes.append(n)
    return g.with_nodes(nodes, {**g.tensors, "flatten": flat})


def test_keras_shape_arithmetic_is_folded() -> None:
    g = _with_flatten(small_cnn())
    model = keras_flatten(write_tflite(g))
    codes = {c.builtinCode for c in unpack_model(model).operatorCodes}
    assert {fb.BuiltinOperator.SHAPE, fb.BuiltinOperator.STRIDED_SLICE, fb.BuiltinOperator.PACK} <= codes
    loaded = load(model)
    assert [n.op for n in loaded.nodes] == [n.op for n in g.nodes]
    for seed in range(3):
        x = random_inputs(g, seed)
        want = run_graph(g, x, model=model)["classifier"]  # TFLM evaluates the shape ops itself
        np.testing.assert_array_equal(reference.run(loaded, x)["classifier"], want)


def test_squeeze_is_a_reshape() -> None:
    x, y = Tensor("x", (1, 1, 1, 8), "int8", QParams(0.1, 3)), Tensor("y", (1, 8), "int8", QParams(0.1, 3))
    g = Graph("sq", {"x": x, "y": y}, (Node("reshape", "y", ("x",), ("y",)),),
              (IOSpec("x", x.shape, is_float=False),), (IOSpec("y", y.shape, is_float=False),))
    m = unpack_model(write_tflite(g))
    op = m.subgraphs[0].operators[0]
    m.operatorCodes[op.opcodeIndex].builtinCode = fb.BuiltinOperator.SQUEEZE
    op.inputs = op.inputs[:1]
    op.builtinOptionsType, op.builtinOptions = fb.BuiltinOptions.SqueezeOptions, fb.SqueezeOptionsT()
    op.builtinOptions.squeezeDims = np.asarray([1, 2], np.int32)
    model = pack_model(m)
    loaded = load(model)
    assert [n.op for n in loaded.nodes] == ["reshape"]
    x8 = random_inputs(g, 0)["x"]
    np.testing.assert_array_equal(reference.run(loaded, x8)["y"], run_tflite(model, [x8]).outputs[0])


def _drop_bias(model: bytes, op_code: int) -> bytes:
    m = unpack_model(model)
    for op in m.subgraphs[0].operators:
        if m.operatorCodes[op.opcodeIndex].builtinCode == op_code:
            op.inputs = np.asarray([*op.inputs[:2], -1], np.int32)
    return pack_model(m)


@pytest.mark.parametrize("op, code", [("fully_connected", fb.BuiltinOperator.FULLY_CONNECTED),
                                      ("conv2d", fb.BuiltinOperator.CONV_2D)])
def test_missing_bias_becomes_zero_bias(op: str, code: int) -> None:
    case = OPS[op].cases()[0]
    model = _drop_bias(write_tflite(case), code)
    loaded = load(model)
    node = loaded.nodes[0]
    bias = loaded[node.inputs[2]]
    assert bias.dtype == "int32" and bias.is_const and not bias.data.any()
    assert bias.shape == (loaded[node.inputs[1]].shape[0],)
    x = random_inputs(case, 0)
    out = case.outputs[0].tensor
    want = run_tflite(model, [x[case.inputs[0].tensor]]).outputs[0]
    np.testing.assert_array_equal(reference.run(loaded, _rename_inputs(x, case, loaded))[loaded.outputs[0].tensor],
                                  want)
    # ... and the bias really mattered: the original case differs.
    assert not np.array_equal(reference.run(case, x)[out], want)


# --- errors ----------------------------------------------------------------------------------------------

def test_float_model_is_refused_with_the_way_out() -> None:
    import tflite_micro

    path = Path(tflite_micro.__file__).parent / "python" / "tflite_micro" / "sine_float.tflite"
    if not path.exists():
        pytest.skip("tflite-micro ships no float sample model")
    with pytest.raises(ModelFormatError, match="not fully quantized.*full-integer quantization"):
        load(path)


def test_float_weights_are_refused() -> None:
    case = OPS["conv2d"].cases()[0]
    m = unpack_model(write_tflite(case))
    w = m.subgraphs[0].tensors[int(m.subgraphs[0].operators[0].inputs[1])]
    w.type = fb.TensorType.FLOAT32
    m.buffers[w.buffer].data = np.zeros(int(np.prod(w.shape)) * 4, np.uint8)
    with pytest.raises(ModelFormatError, match="float32.*full-integer"):
        load(pack_model(m))


def test_unsupported_op_names_node_and_supported_ops() -> None:
    case = OPS["add"].cases()[0]
    m = unpack_model(write_tflite(case))
    m.operatorCodes[m.subgraphs[0].operators[0].opcodeIndex].builtinCode = fb.BuiltinOperator.SQUARED_DIFFERENCE
    with pytest.raises(UnsupportedError) as e:
        load(pack_model(m))
    msg = str(e.value)
    assert "SQUARED_DIFFERENCE" in msg and f"'{case.outputs[0].tensor}'" in msg and "CONV_2D" in msg and "\n" not in msg


def test_not_a_model_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelFormatError, match="not a TFLite model"):
        load(b"\x00" * 64)
    with pytest.raises(TteError, match="cannot read"):
        load(tmp_path / "absent.tflite")


def test_int16_activations_are_unsupported() -> None:
    case = OPS["requantize"].cases()[0]
    m = unpack_model(write_tflite(case))
    for t in m.subgraphs[0].tensors:
        t.type = fb.TensorType.INT16
    with pytest.raises(UnsupportedError, match="INT16"):
        load(pack_model(m))


def test_graph_name_is_a_c_identifier(tmp_path: Path) -> None:
    model = write_tflite(OPS["reshape"].cases()[0])
    for file, name in (("my-model.v2.tflite", "my_model_v2"), ("3net.tflite", "m_3net")):
        (tmp_path / file).write_bytes(model)
        assert load(tmp_path / file).name == name
    assert load(model, name="kws").name == "kws"


def test_writer_refuses_what_tflite_cannot_say() -> None:
    lut = OPS["lut"].cases()[0]
    with pytest.raises(UnsupportedError, match="source_op"):
        write_tflite(lut)
    conv = OPS["conv2d"].cases()[0]
    node = conv.nodes[0].with_attrs(act=(-3, 5))
    with pytest.raises(UnsupportedError, match="fused activation"):
        write_tflite(conv.with_nodes([node]))
    pool = OPS["avg_pool2d"].cases()[0]
    x = pool[pool.inputs[0].tensor]
    y = Tensor("y2", (1, 4, 4, x.shape[3]), "int8", x.quant)
    node = Node("avg_pool2d", "pool_pad", (x.name,), ("y2",),
                {"kernel": (2, 2), "stride": (2, 2), "pad": (1, 1, 1, 1), "act": (-128, 127)})
    g = Graph("p", {x.name: x, "y2": y}, (node,), pool.inputs, (IOSpec("y2", y.shape, is_float=False),))
    with pytest.raises(UnsupportedError, match="neither SAME nor VALID"):
        write_tflite(g)
