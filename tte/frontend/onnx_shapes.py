"""Ops that move bytes without arithmetic: Flatten, Reshape, Squeeze, Unsqueeze, Identity, Transpose, Pad.

They act on dequantized values in QDQ graphs and on int8 tensors in QOperator graphs alike; the output keeps
the input's quantization. Two of them also appear on the float graph input, before its QuantizeLinear: the
Transpose(0, 3, 1, 2) of a model exported from NHWC (the user layout is then NHWC), and a zero Pad that
onnxruntime's QOperator format leaves in float (applied after quantizing, which is the same).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx

from tte.frontend.onnx_common import Ctx, FloatInput, Handler, attr, malformed, opt_input, unsupported
from tte.frontend.onnx_layers import emit_pad, emit_reshape, emit_transpose


def _shape_op(ctx: Ctx, node: onnx.NodeProto, make: Callable[[str], str]) -> None:
    """Run `make(x) -> IR output` on the op's activation input; the output keeps the input's quantization and
    is float on the ONNX side when the input was."""
    src = node.input[0]
    ir = make(ctx.act(node, src))
    ctx.acts[node.output[0]] = ir
    if src in ctx.float_names:
        ctx.float_names.add(node.output[0])


def _axes(ctx: Ctx, node: onnx.NodeProto) -> list[int] | None:
    """Squeeze / Unsqueeze axes: an attribute before opset 13, an input after."""
    if ctx.opset < 13:
        axes = attr(node, "axes")
        return None if axes is None else [int(a) for a in axes]
    return ctx.const(node, node.input[1], "axes").reshape(-1).tolist() if opt_input(node, 1) else None


def reshape_like(ctx: Ctx, node: onnx.NodeProto) -> None:
    """Flatten, Reshape, Squeeze, Unsqueeze, Identity -> reshape (with NCHW care, see emit_reshape)."""
    if node.op_type == "Identity" and node.input[0] in ctx.consts:
        ctx.consts[node.output[0]] = ctx.consts[node.input[0]]
        return

    def make(x: str) -> str:
        return emit_reshape(ctx, node, x, target_shape(ctx, node, ctx.shape(x)), node.output[0])

    _shape_op(ctx, node, make)


def target_shape(ctx: Ctx, node: onnx.NodeProto, s: tuple[int, ...]) -> tuple[int, ...]:
    op, r = node.op_type, len(s)
    if op == "Identity":
        return s
    if op == "Flatten":
        a = int(attr(node, "axis", 1)) % (r + 1)
        return (int(np.prod(s[:a])), int(np.prod(s[a:])))
    if op == "Squeeze":
        axes = _axes(ctx, node)
        drop = {i for i, d in enumerate(s) if d == 1} if axes is None else {int(a) % r for a in axes}
        return tuple(d for i, d in enumerate(s) if i not in drop)
    if op == "Unsqueeze":
        axes, out = _axes(ctx, node), list(s)
        if axes is None:
            raise malformed(node, "Unsqueeze without axes")
        for a in sorted(int(a) % (r + len(axes)) for a in axes):
            out.insert(a, 1)
        return tuple(out)
    shape = [int(v) for v in ctx.const(node, node.input[1], "shape").reshape(-1)]
    if not attr(node, "allowzero", 0):
        shape = [s[i] if v == 0 and i < r else v for i, v in enumerate(shape)]
    if shape.count(-1) == 1:
        known = int(np.prod([v for v in shape if v != -1]))
        shape[shape.index(-1)] = int(np.prod(s)) // known if known > 0 else -1
    return tuple(shape)


def transpose(ctx: Ctx, node: onnx.NodeProto) -> None:
    src, perm = node.input[0], [int(p) for p in attr(node, "perm", [])]
    if src in ctx.float_inputs:  # a float NHWC model exports as Transpose(0, 3, 1, 2) -> QuantizeLinear
        fi = ctx.float_inputs[src]
        if perm != [0, 3, 1, 2] or fi.layout != "NCHW" or fi.pads:
            raise unsupported(node, f"transpose {perm} of the float input", "feed the model NCHW or NHWC input")
        nchw = (fi.shape[0], fi.shape[3], fi.shape[1], fi.shape[2])
        ctx.float_inputs[node.output[0]] = FloatInput(fi.graph_input, "NHWC", nchw)
        return
    if not perm:
        perm = list(range(len(ctx.shape(ctx.act(node, src)))))[::-1]
    _shape_op(ctx, node, lambda x: emit_transpose(ctx, node, x, perm, node.output[0]))


def pad(ctx: Ctx, node: onnx.NodeProto) -> None:
    if attr(node, "mode", "constant") != "constant":
        raise unsupported(node, f"pad mode {attr(node, 'mode')!r}", "use constant (zero) padding")
    if opt_input(node, 3):
        raise unsupported(node, "Pad with an axes input")
    pads = attr(node, "pads") if ctx.opset < 11 else ctx.const(node, node.input[1], "pads").reshape(-1).tolist()
    pads = tuple(int(p) for p in pads)
    src = node.input[0]
    value = attr(node, "value", 0.0) if ctx.opset < 11 else None
    if value is None:
        v = opt_input(node, 2)
        value = ctx.scalar(node, v, "pad value") if v else 0.0
    if src in ctx.float_inputs and value == 0.0:  # onnxruntime's QOperator leaves a leading Pad in float
        fi = ctx.float_inputs[src]
        ctx.float_inputs[node.output[0]] = FloatInput(fi.graph_input, fi.layout, fi.shape, (*fi.pads, (node, pads)))
        return
    x = ctx.act(node, src)
    q = ctx.act_q(x)
    # A dequantized value pads with a float (real 0 is the zero point); an int8 tensor pads with a code.
    code = q.zp + int(np.round(np.float32(value) / np.float32(q.s))) if src in ctx.float_names else int(value)
    if code != q.zp:
        raise unsupported(node, f"padding with {value} instead of the zero point", "pad with zeros")
    _shape_op(ctx, node, lambda x: emit_pad(ctx, node, x, list(pads), node.output[0]))


HANDLERS: dict[str, Handler] = {
    **{op: reshape_like for op in ("Flatten", "Reshape", "Squeeze", "Unsqueeze", "Identity")},
    "Transpose": transpose, "Pad": pad,
}
