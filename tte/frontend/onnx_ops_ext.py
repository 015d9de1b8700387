"""More ONNX ops: MaxPool, Concat / QLinearConcat, Split, Slice, Mul / Sub of two tensors (broadcasting, e.g.
squeeze-and-excitation), BatchNormalization on a quantized tensor, Add / Sub / Mul (QLinearAdd / QLinearMul) of
a per-channel constant, and derivative tables for the activation tables (`lut` nodes) the QDQ folding emits.
(Add of two tensors of different shapes is `add_broadcast`, in onnx_layers.emit_add.)

MaxPool, Split and Slice move int8 values without arithmetic, like the ops of `onnx_shapes`: their outputs keep
the input quantization and the QuantizeLinear after them aliases or requantizes (MaxPool commutes with any
monotonic requantization, so this is exact). A BatchNormalization left in a QDQ graph is a per-channel affine
map y = a[c] * x + b[c] of a quantized tensor; it becomes a depthwise 1x1 convolution whose int8 weights are
+-127 with scale |a[c]| / 127, so the real weights equal a[c] exactly and only the int32 bias and the output
requantization round. An Add / Sub / Mul of a per-channel constant ([C, 1, 1]: an unfolded scale or shift) is
the same affine map.
"""

from __future__ import annotations

import numpy as np
import onnx

from tte.errors import UnsupportedError
from tte.frontend import onnx_qdq, onnx_qop
from tte.frontend.onnx_common import (
    Ctx,
    Handler,
    Out,
    QConst,
    attr,
    layout_perm,
    malformed,
    node_name,
    opt_input,
    same_quant,
    unsupported,
)
from tte.frontend.onnx_layers import _window, emit_conv, function_of, requantize
from tte.frontend.onnx_lut_grads import with_derivatives
from tte.frontend.onnx_shapes import _shape_op

# --- MaxPool -----------------------------------------------------------------------------------------------


