"""Small float ONNX models built with onnx.helper, quantized by onnxruntime in QDQ and QOperator formats.

Tests use them to check the ONNX frontend against onnxruntime. Everything is seeded: the same name gives the
same float weights, the same calibration data and therefore the same quantized file. No torch needed.

    path = quantized_model("inverted_residual", "qdq", tmp_dir)   # cached: built once per folder
    ort = ort_int8_tensors(onnx.load(path), x_float)            # outputs and every int8 activation
    diffs = layerwise_diffs(graph, ort, {graph.inputs[0].tensor: quantize_input(graph, x_float)})
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tte.frontend.onnx_common import quantize_rne
from tte.ir import Graph

OPSET = 13
FORMATS = ("qdq", "qop")


class _Net:
    """Accumulates nodes and initializers of a float NCHW model; every method returns the output tensor name."""

    def __init__(self, name: str, shape: tuple[int, ...], seed: int, nhwc_input: bool = False) -> None:
        self.name, self.rng = name, np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.input_shape = shape
        self.channels = shape[3] if nhwc_input else shape[1]
        self._n = 0
        self.x = "input"
        if nhwc_input:  # what a float NHWC model exports as: a Transpose before everything else
            self.x = self._node("Transpose", ["input"], perm=[0, 3, 1, 2])

    def _uid(self, op: str) -> str:
        self._n += 1
        return f"{op.lower()}_{self._n}"

    def _const(self, value: np.ndarray, hint: str) -> str:
        name = f"{hint}_{len(self.inits)}"
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def _node(self, op: str, inputs: Sequence[str], **attrs) -> str:
        name = self._uid(op)
        self.nodes.append(helper.make_node(op, list(inputs), [name], name=name, **attrs))
        return name

    def conv(self, cout: int, k: int, stride: int = 1, group: int = 1, pad: int | None = None) -> _Net:
        cin = self.channels
        w = self.rng.normal(0, 1.0 / np.sqrt(cin // group * k * k), (cout, cin // group, k, k)).astype(np.float32)
        b = self.rng.normal(0, 0.1, cout).astype(np.float32)
        p = k // 2 if pad is None else pad
        self.x = self._node("Conv", [self.x, self._const(w, "w"), self._const(b, "b")], kernel_shape=[k, k],
                            strides=[stride, stride], pads=[p, p, p, p], group=group)
        self.channels = cout
        return self

    def depthwise(self, k: int, stride: int = 1) -> _Net:
        return self.conv(self.channels, k, stride, group=self.channels)

    def relu(self) -> _Net:
        self.x = self._node("Relu", [self.x])
        return self

    def relu6(self) -> _Net:
        lo, hi = self._const(np.float32(0), "lo"), self._const(np.float32(6), "hi")
        self.x = self._node("Clip", [self.x, lo, hi])
        return self

    def unary(self, op: str, **attrs) -> _Net:
        self.x = self._node(op, [self.x], **attrs)
        return self

    def add(self, other: str) -> _Net:
        self.x = self._node("Add", [self.x, other])
        return self

    def avg_pool(self, k: int, stride: int, pad: int = 0) -> _Net:
        self.x = self._node("AveragePool", [self.x], kernel_shape=[k, k], strides=[stride, stride],
                            pads=[pad] * 4)
        return self

    def global_pool(self) -> _Net:
        self.x = self._node("GlobalAveragePool", [self.x])
        return self

    def reduce_mean(self, keepdims: int) -> _Net:
        self.x = self._node("ReduceMean", [self.x], axes=[2, 3], keepdims=keepdims)
        return self

    def pad(self, pads: Sequence[int]) -> _Net:
        self.x = self._node("Pad", [self.x, self._const(np.array(pads, np.int64), "pads")], mode="constant")
        return self

    def squeeze(self, axes: Sequence[int]) -> _Net:
        self.x = self._node("Squeeze", [self.x, self._const(np.array(axes, np.int64), "axes")])
        return self

    def reshape(self, shape: Sequence[int]) -> _Net:
        self.x = self._node("Reshape", [self.x, self._const(np.array(shape, np.int64), "shape")])
        return self

    def flatten(self) -> _Net:
        self.x = self._node("Flatten", [self.x], axis=1)
        return self

    def gemm(self, n_out: int, features: int) -> _Net:
        w = self.rng.normal(0, 1.0 / np.sqrt(features), (n_out, features)).astype(np.float32)
        b = self.rng.normal(0, 0.1, n_out).astype(np.float32)
        self.x = self._node("Gemm", [self.x, self._const(w, "fc_w"), self._const(b, "fc_b")], transB=1)
        self.channels = n_out
        return self

    def matmul(self, n_out: int, features: int) -> _Net:
        w = self.rng.normal(0, 1.0 / np.sqrt(features), (features, n_out)).astype(np.float32)
        self.x = self._node("MatMul", [self.x, self._const(w, "mm_w")])
        self.channels = n_out
        return self

    def model(self, opset: int = OPSET) -> onnx.ModelProto:
        out = helper.make_tensor_value_info("output", TensorProto.FLOAT, None)
        self.nodes.append(helper.make_node("Identity", [self.x], ["output"], name="output"))
        inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, list(self.input_shape))
        graph = helper.make_graph(self.nodes, self.name, [inp], [out], initializer=self.inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="tte-tests")
        m.ir_version = 8
        return onnx.shape_inference.infer_shapes(m)


def _conv() -> onnx.ModelProto:
    return _Net("conv", (1, 3, 12, 12), 1).conv(8, 3).relu().conv(6, 3, stride=2).model()


def _depthwise(k: int, stride: int) -> Callable[[], onnx.ModelProto]:
    return lambda: _Net(f"dw{k}_s{stride}", (1, 6, 13, 13), 10 + k + stride).depthwise(k, stride).relu6().model()


def _inverted_residual() -> onnx.ModelProto:
    net = _Net("inverted_residual", (1, 3, 16, 16), 2).conv(8, 3, stride=2).relu6()
    block_in = net.x
    net.conv(24, 1).relu6().depthwise(3).relu6().conv(8, 1).add(block_in)
    return net.global_pool().flatten().gemm(10, 8).model()


def _classifier() -> onnx.ModelProto:
    """Conv, ReLU6, global average pool, Flatten, Gemm: the tail of every paper model."""
    return _Net("classifier", (1, 4, 10, 10), 3).conv(12, 3).relu6().global_pool().flatten().gemm(5, 12).model()


def _avg_pool() -> onnx.ModelProto:
    return _Net("avg_pool", (1, 3, 12, 12), 4).conv(6, 3).avg_pool(2, 2).avg_pool(3, 1, pad=1).model()


def _pad_flatten() -> onnx.ModelProto:
    """Pad (channels too, so that onnxruntime cannot fuse it into the conv), a valid conv, and a Flatten of a
    4-D tensor with H*W > 1 (which needs NCHW element order)."""
    net = _Net("pad_flatten", (1, 3, 9, 9), 5).pad([0, 1, 1, 2, 0, 2, 2, 1])
    net.channels = 6
    return net.conv(4, 3, stride=2, pad=0).relu().flatten().gemm(7, 4 * 5 * 5).model()


def _reshape() -> onnx.ModelProto:
    """Reshape (with 0 and -1) of a 4-D tensor with H*W > 1: NCHW element order."""
    return _Net("reshape", (1, 3, 8, 8), 10).conv(6, 3, stride=2).relu().reshape([0, -1]).gemm(6, 96).model()


def _squeeze() -> onnx.ModelProto:
    net = _Net("squeeze", (1, 3, 8, 8), 11).conv(6, 3).global_pool().squeeze([2, 3]).gemm(8, 6)
    net.x = net._node("Unsqueeze", [net.x, net._const(np.array([2, 3], np.int64), "axes")])
    return net.conv(4, 1).flatten().model()


def _matmul_reduce_mean() -> onnx.ModelProto:
    net = _Net("matmul_mean", (1, 3, 8, 8), 6).conv(10, 3).reduce_mean(keepdims=0)
    return net.matmul(6, 10).model()


def _nhwc_input() -> onnx.ModelProto:
    return _Net("nhwc_input", (1, 10, 10, 3), 7, nhwc_input=True).conv(5, 3, stride=2).relu().model()


def _softmax() -> onnx.ModelProto:
    return _Net("softmax", (1, 3, 8, 8), 9).conv(8, 3).relu().global_pool().flatten().gemm(10, 8).unary(
        "Softmax", axis=-1).model()


def _activations() -> onnx.ModelProto:
    """Element-wise activations that become 256-entry tables (HardSwish needs opset 14)."""
    net = _Net("activations", (1, 3, 8, 8), 8).conv(6, 3).unary("HardSwish").conv(6, 1).unary("Sigmoid")
    return net.conv(6, 1).unary("LeakyRelu", alpha=0.1).model(opset=14)


MODELS: dict[str, Callable[[], onnx.ModelProto]] = {
    "conv": _conv,
    **{f"dw{k}_s{s}": _depthwise(k, s) for k in (3, 5, 7) for s in (1, 2)},
    "inverted_residual": _inverted_residual,
    "classifier": _classifier,
    "avg_pool": _avg_pool,
    "pad_flatten": _pad_flatten,
    "matmul_mean": _matmul_reduce_mean,
    "reshape": _reshape,
    "squeeze": _squeeze,
    "nhwc_input": _nhwc_input,
    "activations": _activations,
    "softmax": _softmax,
}


def float_model(name: str, folder: Path) -> Path:
    """Write the float model `name` to `folder` (once) and return its path."""
    path = Path(folder) / f"{name}_float.onnx"
    if not path.exists():
        onnx.save(MODELS[name](), path)
    return path


class _Calibration:
    """A seeded onnxruntime CalibrationDataReader: uniform [-1, 1] inputs."""

    def __init__(self, shape: Sequence[int], n: int = 16, seed: int = 0, name: str = "input") -> None:
        rng = np.random.default_rng(seed)
        self._data = iter([{name: rng.uniform(-1, 1, shape).astype(np.float32)} for _ in range(n)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._data, None)


def quantized_model(name: str, fmt: str, folder: Path) -> Path:
    """The model `name` quantized by onnxruntime in format "qdq" or "qop", int8 per-channel (cached)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    folder = Path(folder)
    path = folder / f"{name}_{fmt}.onnx"
    if path.exists():
        return path
    pre = folder / f"{name}_pre.onnx"
    if not pre.exists():
        quant_pre_process(str(float_model(name, folder)), str(pre), skip_symbolic_shape=True)
    shape = [d.dim_value for d in onnx.load(pre).graph.input[0].type.tensor_type.shape.dim]
    quantize_static(str(pre), str(path), _Calibration(shape),
                    quant_format=QuantFormat.QDQ if fmt == "qdq" else QuantFormat.QOperator,
                    per_channel=True, weight_type=QuantType.QInt8, activation_type=QuantType.QInt8)
    return path


