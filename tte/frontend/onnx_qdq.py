"""QDQ folding: float ONNX ops between DequantizeLinear and QuantizeLinear become int8 IR ops.

In a QDQ graph every op computes in float on dequantized inputs and its output is quantized again:
    DQ(x_q) -> Conv(DQ(w_q), DQ(b_q)) -> [Relu | Clip] -> Q -> y_q
A DequantizeLinear of a constant folds into an integer weight (`Ctx.qconsts`); one of an activation is an alias
of its int8 tensor. A compute op looks ahead through Relu/Clip to its QuantizeLinear, which gives its output
quantization; the Relu/Clip become the integer clamp `act`. Element-wise float functions become 256-entry
tables computed from the float semantics (which is what onnxruntime computes). Ops that only move bytes are
in `onnx_shapes`; the QuantizeLinear / DequantizeLinear here also serve the QOperator format's boundaries.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import numpy_helper

from tte.frontend.onnx_common import (
    Ctx,
    FloatInput,
    Handler,
    Out,
    QConst,
    attr,
    clamp_range,
    malformed,
    node_name,
    opt_input,
    same_quant,
    unsupported,
)
from tte.frontend.onnx_layers import (
    emit_add,
    emit_avg_pool,
    emit_binary_lut,
    emit_conv,
    emit_fc,
    emit_lut,
    emit_mean,
    emit_pad,
    emit_softmax,
    requantize,
)
from tte.ir import IOSpec, QParams

FLOAT_ACTIVATIONS = ("Relu", "Clip")


def clip_bounds(ctx: Ctx, node: onnx.NodeProto) -> tuple[float, float]:
    """Relu / Clip as a float interval (Clip's bounds are attributes before opset 11, inputs after)."""
    if node.op_type == "Relu":
        return 0.0, np.inf
    if ctx.opset < 11:
        return float(attr(node, "min", -np.inf)), float(attr(node, "max", np.inf))
    lo, hi = opt_input(node, 1), opt_input(node, 2)
    return (ctx.scalar(node, lo, "Clip min") if lo else -np.inf, ctx.scalar(node, hi, "Clip max") if hi else np.inf)


def quantized_output(ctx: Ctx, node: onnx.NodeProto, bias_add: bool = False) -> tuple[Out, str | None]:
    """Follow a float op's output through Relu / Clip (and, for MatMul, an Add of a constant bias) to the
    QuantizeLinear that gives its int8 output. Returns that output and the bias constant's name, if any."""
    name, lo, hi, bias = node.output[0], -np.inf, np.inf, None
    while True:
        users = ctx.consumers.get(name, [])
        if name in ctx.graph_outputs or len(users) != 1:
            raise unsupported(node, f"float result {name!r} is not quantized by exactly one QuantizeLinear",
                              "quantize every op (onnxruntime quantize_static, or `tte quantize`)")
        user = ctx.graph.node[users[0]]
        if user.op_type in FLOAT_ACTIVATIONS:
            a, b = clip_bounds(ctx, user)
            lo, hi = max(lo, a), min(hi, b)
        elif user.op_type == "Add" and bias_add and bias is None and lo == -np.inf and hi == np.inf:
            others = [t for t in user.input if t != name]
            if len(others) != 1 or not ctx.is_const(others[0]):
                raise unsupported(user, "the Add after a MatMul must add a constant bias")
            bias = others[0]
        elif user.op_type == "QuantizeLinear":
            q = ctx.qparams(user, user.input[1], opt_input(user, 2), "output")
            ctx.done.add(users[0])
            return Out(user.output[0], q, clamp_range(lo, hi, q)), bias
        else:
            raise unsupported(node, f"float result {name!r} goes to {user.op_type} before being quantized",
                              "tte folds only Relu and Clip between an op and its QuantizeLinear")
        ctx.done.add(users[0])
        name = user.output[0]


def _out(ctx: Ctx, node: onnx.NodeProto) -> Out:
    out, _ = quantized_output(ctx, node)
    ctx.acts[out.name] = out.name
    return out


def conv(ctx: Ctx, node: onnx.NodeProto) -> None:
    x, w = ctx.act(node, node.input[0]), ctx.qconst(node, node.input[1], "weight")
    emit_conv(ctx, node, x, w, opt_input(node, 2), _out(ctx, node))


def transposed(w: QConst) -> QConst:
    return QConst(w.q.T, w.scale, w.zp, None if w.axis is None else 1 - w.axis)


def gemm(ctx: Ctx, node: onnx.NodeProto) -> None:
    if attr(node, "transA", 0) or attr(node, "alpha", 1.0) != 1.0 or attr(node, "beta", 1.0) != 1.0:
        raise unsupported(node, "transA / alpha / beta other than 0 / 1 / 1", "export a plain x @ W.T + b")
    x, w = ctx.act(node, node.input[0]), ctx.qconst(node, node.input[1], "weight")
    if w.q.ndim != 2:
        raise malformed(node, f"weights of shape {list(w.q.shape)} are not a matrix")
    emit_fc(ctx, node, x, w if attr(node, "transB", 0) else transposed(w), opt_input(node, 2), _out(ctx, node))


def matmul(ctx: Ctx, node: onnx.NodeProto) -> None:
    x, w = ctx.act(node, node.input[0]), ctx.qconst(node, node.input[1], "weight")
    if w.q.ndim != 2:
        raise unsupported(node, f"weights of shape {list(w.q.shape)}: tte needs a constant [K, N] matrix")
    out, bias = quantized_output(ctx, node, bias_add=True)
    ctx.acts[out.name] = out.name
    emit_fc(ctx, node, x, transposed(w), bias, out)


BINARY: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}


