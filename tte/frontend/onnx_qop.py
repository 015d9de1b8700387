"""QOperator mapping: onnxruntime's QLinear* ops (default domain and com.microsoft) on int8 tensors.

Each op carries its input and output scale / zero point as inputs, so the mapping is direct: the int8 input
tensors are already IR activations, the weights integer constants, the bias int32 with the implied scale
s_x * s_w. Ops onnxruntime leaves in float inside a QOperator graph (ReduceMean, HardSigmoid, ...) appear
between DequantizeLinear and QuantizeLinear and are handled by the QDQ folding.
"""

from __future__ import annotations

import numpy as np
import onnx

from tte.frontend.onnx_common import Ctx, Handler, Out, attr, malformed, node_name, opt_input, unsupported
from tte.frontend.onnx_layers import (
    emit_add,
    emit_avg_pool,
    emit_binary_lut,
    emit_conv,
    emit_fc,
    emit_lut,
    emit_mean,
    emit_softmax,
)
from tte.frontend.onnx_qdq import float_function, transposed


def int8_input(ctx: Ctx, node: onnx.NodeProto, i: int) -> str:
    """Input i, read with the scale / zero point given at inputs i + 1, i + 2."""
    if len(node.input) < i + 2:
        raise malformed(node, f"has {len(node.input)} inputs, too few for a {node.op_type}")
    x = ctx.act(node, node.input[i])
    return ctx.with_quant(x, ctx.qparams(node, node.input[i + 1], opt_input(node, i + 2), "input"), node_name(node))


def int8_output(ctx: Ctx, node: onnx.NodeProto, i_scale: int) -> Out:
    """The output, quantized with the scale / zero point at inputs i_scale, i_scale + 1."""
    if len(node.input) <= i_scale or not node.input[i_scale]:
        raise unsupported(node, "float output (no output scale)", "quantize the output too")
    q = ctx.qparams(node, node.input[i_scale], opt_input(node, i_scale + 1), "output")
    ctx.acts[node.output[0]] = node.output[0]
    return Out(node.output[0], q)


def _channels_first(node: onnx.NodeProto) -> None:
    if attr(node, "channels_last", 0):
        raise unsupported(node, "channels_last=1", "quantize the NCHW model")


def qlinear_conv(ctx: Ctx, node: onnx.NodeProto) -> None:
    x = int8_input(ctx, node, 0)
    w = ctx.weight(node, node.input[3], node.input[4], opt_input(node, 5), axis=0)
    emit_conv(ctx, node, x, w, opt_input(node, 8), int8_output(ctx, node, 6))


def qlinear_matmul(ctx: Ctx, node: onnx.NodeProto) -> None:
    """QLinearMatMul x[1, K] @ W[K, N]; W may have per-column scales (one per output)."""
    x = int8_input(ctx, node, 0)
    w = ctx.weight(node, node.input[3], node.input[4], opt_input(node, 5), axis=1)
    if w.q.ndim != 2:
        raise unsupported(node, f"weights of shape {list(w.q.shape)}: tte needs a constant [K, N] matrix")
    emit_fc(ctx, node, x, transposed(w), None, int8_output(ctx, node, 6))


def qgemm(ctx: Ctx, node: onnx.NodeProto) -> None:
    """com.microsoft QGemm: y = A @ B' + C, C int32 with scale s_a * s_b."""
    if attr(node, "transA", 0) or attr(node, "alpha", 1.0) != 1.0:
        raise unsupported(node, "transA / alpha other than 0 / 1", "export a plain x @ W.T + b")
    x = int8_input(ctx, node, 0)
    trans_b = bool(attr(node, "transB", 0))
    w = ctx.weight(node, node.input[3], node.input[4], opt_input(node, 5), axis=0 if trans_b else 1)
    if w.q.ndim != 2:
        raise malformed(node, f"weights of shape {list(w.q.shape)} are not a matrix")
    emit_fc(ctx, node, x, w if trans_b else transposed(w), opt_input(node, 6), int8_output(ctx, node, 7))


def qlinear_add(ctx: Ctx, node: onnx.NodeProto) -> None:
    a, b = int8_input(ctx, node, 0), int8_input(ctx, node, 3)
    out = int8_output(ctx, node, 6)
    if not emit_binary_lut(ctx, node, a, b, np.add, out):
        emit_add(ctx, node, a, b, out)


def qlinear_mul(ctx: Ctx, node: onnx.NodeProto) -> None:
    a, b = int8_input(ctx, node, 0), int8_input(ctx, node, 3)
    if not emit_binary_lut(ctx, node, a, b, np.multiply, int8_output(ctx, node, 6)):
        raise unsupported(node, "product of two independent tensors",
                          "tte supports it only when both operands are functions of one tensor (HardSwish)")


def qlinear_avg_pool(ctx: Ctx, node: onnx.NodeProto) -> None:
    _channels_first(node)
    emit_avg_pool(ctx, node, int8_input(ctx, node, 0), int8_output(ctx, node, 3))


def qlinear_global_pool(ctx: Ctx, node: onnx.NodeProto) -> None:
    _channels_first(node)
    emit_mean(ctx, node, int8_input(ctx, node, 0), True, int8_output(ctx, node, 3))


def _float_twin(node: onnx.NodeProto, op: str) -> onnx.NodeProto:
    """The float op a QLinear activation quantizes (same attributes)."""
    twin = onnx.helper.make_node(op, [], [], name=node.name)
    twin.attribute.extend(node.attribute)
    return twin


def qlinear_unary(ctx: Ctx, node: onnx.NodeProto) -> None:
    """QLinearSigmoid / QLinearLeakyRelu: a table from the float function, as onnxruntime builds it."""
    x = int8_input(ctx, node, 0)
    op = node.op_type.removeprefix("QLinear")
    fn = float_function(ctx, _float_twin(node, op))
    with np.errstate(all="ignore"):
        emit_lut(ctx, node_name(node), x, fn, int8_output(ctx, node, 3), op)


def qlinear_softmax(ctx: Ctx, node: onnx.NodeProto) -> None:
    """com.microsoft QLinearSoftmax; its `opset` attribute says which Softmax axis semantics apply."""
    x = int8_input(ctx, node, 0)
    opset = int(attr(node, "opset", 13))
    emit_softmax(ctx, node, x, int(attr(node, "axis", -1 if opset >= 13 else 1)), opset, int8_output(ctx, node, 3))


HANDLERS: dict[str, Handler] = {
    "QLinearConv": qlinear_conv, "QLinearMatMul": qlinear_matmul, "QGemm": qgemm, "QLinearAdd": qlinear_add,
    "QLinearMul": qlinear_mul, "QLinearAveragePool": qlinear_avg_pool,
    "QLinearGlobalAveragePool": qlinear_global_pool, "QLinearSigmoid": qlinear_unary,
    "QLinearLeakyRelu": qlinear_unary, "QLinearSoftmax": qlinear_softmax,
}