def int8_tensor_names(model: onnx.ModelProto | Path) -> list[str]:
    """Names of the int8 activations of a quantized model (outputs of QuantizeLinear and QLinear* nodes)."""
    m = model if isinstance(model, onnx.ModelProto) else onnx.load(model)
    quantizing = {"QuantizeLinear", "QGemm"}
    return [n.output[0] for n in m.graph.node if n.op_type in quantizing or n.op_type.startswith("QLinear")]


def ort_session(model: onnx.ModelProto | Path, extra_outputs: Sequence[str] = ()):
    """An onnxruntime CPU session; `extra_outputs` (int8 tensors) become additional graph outputs."""
    import onnxruntime as ort

    m = model if isinstance(model, onnx.ModelProto) else onnx.load(model)
    if extra_outputs:
        m = onnx.ModelProto.FromString(m.SerializeToString())
        known = {o.name for o in m.graph.output}
        for t in extra_outputs:
            if t not in known:
                m.graph.output.append(helper.make_tensor_value_info(t, TensorProto.INT8, None))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def random_input(shape: Sequence[int], seed: int) -> np.ndarray:
    """A float input in [-1, 1] (the range the models were calibrated on, plus a little beyond)."""
    return np.random.default_rng(seed).uniform(-1.1, 1.1, shape).astype(np.float32)