def binary(ctx: Ctx, node: onnx.NodeProto) -> None:
    """Add of two tensors -> add; any binary op on functions of one tensor (or a scalar constant) -> lut."""
    fn = BINARY[node.op_type]
    a_name, b_name = node.input[0], node.input[1]
    if ctx.is_const(a_name) or ctx.is_const(b_name):
        c_first = ctx.is_const(a_name)
        c_name = a_name if c_first else b_name
        value = ctx.qconsts[c_name].q if c_name in ctx.qconsts else ctx.consts[c_name]
        if np.size(value) != 1:
            raise unsupported(node, f"{node.op_type} of a constant tensor of shape {list(np.shape(value))}",
                              "a MatMul + Add bias becomes a Gemm with onnxruntime's quant_pre_process")
        c = np.float32(ctx.scalar(node, c_name, "constant operand"))
        x = ctx.act(node, b_name if c_first else a_name)
        out = _out(ctx, node)
        with np.errstate(all="ignore"):
            emit_lut(ctx, node_name(node), x, (lambda v: fn(c, v)) if c_first else (lambda v: fn(v, c)), out,
                     node.op_type)
        return
    a, b = ctx.act(node, a_name), ctx.act(node, b_name)
    out = _out(ctx, node)
    with np.errstate(all="ignore"):
        if emit_binary_lut(ctx, node, a, b, fn, out):
            return
    if node.op_type != "Add":
        raise unsupported(node, f"{node.op_type} of two independent tensors",
                          "tte supports it only when both operands are functions of one tensor")
    emit_add(ctx, node, a, b, out)


def float_function(ctx: Ctx, node: onnx.NodeProto) -> Callable[[np.ndarray], np.ndarray]:
    """The float32 semantics of an element-wise ONNX activation."""
    op, f32 = node.op_type, np.float32
    if op in FLOAT_ACTIVATIONS:
        lo, hi = clip_bounds(ctx, node)
        return lambda x: np.clip(x, f32(lo), f32(hi))
    if op == "Sigmoid":
        return lambda x: (f32(1) / (f32(1) + np.exp(-x))).astype(f32)
    if op == "Tanh":
        return lambda x: np.tanh(x).astype(f32)
    if op in ("HardSigmoid", "HardSwish"):
        alpha = f32(attr(node, "alpha", 0.2 if op == "HardSigmoid" else 1 / 6))
        beta = f32(attr(node, "beta", 0.5))
        if op == "HardSigmoid":
            return lambda x: np.clip(alpha * x + beta, f32(0), f32(1))
        return lambda x: x * np.clip(alpha * x + beta, f32(0), f32(1))
    if op == "LeakyRelu":
        alpha = f32(attr(node, "alpha", 0.01))
        return lambda x: np.where(x >= 0, x, alpha * x).astype(f32)
    raise unsupported(node, "no float semantics known")


def unary(ctx: Ctx, node: onnx.NodeProto) -> None:
    x = ctx.act(node, node.input[0])
    fn = float_function(ctx, node)
    out = _out(ctx, node)
    with np.errstate(all="ignore"):
        emit_lut(ctx, node_name(node), x, fn, out, node.op_type)
    if node.op_type == "HardSigmoid" and np.isclose(attr(node, "alpha", 0.2), 1 / 6) and attr(node, "beta", 0.5) == 0.5:
        ctx.hard_swish_gates.add(out.name)


def softmax(ctx: Ctx, node: onnx.NodeProto) -> None:
    x = ctx.act(node, node.input[0])
    emit_softmax(ctx, node, x, int(attr(node, "axis", -1 if ctx.opset >= 13 else 1)), ctx.opset, _out(ctx, node))


def avg_pool(ctx: Ctx, node: onnx.NodeProto) -> None:
    emit_avg_pool(ctx, node, ctx.act(node, node.input[0]), _out(ctx, node))


def global_pool(ctx: Ctx, node: onnx.NodeProto) -> None:
    emit_mean(ctx, node, ctx.act(node, node.input[0]), True, _out(ctx, node))