def max_pool(ctx: Ctx, node: onnx.NodeProto) -> None:
    if attr(node, "storage_order", 0) or len(node.output) > 1:
        raise unsupported(node, "MaxPool with an Indices output or storage_order", "export a plain MaxPool")

    def make(x: str) -> str:
        xs = ctx.shape(x)
        k = tuple(int(v) for v in attr(node, "kernel_shape", []))
        stride, pads, (oh, ow) = _window(node, xs, k)
        if attr(node, "ceil_mode", 0):
            ceil = tuple(-(-(xs[2 + i] + pads[i] + pads[i + 2] - k[i]) // stride[i]) + 1 for i in range(2))
            if ceil != (oh, ow):
                raise unsupported(node, "ceil_mode=1 changes the output size", "export with ceil_mode=0")
        y = ctx.new_act(node.output[0], (xs[0], xs[1], oh, ow), ctx.act_q(x))
        ctx.emit("max_pool2d", node_name(node), [x], [y], kernel=k, stride=stride, pad=pads, act=(-128, 127))
        return y

    _shape_op(ctx, node, make)


# --- Concat, Split, Slice ------------------------------------------------------------------------------------


def _ir_axis(ctx: Ctx, node: onnx.NodeProto, x: str, axis: int) -> int:
    r = len(ctx.shape(x))
    if not -r <= axis < r:
        raise malformed(node, f"axis {axis} out of range for rank {r}")
    return layout_perm(r).index(axis % r)


def _emit_concat(ctx: Ctx, node: onnx.NodeProto, xs: list[str], axis: int, out: Out) -> None:
    shapes = [ctx.shape(x) for x in xs]
    a = axis % len(shapes[0])
    if any(len(s) != len(shapes[0]) or any(d != e for k, (d, e) in enumerate(zip(s, shapes[0], strict=False)) if k != a)
           for s in shapes):
        raise malformed(node, f"inputs of shapes {shapes} do not concatenate along axis {axis}")
    name = node_name(node)
    same = []
    for i, x in enumerate(xs):  # TFLite's concatenation copies bytes: bring every input to the output's quantization
        same.append(x if same_quant(ctx.act_q(x), out.quant) else
                    requantize(ctx, f"{name}:requantize{i}", x, Out(f"{x}:{name}", out.quant)))
    shape = list(shapes[0])
    shape[a] = sum(s[a] for s in shapes)
    y = ctx.new_act(out.name, tuple(shape), out.quant)
    ctx.emit("concat", name, same, [y], axis=_ir_axis(ctx, node, xs[0], a))


def concat(ctx: Ctx, node: onnx.NodeProto) -> None:
    xs = [ctx.act(node, t) for t in node.input]
    users = ctx.consumers.get(node.output[0], [])
    if len(users) == 1 and ctx.graph.node[users[0]].op_type in ("QuantizeLinear", "Relu", "Clip"):
        out, _ = onnx_qdq.quantized_output(ctx, node)
        ctx.acts[out.name] = out.name
        if out.act != (-128, 127):
            raise unsupported(node, "a Relu / Clip after a Concat", "apply the activation before concatenating")
        _emit_concat(ctx, node, xs, int(attr(node, "axis", 0)), out)
        return
    q = ctx.act_q(xs[0])
    if not all(same_quant(ctx.act_q(x), q) for x in xs):
        raise unsupported(node, "Concat of differently quantized tensors without a QuantizeLinear after it")
    ctx.acts[node.output[0]] = node.output[0]
    if any(t in ctx.float_names for t in node.input):
        ctx.float_names.add(node.output[0])
    _emit_concat(ctx, node, xs, int(attr(node, "axis", 0)), Out(node.output[0], q))


def qlinear_concat(ctx: Ctx, node: onnx.NodeProto) -> None:
    """com.microsoft QLinearConcat: (Y_scale, Y_zero_point, then X, X_scale, X_zero_point per input)."""
    if len(node.input) < 5 or (len(node.input) - 2) % 3:
        raise malformed(node, f"{len(node.input)} inputs do not form (Y_scale, Y_zp, (X, X_scale, X_zp)...)")
    xs = [onnx_qop.int8_input(ctx, node, i) for i in range(2, len(node.input), 3)]
    out = onnx_qop.int8_output(ctx, node, 0)
    _emit_concat(ctx, node, xs, int(attr(node, "axis", 0)), out)


def _emit_slice(ctx: Ctx, node: onnx.NodeProto, x: str, out_name: str, begin: list[int], size: list[int],
                strides: list[int], name: str) -> str:
    lay = layout_perm(len(begin))
    y = ctx.new_act(out_name, tuple(size), ctx.act_q(x))
    ctx.emit("slice", name, [x], [y], begin=tuple(begin[a] for a in lay), size=tuple(size[a] for a in lay),
             strides=tuple(strides[a] for a in lay))
    return y


def split(ctx: Ctx, node: onnx.NodeProto) -> None:
    x = ctx.act(node, node.input[0])
    xs = ctx.shape(x)
    r = len(xs)
    axis = int(attr(node, "axis", 0)) % r
    n = len(node.output)
    if ctx.opset >= 13 and opt_input(node, 1):
        sizes = [int(v) for v in ctx.const(node, node.input[1], "split").reshape(-1)]
    elif attr(node, "split") is not None:
        sizes = [int(v) for v in attr(node, "split")]
    else:
        sizes = [-(-xs[axis] // n)] * n
        sizes[-1] = xs[axis] - sum(sizes[:-1])
    if len(sizes) != n or sum(sizes) != xs[axis] or min(sizes) < 1:
        raise malformed(node, f"split sizes {sizes} do not divide {xs[axis]} into {n} outputs")
    start = 0
    for i, (out, k) in enumerate(zip(node.output, sizes, strict=True)):
        begin = [start if a == axis else 0 for a in range(r)]
        size = [k if a == axis else d for a, d in enumerate(xs)]
        name = node_name(node) if i == 0 else f"{node_name(node)}:{i}"
        ctx.acts[out] = _emit_slice(ctx, node, x, out, begin, size, [1] * r, name)
        if node.input[0] in ctx.float_names:
            ctx.float_names.add(out)
        start += k


def slice_(ctx: Ctx, node: onnx.NodeProto) -> None:
    if ctx.opset < 10:
        raise unsupported(node, "Slice before opset 10 (attributes)", "export with opset 13")

    def ints(i: int) -> list[int] | None:
        name = opt_input(node, i)
        return None if name is None else [int(v) for v in ctx.const(node, name, "slice bound").reshape(-1)]

    def make(x: str) -> str:
        xs = ctx.shape(x)
        r = len(xs)
        starts, ends = ints(1), ints(2)
        axes, steps = ints(3) or list(range(len(starts))), ints(4) or [1] * len(starts)
        begin, size, strides = [0] * r, list(xs), [1] * r
        for s, e, a, st in zip(starts, ends, axes, steps, strict=True):
            a %= r
            idx = range(xs[a])[slice(s, e, st)]
            if len(idx) == 0 or idx.step < 0:
                raise unsupported(node, "an empty or reversed slice", "slice with positive steps")
            begin[a], size[a], strides[a] = idx.start, len(idx), idx.step
        return _emit_slice(ctx, node, x, node.output[0], begin, size, strides, node_name(node))

    _shape_op(ctx, node, make)


# --- Mul / Sub of two tensors --------------------------------------------------------------------------------


def _ir_operand_shapes(ctx: Ctx, node: onnx.NodeProto, a: str, b: str) -> None:
    sa, sb = ctx.shape(a), ctx.shape(b)
    if len(sa) != len(sb) or len(sa) > 4:
        raise unsupported(node, f"broadcasting {list(sa)} with {list(sb)}",
                          "tte broadcasts operands of equal rank (up to 4-D), e.g. [1, C, H, W] * [1, C, 1, 1]")
    try:
        np.broadcast_shapes(sa, sb)
    except ValueError:
        raise malformed(node, f"shapes {list(sa)} and {list(sb)} do not broadcast") from None


def _emit_binary(ctx: Ctx, node: onnx.NodeProto, op: str, a: str, b: str, out: Out) -> None:
    _ir_operand_shapes(ctx, node, a, b)
    shape = tuple(int(d) for d in np.broadcast_shapes(ctx.shape(a), ctx.shape(b)))
    y = ctx.new_act(out.name, shape, out.quant)
    ctx.emit(op, node_name(node), [a, b], [y], act=out.act)


def _independent(ctx: Ctx, node: onnx.NodeProto, a: str, b: str) -> bool:
    """True when neither operand is a constant and they are not functions of one tensor (not a table)."""
    if ctx.is_const(a) or ctx.is_const(b):
        return False
    return function_of(ctx, ctx.act(node, a))[0] != function_of(ctx, ctx.act(node, b))[0]


def mul_sub(ctx: Ctx, node: onnx.NodeProto) -> None:
    if node.op_type not in ("Mul", "Sub") or not _independent(ctx, node, node.input[0], node.input[1]):
        binary_const(ctx, node)
        return
    a, b = ctx.act(node, node.input[0]), ctx.act(node, node.input[1])
    out, _ = onnx_qdq.quantized_output(ctx, node)
    ctx.acts[out.name] = out.name
    _emit_binary(ctx, node, node.op_type.lower(), a, b, out)


def qlinear_mul(ctx: Ctx, node: onnx.NodeProto) -> None:
    if qlinear_const(ctx, node):
        return
    a, b = onnx_qop.int8_input(ctx, node, 0), onnx_qop.int8_input(ctx, node, 3)
    if function_of(ctx, a)[0] == function_of(ctx, b)[0]:
        onnx_qop.qlinear_mul(ctx, node)
        return
    _emit_binary(ctx, node, "mul", a, b, onnx_qop.int8_output(ctx, node, 6))


# --- BatchNormalization --------------------------------------------------------------------------------------


def _param(ctx: Ctx, node: onnx.NodeProto, i: int, what: str) -> np.ndarray:
    name = node.input[i]
    v = ctx.qconsts[name].real() if name in ctx.qconsts else ctx.const(node, name, what)
    return np.asarray(v, np.float64).reshape(-1)


def batch_norm(ctx: Ctx, node: onnx.NodeProto) -> None:
    """Inference BatchNormalization of a quantized tensor -> an exact-weight depthwise 1x1 convolution."""
    if len(node.output) > 1 and any(node.output[1:]):
        raise unsupported(node, "training-mode BatchNormalization", "export the model in eval mode")
    x = ctx.act(node, node.input[0])
    c = ctx.shape(x)[1]
    gamma, beta, mean, var = (_param(ctx, node, i, w) for i, w in enumerate(("scale", "B", "mean", "var"), 1))
    eps = np.float64(np.float32(attr(node, "epsilon", 1e-5)))
    if not all(p.size == c for p in (gamma, beta, mean, var)) or np.any(var + eps <= 0):
        raise malformed(node, f"parameters do not describe {c} channels with positive variance")
    a = gamma / np.sqrt(var + eps)
    _emit_channel_affine(ctx, node, node.input[0], x, a, beta - a * mean)


def _emit_channel_affine(ctx: Ctx, node: onnx.NodeProto, x_name: str, x: str, a: np.ndarray, b: np.ndarray,
                         out: Out | None = None) -> None:
    """y = a[c] * x + b[c] (x: the ONNX input x_name, IR tensor x) -> an exact-weight depthwise 1x1 conv; `out`:
    the int8 output of a QOperator node (None: the QuantizeLinear that follows, QDQ)."""
    c = a.size
    s_w = np.maximum(np.abs(a), 1e-30) / 127.0
    w = QConst(np.where(a < 0, -127, 127).astype(np.int8).reshape(c, 1, 1, 1), s_w.astype(np.float32),
               np.zeros(c, np.int64), 0)
    bias = f"{node_name(node)}:folded_bias"
    ctx.consts[bias] = b.astype(np.float32)  # bias_values quantizes a float bias with scale s_x * s_w
    conv_like = onnx.helper.make_node("Conv", [x_name, "", bias], list(node.output[:1]), name=node.name,
                                      kernel_shape=[1, 1], group=c)
    try:
        if out is None:
            out, _ = onnx_qdq.quantized_output(ctx, conv_like)
    except UnsupportedError as e:
        if node.op_type != "BatchNormalization":
            raise unsupported(node, str(e).split("): ", 1)[-1]) from None
        # onnxruntime's QOperator quantizer leaves a BatchNormalization at the graph's end in float
        reason = str(e).split("): ", 1)[-1].split("; ")[0]
        raise unsupported(node, f"its result is not quantized again ({reason})",
                          "fold it into the conv before quantizing (onnxruntime.quantization's quant_pre_process "
                          "does), or quantize in QDQ format") from None
    ctx.acts[out.name] = out.name
    emit_conv(ctx, conv_like, x, w, bias, out)


# --- Add / Sub / Mul of a per-channel constant ------------------------------------------------------------------


def _per_channel(v: np.ndarray | None, x_shape: tuple[int, ...]) -> np.ndarray | None:
    """The C float values of constant v when it broadcasts along the channels of an NCHW tensor only
    ([C, 1, 1] or [1, C, 1, 1] with C > 1); None for any other constant (scalars become tables)."""
    if v is None or len(x_shape) != 4 or np.ndim(v) > 4 or x_shape[1] == 1:
        return None
    shape = (1,) * (4 - np.ndim(v)) + tuple(np.shape(v))
    if shape != (1, x_shape[1], 1, 1):
        return None
    return np.asarray(v, np.float64).reshape(-1)


def binary_const(ctx: Ctx, node: onnx.NodeProto) -> None:
    """Add / Sub / Mul of a quantized tensor and a per-channel constant (an unfolded scale or shift) -> a channel
    affine map (a depthwise 1x1 convolution, as BatchNormalization); anything else -> onnx_qdq.binary."""
    first, second = node.input[0], node.input[1]
    c_first = ctx.is_const(first)
    if node.op_type not in ("Add", "Sub", "Mul") or c_first == ctx.is_const(second):
        onnx_qdq.binary(ctx, node)
        return
    c_name, x_name = (first, second) if c_first else (second, first)
    x = ctx.act(node, x_name)
    v = _per_channel(ctx.qconsts[c_name].real() if c_name in ctx.qconsts else ctx.consts.get(c_name), ctx.shape(x))
    if v is None:
        onnx_qdq.binary(ctx, node)
        return
    _emit_channel_affine(ctx, node, x_name, x, *_affine(node.op_type, v, c_first))


def _affine(op: str, v: np.ndarray, const_first: bool) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) of y = a * x + b for `x op v` (`v op x` when const_first)."""
    one = np.ones_like(v)
    return {"Add": (one, v), "Mul": (v, 0 * v), "Sub": (-one, v) if const_first else (one, -v)}[op]


def qlinear_const(ctx: Ctx, node: onnx.NodeProto) -> bool:
    """QLinearAdd / QLinearMul of an int8 tensor and a per-channel int8 constant -> a channel affine map; False
    (nothing emitted) for any other operands."""
    first, second = node.input[0], node.input[3]
    if ctx.is_const(first) == ctx.is_const(second):
        return False
    c_first = ctx.is_const(first)
    i_c, i_x = (0, 3) if c_first else (3, 0)
    q = ctx.qparams(node, node.input[i_c + 1], opt_input(node, i_c + 2), "constant")
    raw = ctx.consts.get(node.input[i_c])
    v = None if raw is None else (np.asarray(raw, np.int64) - q.zp).astype(np.float32) * np.float32(q.s)
    v = _per_channel(v, ctx.shape(ctx.act(node, node.input[i_x])))
    if v is None:
        return False
    x = onnx_qop.int8_input(ctx, node, i_x)
    a, b = _affine(node.op_type.removeprefix("QLinear"), v, c_first)
    _emit_channel_affine(ctx, node, node.input[i_x], x, a, b, out=onnx_qop.int8_output(ctx, node, 6))
    return True


def qlinear_add(ctx: Ctx, node: onnx.NodeProto) -> None:
    if not qlinear_const(ctx, node):
        onnx_qop.qlinear_add(ctx, node)


HANDLERS: dict[str, Handler] = with_derivatives({
    **onnx_qdq.HANDLERS, **onnx_qop.HANDLERS,
    "MaxPool": max_pool, "Concat": concat, "QLinearConcat": qlinear_concat, "Split": split, "Slice": slice_,
    "Mul": mul_sub, "Sub": mul_sub, "QLinearMul": qlinear_mul, "BatchNormalization": batch_norm,
    "Add": binary_const, "QLinearAdd": qlinear_add,
})
