"""ONNX frontend: small models quantized by onnxruntime (QDQ and QOperator) against onnxruntime, and errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import tte.frontend
from tte.errors import ModelFormatError, TteError, UnsupportedError
from tte.frontend.onnx_layers import clamp_bias
from tte.quant import INT32_MAX, INT32_MIN
from tte.reference import run
from tte.testing import onnx_models as om

CASES = [(name, fmt) for name in om.MODELS for fmt in om.FORMATS]
# End-to-end bound (int8 LSB) per model. Every layer agrees within 1 LSB (asserted layer by layer); a later
# layer can amplify an earlier 1-LSB difference by its gain: the 10-way Gemm after pooling in
# `inverted_residual`, the steep parts of HardSwish / Sigmoid tables in `activations`, and the 3x3 pool after
# the 2x2 one in `avg_pool` (QOperator). Measured maximum on these inputs: 2 for each of the three.
E2E_BOUND = {"inverted_residual": 2, "activations": 2, "avg_pool": 2}


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx_models")


def _input_shape(model: onnx.ModelProto) -> tuple[int, ...]:
    return tuple(d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim)


@pytest.mark.parametrize(("name", "fmt"), CASES)
def test_matches_onnxruntime(model_dir: Path, name: str, fmt: str) -> None:
    path = om.quantized_model(name, fmt, model_dir)
    graph, model = tte.frontend.load(path), onnx.load(path)
    for seed in range(5):
        x = om.random_input(_input_shape(model), seed)
        ort = om.ort_int8_tensors(model, x)
        x_q = om.quantize_input(graph, x)
        ref = run(graph, x_q)
        layers = om.layerwise_diffs(graph, ort, {graph.inputs[0].tensor: x_q})
        assert layers, "no layer could be compared with onnxruntime"
        for node, d in layers.items():
            assert d.max() <= 1, f"{name}/{fmt} seed {seed}: layer {node} differs by {d.max()} LSB"
        for d in om.output_diffs(graph, model, ort, ref):
            assert d.max() <= E2E_BOUND.get(name, 1), f"{name}/{fmt} seed {seed}: output differs by {d.max()}"


@pytest.mark.parametrize("fmt", om.FORMATS)
def test_structure(model_dir: Path, fmt: str) -> None:
    """What the import makes of layouts, boundaries, depthwise, tables and flattening."""
    g = tte.frontend.load(om.quantized_model("inverted_residual", fmt, model_dir))
    assert [n.op for n in g.nodes] == ["conv2d", "conv2d", "depthwise_conv2d", "conv2d", "add", "mean",
                                       "reshape", "fully_connected"]
    (inp,), (out,) = g.inputs, g.outputs
    assert (inp.layout, inp.shape, inp.is_float, g[inp.tensor].shape) == ("NCHW", (1, 3, 16, 16), True,
                                                                          (1, 16, 16, 3))
    assert out.is_float and g[out.tensor].shape == (1, 10)
    dw = next(n for n in g.nodes if n.op == "depthwise_conv2d")
    assert g[dw.inputs[1]].shape == (1, 3, 3, 24) and dw.attrs["multiplier"] == 1
    assert g[dw.inputs[1]].quant.axis == 3 and g[dw.inputs[2]].dtype == "int32"

    nhwc = tte.frontend.load(om.quantized_model("nhwc_input", fmt, model_dir)).inputs[0]
    assert (nhwc.layout, nhwc.shape) == ("NHWC", (1, 10, 10, 3))

    flat = tte.frontend.load(om.quantized_model("pad_flatten", fmt, model_dir))
    t = next(n for n in flat.nodes if n.op == "transpose")
    assert t.attrs["perm"] == (0, 3, 1, 2), "Flatten of an NHWC tensor needs NCHW element order"
    assert next(n for n in flat.nodes if n.op == "pad").attrs["pads"] == ((0, 0), (1, 2), (2, 1), (1, 2))

    act = tte.frontend.load(om.quantized_model("activations", fmt, model_dir))
    assert [n.attrs["source_op"] for n in act.nodes if n.op == "lut"] == ["HardSwish", "Sigmoid", "LeakyRelu"]


def test_name_from_file_stem(model_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "mbv2-w0.35-int8.onnx"
    shutil.copy(om.quantized_model("conv", "qdq", model_dir), target)
    assert tte.frontend.load(target).name == "mbv2_w0_35_int8"
    assert tte.frontend.load(target, name="net").name == "net"


def test_tflite_is_recognised_by_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tte.frontend import tflite

    calls = []
    monkeypatch.setattr(tflite, "load", lambda path, name=None: calls.append((Path(path).name, name)))
    path = tmp_path / "model.onnx"  # the name says ONNX, the content says TFLite
    path.write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(64))
    tte.frontend.load(path)
    assert calls == [("model.onnx", "model")]


def test_bias_clamp_keeps_the_accumulator_in_int32() -> None:
    w = np.array([[127, -127, 3], [1, 0, 0]], np.int8)
    b = np.array([INT32_MIN, INT32_MAX], np.int64)
    lo, hi = clamp_bias(b, w)
    assert lo == INT32_MIN + 255 * 257 and hi == INT32_MAX - 255
    assert clamp_bias(np.array([-5, 7]), w).tolist() == [-5, 7]


# ---- errors


def test_float_model_asks_for_quantization(model_dir: Path) -> None:
    with pytest.raises(ModelFormatError, match="float model") as e:
        tte.frontend.load(om.float_model("conv", model_dir))
    assert "tte quantize" in str(e.value) and "quantize_static" in str(e.value)


def _qdq_unary(op: str, path: Path, opset: int = 13, **attrs) -> Path:
    """float input -> Q -> DQ -> op -> Q -> DQ -> output, written by hand."""
    s, z = numpy_helper.from_array(np.float32(0.02), "s"), numpy_helper.from_array(np.int8(3), "z")
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="quant_in"),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xf"], name="dq_in"),
             helper.make_node(op, ["xf"], ["yf"], name="the_op", **attrs),
             helper.make_node("QuantizeLinear", ["yf", "s", "z"], ["yq"], name="quant_out"),
             helper.make_node("DequantizeLinear", ["yq", "s", "z"], ["y"], name="dq_out")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 8, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [s, z])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), path)
    return path


def test_unsupported_op_names_node_op_and_supported_list(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedError) as e:
        tte.frontend.load(_qdq_unary("Erf", tmp_path / "erf.onnx"))
    msg = str(e.value)
    assert "the_op" in msg and "Erf" in msg and "supported ONNX ops" in msg and "QLinearConv" in msg


@pytest.mark.parametrize("op", ["Tanh", "Sigmoid", "HardSwish", "Relu"])
def test_unary_tables_match_onnxruntime(tmp_path: Path, op: str) -> None:
    """All 256 input codes through a hand-made DQ -> op -> Q: the table against onnxruntime."""
    g = tte.frontend.load(_qdq_unary(op, tmp_path / f"{op}.onnx", opset=14))
    (node,) = g.nodes
    assert node.op == "lut" and node.attrs["source_op"] == op
    codes = np.arange(-128, 128).reshape(1, 2, 8, 16)
    x = ((codes - 3) * np.float32(0.02)).astype(np.float32)  # dequantized codes: quantize back exactly
    ort = om.ort_session(tmp_path / f"{op}.onnx").run(None, {"x": x})[0]
    expect = np.round(ort / np.float32(0.02)) + 3
    y = run(g, om.quantize_input(g, x))[g.outputs[0].tensor]
    assert np.abs(y.transpose(0, 3, 1, 2) - expect).max() <= 1
    assert np.mean(y.transpose(0, 3, 1, 2) == expect) >= 0.99


def _quantized_conv(tmp_path: Path, activation_type: str = "QInt8", **conv_attrs) -> Path:
    """A one-conv float model (4 -> 4 channels) with the given Conv attributes, quantized by onnxruntime."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    rng = np.random.default_rng(0)
    group = conv_attrs.get("group", 1)
    w = numpy_helper.from_array(rng.normal(0, 0.3, (4, 4 // group, 3, 3)).astype(np.float32), "w")
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="odd_conv", kernel_shape=[3, 3], **conv_attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    src, dst = tmp_path / "float.onnx", tmp_path / "q.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), src)
    quantize_static(str(src), str(dst), om._Calibration([1, 4, 8, 8], n=4, name="x"), quant_format=QuantFormat.QDQ,
                    per_channel=True, weight_type=QuantType.QInt8, activation_type=getattr(QuantType, activation_type))
    return dst


def test_group_conv_is_unsupported(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedError, match="odd_conv.*group=2") as e:
        tte.frontend.load(_quantized_conv(tmp_path, group=2))
    assert "depthwise" in str(e.value)


def test_unsupported_attribute(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedError, match="odd_conv.*dilated"):
        tte.frontend.load(_quantized_conv(tmp_path, dilations=[2, 2]))


def test_uint8_activations_say_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedError, match="uint8") as e:
        tte.frontend.load(_quantized_conv(tmp_path, activation_type="QUInt8"))
    assert "activation_type=QuantType.QInt8" in str(e.value)


def test_truncated_and_missing_files(model_dir: Path, tmp_path: Path) -> None:
    data = om.quantized_model("classifier", "qop", model_dir).read_bytes()
    for n in (0, 7, len(data) // 3, len(data) - 5):
        path = tmp_path / f"cut{n}.onnx"
        path.write_bytes(data[:n])
        with pytest.raises(ModelFormatError):
            tte.frontend.load(path)
    with pytest.raises(ModelFormatError, match="cannot read"):
        tte.frontend.load(tmp_path / "nowhere.onnx")


def test_errors_are_tte_errors() -> None:
    assert issubclass(ModelFormatError, TteError) and issubclass(UnsupportedError, TteError)


def test_clip_between_conv_and_quantize_becomes_the_clamp(model_dir: Path, tmp_path: Path) -> None:
    """A Clip onnxruntime did not fold away (here inserted by hand) narrows the conv's integer clamp."""
    m = onnx.load(om.quantized_model("conv", "qdq", model_dir))
    i, conv = next((i, n) for i, n in enumerate(m.graph.node) if n.op_type == "Conv")
    out = conv.output[0]
    conv.output[0] = "conv_raw"
    m.graph.initializer.extend([numpy_helper.from_array(np.float32(v), n) for v, n in ((0.1, "lo"), (0.6, "hi"))])
    m.graph.node.insert(i + 1, helper.make_node("Clip", ["conv_raw", "lo", "hi"], [out], name="clip"))
    path = tmp_path / "clip.onnx"
    onnx.save(m, path)
    g = tte.frontend.load(path)
    lo, hi = g.nodes[0].attrs["act"]
    assert -128 < lo < hi < 127
    for seed in range(5):
        x = om.random_input(_input_shape(m), seed)
        ort = om.ort_int8_tensors(m, x)
        x_q = om.quantize_input(g, x)
        layers = om.layerwise_diffs(g, ort, {g.inputs[0].tensor: x_q})
        assert max(d.max() for d in layers.values()) <= 1


def test_matmul_add_relu_folds_into_fully_connected(tmp_path: Path) -> None:
    """Hand-made DQ -> MatMul -> Add(bias) -> Relu -> Q (what an unfused export looks like)."""
    rng = np.random.default_rng(3)
    w = rng.integers(-127, 128, (8, 5)).astype(np.int8)
    inits = [numpy_helper.from_array(v, n) for v, n in (
        (np.float32(0.05), "xs"), (np.int8(-4), "xz"), (w, "wq"),
        (rng.uniform(0.005, 0.02, 5).astype(np.float32), "ws"), (np.zeros(5, np.int8), "wz"),
        (rng.normal(0, 0.5, 5).astype(np.float32), "bias"), (np.float32(0.1), "ys"), (np.int8(-128), "yz"))]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xf"]),
             helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wf"], axis=1),
             helper.make_node("MatMul", ["xf", "wf"], ["mm"], name="fc"),
             helper.make_node("Add", ["mm", "bias"], ["biased"]),
             helper.make_node("Relu", ["biased"], ["r"]),
             helper.make_node("QuantizeLinear", ["r", "ys", "yz"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.INT8, [1, 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(model, tmp_path / "mm.onnx")
    g = tte.frontend.load(tmp_path / "mm.onnx")
    assert [n.op for n in g.nodes] == ["fully_connected"] and not g.outputs[0].is_float
    assert g[g.nodes[0].inputs[1]].shape == (5, 8) and g[g.nodes[0].inputs[1]].quant.axis == 0
    for seed in range(5):
        x = om.random_input((1, 8), seed) * 3
        ort = om.ort_int8_tensors(model, x)
        (d,) = om.output_diffs(g, model, ort, run(g, om.quantize_input(g, x)))
        assert d.max() <= 1