def reduce_mean(ctx: Ctx, node: onnx.NodeProto) -> None:
    x = ctx.act(node, node.input[0])
    axes = attr(node, "axes") if ctx.opset < 18 else None
    if ctx.opset >= 18 and opt_input(node, 1):
        axes = ctx.const(node, node.input[1], "axes").tolist()
    r = len(ctx.shape(x))
    if axes is None or sorted(int(a) % r for a in axes) != [2, 3] or r != 4:
        raise unsupported(node, f"ReduceMean over axes {axes} of a rank-{r} tensor", "average over H and W")
    emit_mean(ctx, node, x, bool(attr(node, "keepdims", 1)), _out(ctx, node))


# ---- QuantizeLinear, DequantizeLinear, Constant


def quantize(ctx: Ctx, node: onnx.NodeProto) -> None:
    src, out = node.input[0], node.output[0]
    if ctx.is_const(src) and src in ctx.consts:
        q = ctx.qparams(node, node.input[1], opt_input(node, 2), "constant")
        ctx.consts[out] = np.clip(np.round(ctx.consts[src] / np.float32(q.s)) + q.zp, -128, 127).astype(np.int8)
        return
    q = ctx.qparams(node, node.input[1], opt_input(node, 2), "output")
    if src in ctx.float_inputs:
        _quantize_input(ctx, node, ctx.float_inputs[src], q)
    elif src in ctx.acts:  # DQ -> [shape ops] -> Q: the same tensor, or a requantization
        x = ctx.acts[src]
        ctx.acts[out] = x if same_quant(ctx.act_q(x), q) else requantize(ctx, node_name(node), x, Out(out, q))
    else:
        raise unsupported(node, f"quantizes {src!r}, a float value tte cannot follow back to an int8 tensor",
                          "quantize the whole model with onnxruntime quantize_static")


def _quantize_input(ctx: Ctx, node: onnx.NodeProto, fi: FloatInput, q: QParams) -> None:
    """The graph input's QuantizeLinear: the IR input tensor (and the zero pads met before it)."""
    out = node.output[0]
    if fi.graph_input in ctx.input_ir:
        if fi.pads or not same_quant(ctx.act_q(ctx.input_ir[fi.graph_input]), q):
            raise unsupported(node, f"input {fi.graph_input!r} is quantized twice, differently")
        ctx.acts[out] = ctx.input_ir[fi.graph_input]
        return
    x = ctx.new_act(f"{out}:unpadded" if fi.pads else out, fi.shape, q)
    user_shape = ctx.onnx_input_shapes[fi.graph_input]
    ctx.inputs.append(IOSpec(x, user_shape, fi.layout, True))
    ctx.input_ir[fi.graph_input] = x
    for i, (pad_node, pads) in enumerate(fi.pads):
        x = emit_pad(ctx, pad_node, x, list(pads), out if i == len(fi.pads) - 1 else f"{out}:pad{i}")
    ctx.acts[out] = x


def dequantize(ctx: Ctx, node: onnx.NodeProto) -> None:
    src, out = node.input[0], node.output[0]
    if src in ctx.consts:
        data = ctx.consts[src]
        s = np.asarray(ctx.const(node, node.input[1], "scale"), np.float32).reshape(-1)
        zp_name = opt_input(node, 2)
        zp = np.asarray(ctx.const(node, zp_name, "zero point")).reshape(-1) if zp_name else np.zeros(1, np.int64)
        if data.dtype.kind not in "iu" or zp.size != s.size:
            raise malformed(node, f"dequantizes a {data.dtype} constant with {s.size} scales, {zp.size} zero points")
        axis = int(attr(node, "axis", 1)) if s.size > 1 else None
        ctx.qconsts[out] = QConst(data, s, zp.astype(np.int64), axis)
        return
    x = ctx.act(node, src)
    q = ctx.qparams(node, node.input[1], opt_input(node, 2), "input")
    ctx.acts[out] = ctx.with_quant(x, q, node_name(node))
    ctx.float_names.add(out)


def constant(ctx: Ctx, node: onnx.NodeProto) -> None:
    value = [a for a in node.attribute if a.name == "value"]
    if not value:
        raise unsupported(node, "Constant without a tensor `value`")
    ctx.consts[node.output[0]] = numpy_helper.to_array(value[0].t)


HANDLERS: dict[str, Handler] = {
    "Conv": conv, "Gemm": gemm, "MatMul": matmul, **{op: binary for op in BINARY},
    **{op: unary for op in ("Relu", "Clip", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "LeakyRelu")},
    "Softmax": softmax, "AveragePool": avg_pool, "GlobalAveragePool": global_pool, "ReduceMean": reduce_mean,
    "QuantizeLinear": quantize, "DequantizeLinear": dequantize, "Constant": constant,
}