def ort_int8_tensors(model: onnx.ModelProto | Path, x: np.ndarray) -> dict[str, np.ndarray]:
    """Run onnxruntime on float input `x`; its graph outputs and every int8 activation, by name."""
    m = model if isinstance(model, onnx.ModelProto) else onnx.load(model)
    sess = ort_session(m, extra_outputs=int8_tensor_names(m))
    values = sess.run(None, {sess.get_inputs()[0].name: x})
    return {o.name: v for o, v in zip(sess.get_outputs(), values, strict=True)}


def to_ir_layout(value: np.ndarray) -> np.ndarray:
    """An ONNX activation (NCHW when 4-D) in the IR's layout (NHWC)."""
    return value.transpose(0, 2, 3, 1) if value.ndim == 4 else value


def quantize_input(graph: Graph, x: np.ndarray) -> np.ndarray:
    """The user's float input as the graph's int8 NHWC input, rounded as onnxruntime's QuantizeLinear rounds
    (half to even), so that both sides start from the same int8 values."""
    io = graph.inputs[0]
    if io.layout == "NCHW" and x.ndim == 4:
        x = x.transpose(0, 2, 3, 1)
    return quantize_rne(x, graph[io.tensor].quant).astype(np.int8)


def output_diffs(graph: Graph, model: onnx.ModelProto, ort_values: dict[str, np.ndarray],
                 ref_values: dict[str, np.ndarray]) -> list[np.ndarray]:
    """|reference - onnxruntime| per graph output, in the int8 domain (ORT's float outputs quantized with the
    output's scale / zero point, which recovers its int8 values exactly)."""
    diffs = []
    for io, vi in zip(graph.outputs, model.graph.output, strict=True):
        t = graph[io.tensor]
        o = ort_values[vi.name]
        o = quantize_rne(o, t.quant) if io.is_float else o.astype(np.int64)
        diffs.append(np.abs(ref_values[io.tensor].astype(np.int64) - to_ir_layout(o).reshape(t.shape)))
    return diffs


def layerwise_diffs(graph: Graph, ort_values: dict[str, np.ndarray], inputs: dict[str, np.ndarray]
                    ) -> dict[str, np.ndarray]:
    """Run every IR node of `graph` on onnxruntime's own int8 inputs (where ORT has the tensor, else on the
    reference's value) and return |IR output - ORT output| per node that ORT has an output for.

    This separates the per-layer agreement (each layer within 1 LSB) from the end-to-end drift of a deep
    network, where a 1-LSB difference early on can grow."""
    from tte import ops

    env: dict[str, np.ndarray] = {n: t.data for n, t in graph.tensors.items() if t.is_const}
    env.update(inputs)
    ort = {n: to_ir_layout(v).reshape(graph[n].shape) for n, v in ort_values.items()
           if n in graph.tensors and v.dtype == np.int8}
    diffs = {}
    for node in graph.nodes:
        args = [ort.get(t, env.get(t)) for t in node.inputs]
        for t, v in zip(node.outputs, ops.get(node.op).reference(node, graph, args), strict=True):
            env[t] = v
            if t in ort:
                diffs[node.name] = np.abs(v.astype(np.int64) - ort[t].astype(np.int64))
    return diffs
