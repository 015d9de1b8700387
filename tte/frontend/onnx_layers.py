"""IR emission for the layers both ONNX formats share: once the QDQ folding or the QOperator mapping has
resolved a layer's int8 input, integer weights and output quantization, the IR it becomes is the same.

Layout: ONNX weights are OIHW; IR conv weights are OHWI and depthwise weights [1, KH, KW, C*M] (TFLite's
order, output channel = input channel * M + m, which is also ONNX's grouped-conv order).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx

from tte import ops
from tte.frontend.onnx_common import (
    NCHW_TO_NHWC,
    Ctx,
    Out,
    QConst,
    attr,
    dequantize,
    layout_perm,
    malformed,
    node_name,
    quantize_rne,
    same_quant,
    unsupported,
)
from tte.ir import QParams
from tte.ops.conv2d import out_size
from tte.quant import INT32_MAX, INT32_MIN

CODES = np.arange(-128, 128, dtype=np.int64)


def spatial_pads(node: onnx.NodeProto, hw: tuple[int, int], k: tuple[int, int], s: tuple[int, int]) -> tuple:
    """(top, left, bottom, right): ONNX `pads` [h_begin, w_begin, h_end, w_end] is already this order."""
    auto = attr(node, "auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        total = [max((-(-hw[i] // s[i]) - 1) * s[i] + k[i] - hw[i], 0) for i in range(2)]
        small = [t // 2 for t in total]
        big = [t - t // 2 for t in total]
        return (*small, *big) if auto == "SAME_UPPER" else (*big, *small)
    if auto == "VALID":
        return (0, 0, 0, 0)
    pads = tuple(int(p) for p in attr(node, "pads", [0, 0, 0, 0]))
    if len(pads) != 4 or min(pads) < 0:
        raise unsupported(node, f"pads {list(pads)}: tte needs 4 non-negative 2-D paddings")
    return pads


def _window(node: onnx.NodeProto, x_shape: tuple[int, ...], k: tuple[int, int]) -> tuple[tuple, tuple, tuple]:
    """(strides, pads, output H and W) of a 2-D window op, after checking its attributes."""
    if len(x_shape) != 4 or len(k) != 2:
        raise unsupported(node, f"input of shape {list(x_shape)}: only 2-D (NCHW) windows are supported")
    if any(d != 1 for d in attr(node, "dilations", [1, 1])):
        raise unsupported(node, "dilated windows are not supported")
    s = tuple(int(v) for v in attr(node, "strides", [1, 1]))
    if len(s) != 2 or min(s) < 1 or min(k) < 1:
        raise malformed(node, f"strides {list(s)} / kernel {list(k)} are not valid 2-D values")
    pads = spatial_pads(node, x_shape[2:], k, s)
    oh = out_size(x_shape[2], k[0], s[0], pads[0], pads[2])
    ow = out_size(x_shape[3], k[1], s[1], pads[1], pads[3])
    return s, pads, (oh, ow)


def bias_values(ctx: Ctx, node: onnx.NodeProto, name: str | None, s_x: float, s_w: np.ndarray) -> np.ndarray:
    """int32 bias values with scale s_x * s_w[c] (float32, as onnxruntime computes it)."""
    n = s_w.size
    scale = (np.float32(s_x) * s_w.astype(np.float32)).astype(np.float32)
    if not name:
        return np.zeros(n, np.int64)
    if name in ctx.qconsts:
        b = ctx.qconsts[name]
        if b.q.dtype == np.int32 and np.all(b.zp == 0) and np.allclose(b.scale, scale, rtol=1e-6, atol=0):
            values = b.q.astype(np.int64)  # the usual case: ints as written (onnxruntime uses them so)
        else:
            values = np.round(b.real().astype(np.float64) / scale)
    else:
        raw = ctx.const(node, name, "bias")
        # QOperator biases are int32 with the implied scale; a float bias is quantized like onnxruntime does.
        values = raw.astype(np.int64) if raw.dtype.kind in "iu" else np.round(raw.astype(np.float64) / scale)
    values = np.asarray(values).reshape(-1)
    if values.size != n:
        raise malformed(node, f"bias has {values.size} values for {n} output channels")
    return np.clip(values, INT32_MIN, INT32_MAX).astype(np.int64)


def clamp_bias(bias: np.ndarray, w: np.ndarray, zp_w: np.ndarray | int = 0) -> np.ndarray:
    """Clamp each bias to [INT32_MIN + bound, INT32_MAX - bound], bound = 255 * sum|w - zp_w| of its channel.

    |sum w * (x - zp_x)| <= bound, so the int32 accumulator acc + bias can then never wrap around. Some
    published models (the paper's proxyless / mcunet) carry biases near INT32_MIN on unused channels; wrapping
    would turn their saturated -128 outputs into garbage. The clamp changes nothing else: such a channel's
    output saturates either way.
    """
    o = bias.size
    wc = w.reshape(o, -1).astype(np.int64) - np.asarray(zp_w, np.int64).reshape(-1, 1)
    bound = 255 * np.abs(wc).sum(axis=1)
    lo = np.minimum(INT32_MIN + bound, 0)
    hi = np.maximum(INT32_MAX - bound, 0)
    return np.clip(bias, lo, hi)


def _per_channel(w: QConst, n: int, axis: int) -> QParams:
    """Per-output-channel weight quantization (a per-tensor scale is repeated)."""
    if np.any(w.zp != 0):
        raise ValueError("non-zero weight zero point")  # callers check first, with the node's name
    return QParams(np.broadcast_to(w.scale, (n,)).copy(), np.zeros(n, np.int64), axis)


def emit_conv(ctx: Ctx, node: onnx.NodeProto, x: str, w: QConst, bias: str | None, out: Out) -> None:
    """Conv / QLinearConv -> conv2d (group 1) or depthwise_conv2d (group == C_in)."""
    xs = ctx.shape(x)
    if w.q.ndim != 4:
        raise unsupported(node, f"weights of shape {list(w.q.shape)}: only 2-D convolutions are supported")
    o, ipg, kh, kw = w.q.shape
    if w.axis not in (None, 0) or np.any(w.zp != 0):
        raise unsupported(node, "conv weights must be symmetric (zero point 0), per tensor or per output channel",
                          "quantize with onnxruntime quantize_static(per_channel=True, weight_type=QInt8)")
    kernel = tuple(attr(node, "kernel_shape", [kh, kw]))
    if kernel != (kh, kw):
        raise malformed(node, f"kernel_shape {list(kernel)} does not match weights {list(w.q.shape)}")
    stride, pads, (oh, ow) = _window(node, xs, (kh, kw))
    group, c = int(attr(node, "group", 1)), xs[1]
    name = node_name(node)
    s_x = ctx.act_q(x).s
    b = bias_values(ctx, node, bias, s_x, np.broadcast_to(w.scale, (o,)))
    b = clamp_bias(b, w.q)
    attrs = dict(stride=stride, pad=pads, act=out.act)
    if group == 1 and ipg == c:
        op, wq, axis = "conv2d", w.q.transpose(0, 2, 3, 1), 0
    elif group == c and ipg == 1 and o % c == 0:
        op, wq, axis = "depthwise_conv2d", w.q.transpose(1, 2, 3, 0), 3
        attrs["multiplier"] = o // c
    elif group * ipg != c:
        raise malformed(node, f"group {group} and weights {list(w.q.shape)} do not fit {c} input channels")
    else:
        raise unsupported(node, f"grouped convolution (group={group}, {c} input channels)",
                          "tte supports group=1 and depthwise (group == input channels) convolutions")
    wt = ctx.const_tensor(f"{name}.weight", wq, "int8", _per_channel(w, o, axis))
    bt = ctx.const_tensor(f"{name}.bias", b, "int32", QParams(bias_scale(s_x, w, o), np.zeros(o), 0))
    y = ctx.new_act(out.name, (xs[0], o, oh, ow), out.quant)
    ctx.emit(op, name, [x, wt, bt], [y], **attrs)


def bias_scale(s_x: float, w: QConst, n: int) -> np.ndarray:
    """The bias quantization s_x * s_w[c] in float32, one per output channel."""
    return (np.float32(s_x) * np.broadcast_to(w.scale, (n,)).astype(np.float32)).astype(np.float32)


def emit_fc(ctx: Ctx, node: onnx.NodeProto, x: str, w: QConst, bias: str | None, out: Out) -> None:
    """Gemm / MatMul / QGemm / QLinearMatMul -> fully_connected; `w` is [O, I] with per-row (axis 0) scales."""
    xs = ctx.shape(x)
    o, i = w.q.shape
    if len(xs) not in (2, 3) or int(np.prod(xs[:-1])) != 1 or xs[-1] != i:
        raise unsupported(node, f"input of shape {list(xs)} with weights [{i}, {o}]: tte needs a [1, {i}] input",
                          "flatten the input to [1, features] before the matrix product")
    if w.axis is not None and np.any(w.zp != 0):
        raise unsupported(node, "per-channel weights with a non-zero zero point",
                          "quantize with onnxruntime quantize_static(weight_type=QInt8)")
    s_x = ctx.act_q(x).s
    b = clamp_bias(bias_values(ctx, node, bias, s_x, np.broadcast_to(w.scale, (o,))), w.q, w.zp[0])
    name = node_name(node)
    wq = QParams(w.scale, w.zp, 0 if w.axis is not None else None)
    wt = ctx.const_tensor(f"{name}.weight", w.q, "int8", wq)
    bt = ctx.const_tensor(f"{name}.bias", b, "int32", QParams(bias_scale(s_x, w, o), np.zeros(o), 0))
    y = ctx.new_act(out.name, (*xs[:-1], o), out.quant)
    ctx.emit("fully_connected", name, [x, wt, bt], [y], act=out.act)


def emit_add(ctx: Ctx, node: onnx.NodeProto, a: str, b: str, out: Out) -> None:
    """add of equal shapes; add_broadcast (numpy rules, operands of equal rank up to 4-D) otherwise."""
    sa, sb = ctx.shape(a), ctx.shape(b)
    if sa == sb:
        y = ctx.new_act(out.name, sa, out.quant)
        ctx.emit("add", node_name(node), [a, b], [y], act=out.act)
        return
    try:
        shape = tuple(int(d) for d in np.broadcast_shapes(sa, sb))
    except ValueError:
        raise malformed(node, f"shapes {list(sa)} and {list(sb)} do not broadcast") from None
    if len(sa) != len(sb) or len(sa) > 4:
        raise unsupported(node, f"broadcasting add of shapes {list(sa)} and {list(sb)}",
                          "tte broadcasts operands of equal rank (up to 4-D), e.g. [1, C, H, W] + [1, C, 1, 1]")
    y = ctx.new_act(out.name, shape, out.quant)
    ctx.emit("add_broadcast", node_name(node), [a, b], [y], act=out.act)


def emit_avg_pool(ctx: Ctx, node: onnx.NodeProto, x: str, out: Out) -> None:
    """AveragePool -> avg_pool2d (which averages over the taps inside the image, i.e. count_include_pad=0).

    TFLite's kernel keeps the input quantization. When the output quantization differs (QOperator models):
    without padding, a depthwise conv with unit weights of scale 1 / (kh * kw) rounds once, like onnxruntime;
    with padding the window size varies at the border, so avg_pool2d + requantize it is, rounding twice
    (error up to 0.5 + 0.5 * s_in / s_out LSB)."""
    xs = ctx.shape(x)
    k = tuple(int(v) for v in attr(node, "kernel_shape", []))
    stride, pads, (oh, ow) = _window(node, xs, k)
    if attr(node, "count_include_pad", 0) and any(pads):
        raise unsupported(node, "count_include_pad=1 with padding", "export with count_include_pad=0")
    if attr(node, "ceil_mode", 0):
        floor = (oh, ow)
        ceil = tuple(-(-(xs[2 + i] + pads[i] + pads[i + 2] - k[i]) // stride[i]) + 1 for i in range(2))
        if ceil != floor:
            raise unsupported(node, "ceil_mode=1 changes the output size", "export with ceil_mode=0")
    name, q_in = node_name(node), ctx.act_q(x)
    shape = (xs[0], xs[1], oh, ow)
    direct = same_quant(q_in, out.quant)
    if not direct and out.act != (-128, 127):
        raise unsupported(node, "a Relu / Clip after an average pool that changes the quantization")
    if not direct and not any(pads):
        _avg_pool_as_depthwise(ctx, node, x, k, stride, (oh, ow), out)
        return
    y = ctx.new_act(out.name if direct else f"{out.name}:pool", shape, q_in)
    act = out.act if direct else (-128, 127)
    ctx.emit("avg_pool2d", name, [x], [y], kernel=k, stride=stride, pad=pads, act=act)
    if not direct:
        requantize(ctx, f"{name}:requantize", y, out)


def _avg_pool_as_depthwise(ctx: Ctx, node: onnx.NodeProto, x: str, k: tuple, stride: tuple, hw: tuple,
                           out: Out) -> None:
    xs, name = ctx.shape(x), node_name(node)
    c = xs[1]
    s_w = np.full(c, 1.0 / (k[0] * k[1]), np.float32)
    w = QConst(np.ones((c, 1, *k), np.int8), s_w, np.zeros(c, np.int64), 0)
    wt = ctx.const_tensor(f"{name}.weight", w.q.transpose(1, 2, 3, 0), "int8", _per_channel(w, c, 3))
    bt = ctx.const_tensor(f"{name}.bias", np.zeros(c, np.int64), "int32",
                          QParams(bias_scale(ctx.act_q(x).s, w, c), np.zeros(c), 0))
    y = ctx.new_act(out.name, (xs[0], c, *hw), out.quant)
    ctx.emit("depthwise_conv2d", name, [x, wt, bt], [y], stride=stride, pad=(0, 0, 0, 0), multiplier=1,
             act=out.act)


def requantize(ctx: Ctx, name: str, x: str, out: Out) -> str:
    y = ctx.new_act(out.name, ctx.shape(x), out.quant)
    ctx.emit("requantize", name, [x], [y])
    return y


def emit_mean(ctx: Ctx, node: onnx.NodeProto, x: str, keepdims: bool, out: Out) -> None:
    """GlobalAveragePool / ReduceMean over H, W -> mean over the IR axes (1, 2)."""
    xs = ctx.shape(x)
    if len(xs) != 4:
        raise unsupported(node, f"input of shape {list(xs)}: tte averages 4-D (NCHW) tensors over H and W")
    if out.act != (-128, 127):
        raise unsupported(node, "a Relu / Clip after the mean narrows its range; tte's mean has no clamp")
    shape = (xs[0], xs[1], 1, 1) if keepdims else (xs[0], xs[1])
    y = ctx.new_act(out.name, shape, out.quant)
    ctx.emit("mean", node_name(node), [x], [y], axes=(1, 2), keepdims=bool(keepdims))


def emit_pad(ctx: Ctx, node: onnx.NodeProto, x: str, pads: list[int], out_name: str) -> str:
    """Pad (constant mode, the value being the zero point) on an int8 tensor; returns the IR output."""
    xs = ctx.shape(x)
    r = len(xs)
    if len(pads) != 2 * r:
        raise malformed(node, f"{len(pads)} pads for a tensor of rank {r}")
    if min(pads) < 0:
        raise unsupported(node, "negative pads (cropping) are not supported")
    per_axis = [(pads[a], pads[a + r]) for a in range(r)]
    ir_pads = tuple(per_axis[a] for a in layout_perm(r))
    y = ctx.new_act(out_name, tuple(d + b + e for d, (b, e) in zip(xs, per_axis, strict=True)), ctx.act_q(x))
    ctx.emit("pad", node_name(node), [x], [y], pads=ir_pads)
    return y


def _order_free(shape: tuple[int, ...]) -> bool:
    """True when a 4-D tensor has the same byte order in NCHW and NHWC (C == 1 or H * W == 1)."""
    return len(shape) != 4 or shape[1] == 1 or shape[2] * shape[3] == 1


def emit_reshape(ctx: Ctx, node: onnx.NodeProto, x: str, shape: tuple[int, ...], out_name: str) -> str:
    """Flatten / Reshape / Squeeze / Unsqueeze: a reshape of the bytes, plus transposes when a 4-D side
    is NHWC in the IR but the ONNX op means NCHW element order."""
    xs, q, name = ctx.shape(x), ctx.act_q(x), node_name(node)
    if int(np.prod(xs)) != int(np.prod(shape)):
        raise malformed(node, f"cannot reshape {list(xs)} to {list(shape)}")
    src = x
    if not _order_free(xs):
        src = ctx.new_act(f"{x}:nchw", xs, q, raw=True)
        ctx.emit("transpose", f"{name}:to_nchw", [x], [src], perm=(0, 3, 1, 2))
    if _order_free(shape):
        y = ctx.new_act(out_name, shape, q)
        ctx.emit("reshape", name, [src], [y])
        return y
    t = ctx.new_act(f"{out_name}:nchw", shape, q, raw=True)
    ctx.emit("reshape", name, [src], [t])
    y = ctx.new_act(out_name, shape, q)
    ctx.emit("transpose", f"{name}:to_nhwc", [t], [y], perm=NCHW_TO_NHWC)
    return y


def emit_transpose(ctx: Ctx, node: onnx.NodeProto, x: str, perm: list[int], out_name: str) -> str:
    """ONNX Transpose (perm over NCHW axes) -> IR transpose over the IR axes, or a reshape if it is a no-op."""
    xs = ctx.shape(x)
    r = len(xs)
    if sorted(perm) != list(range(r)):
        raise malformed(node, f"perm {list(perm)} is not a permutation of {r} axes")
    lay = layout_perm(r)
    inv = [lay.index(a) for a in range(r)]
    ir_perm = tuple(inv[perm[lay[k]]] for k in range(r))
    y = ctx.new_act(out_name, tuple(xs[p] for p in perm), ctx.act_q(x))
    if ir_perm == tuple(range(r)):
        ctx.emit("reshape", node_name(node), [x], [y])
    else:
        ctx.emit("transpose", node_name(node), [x], [y], perm=ir_perm)
    return y


def emit_softmax(ctx: Ctx, node: onnx.NodeProto, x: str, axis: int, opset: int, out: Out) -> None:
    """Softmax over the channels -> softmax, whose output TFLite fixes at (1/256, -128); another output
    quantization (onnxruntime's QDQ uses 1/255) becomes a requantize after it."""
    if "softmax" not in ops.OPS:
        raise unsupported(node, "softmax is not available in this tte build")
    xs = ctx.shape(x)
    channel_axis = 1 if len(xs) == 4 else len(xs) - 1  # the IR's last axis
    flat_4d = opset < 13 and len(xs) == 4 and xs[2] * xs[3] != 1  # opset < 13: softmax over the flattened C,H,W
    if axis % max(len(xs), 1) != channel_axis or flat_4d or out.act != (-128, 127):
        raise unsupported(node, f"softmax over axis {axis} of shape {list(xs)}", "softmax over the channels")
    fixed = QParams(np.float32(1 / 256), -128)
    direct = same_quant(fixed, out.quant)
    y = ctx.new_act(out.name if direct else f"{out.name}:softmax", xs, fixed)
    ctx.emit("softmax", node_name(node), [x], [y], beta=1.0)
    if not direct:
        requantize(ctx, f"{node_name(node)}:requantize", y, out)


# ---- element-wise functions of one tensor, as 256-entry tables


def function_of(ctx: Ctx, x: str) -> tuple[str, np.ndarray]:
    """(root, codes): `x` equals codes[root + 128] for an earlier int8 tensor `root` (x itself if none)."""
    return ctx.lut_src.get(x, (x, CODES))


def emit_lut(ctx: Ctx, name: str, x: str, values: Callable[[np.ndarray], np.ndarray], out: Out, source: str) -> None:
    """y = Q(f(DQ(x))) for all 256 codes of the root `x` depends on, as onnxruntime computes it in float:
    dequantize, the float function, quantize with round-half-even. `values` maps x's float values to y's."""
    root, codes = function_of(ctx, x)
    table = quantize_rne(values(dequantize(codes, ctx.act_q(x))), out.quant, *out.act)
    y = ctx.new_act(out.name, ctx.shape(x), out.quant)
    ctx.emit("lut", name, [root], [y], table=tuple(int(v) for v in table), source_op=source)
    ctx.lut_src[y] = (root, table)


def emit_binary_lut(ctx: Ctx, node: onnx.NodeProto, a: str, b: str, fn: Callable, out: Out) -> bool:
    """A binary op on two functions of the same tensor (HardSwish as x * HardSigmoid(x)) is itself a function
    of that tensor: emit it as one table and return True; False if the operands are independent."""
    (ra, ca), (rb, cb) = function_of(ctx, a), function_of(ctx, b)
    if ra != rb:
        return False
    va, vb = dequantize(ca, ctx.act_q(a)), dequantize(cb, ctx.act_q(b))
    table = quantize_rne(fn(va, vb), out.quant, *out.act)
    y = ctx.new_act(out.name, ctx.shape(a), out.quant)
    source = node.op_type.removeprefix("QLinear")
    if source == "Mul" and ((a == ra and b in ctx.hard_swish_gates) or (b == ra and a in ctx.hard_swish_gates)):
        source = "HardSwish"  # x * HardSigmoid(x) with alpha 1/6, beta 1/2: how HardSwish gets exported
    ctx.emit("lut", node_name(node), [ra], [y], table=tuple(int(v) for v in table), source_op=source)
    ctx.lut_src[y] = (ra, table)
    return True
