"""Derivative tables for the `lut` nodes of the ONNX frontend, for training through activations.

The QDQ folding turns element-wise float functions into 256-entry int8 tables of a root tensor and forgets the
function. Here each such handler is wrapped: after it ran, its new `lut` node gets the attribute `deriv`, 256
float32 values: d(real output) / d(real root) at each root code (x + 128), the derivative of the float function
at the dequantized input, chained through earlier tables of the same root (each evaluated at its quantized
value, i.e. straight through the intermediate rounding). Kinks follow PyTorch: Relu passes x > 0, Clip passes
lo <= x <= hi, HardSigmoid passes 0 < alpha x + beta < 1, LeakyRelu uses alpha for x <= 0. A table of an op
without a known derivative gets none, and training through it is refused by the gradient rule.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx

from tte.frontend.onnx_common import Ctx, Handler, attr, dequantize
from tte.frontend.onnx_layers import function_of
from tte.frontend.onnx_qdq import clip_bounds
from tte.ir import Node

Derivative = Callable[[np.ndarray], np.ndarray]
UNARY = ("Relu", "Clip", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "LeakyRelu")
BINARY = ("Add", "Sub", "Mul", "Div")


def float_derivative(ctx: Ctx, node: onnx.NodeProto, op: str) -> Derivative | None:
    """f'(x) in float64 of the element-wise activation `op` (node attributes as in onnx_qdq.float_function)."""
    if op == "Relu":
        return lambda x: (x > 0).astype(np.float64)
    if op == "Clip":
        lo, hi = clip_bounds(ctx, node)
        return lambda x: ((x >= lo) & (x <= hi)).astype(np.float64)
    if op == "Sigmoid":
        return lambda x: (s := 1.0 / (1.0 + np.exp(-x))) * (1.0 - s)
    if op == "Tanh":
        return lambda x: 1.0 - np.tanh(x) ** 2
    if op == "HardSigmoid":
        alpha, beta = float(np.float32(attr(node, "alpha", 0.2))), float(np.float32(attr(node, "beta", 0.5)))
        return lambda x: np.where((alpha * x + beta > 0) & (alpha * x + beta < 1), alpha, 0.0)
    if op == "HardSwish":
        return lambda x: np.where(x < -3, 0.0, np.where(x > 3, 1.0, x / 3 + 0.5))
    if op == "LeakyRelu":
        alpha = float(np.float32(attr(node, "alpha", 0.01)))
        return lambda x: np.where(x > 0, 1.0, alpha)
    return None


def _chain(ctx: Ctx, x: str, nodes: list[Node]) -> tuple[str, np.ndarray, np.ndarray] | None:
    """(root, real values of x per root code, d x / d root per root code) or None when unknown."""
    root, codes = function_of(ctx, x)
    value = dequantize(codes, ctx.act_q(x)).astype(np.float64)
    if root == x:
        return root, value, np.ones(256)
    maker = next((n for n in reversed(nodes) if x in n.outputs), None)
    if maker is None or maker.op != "lut" or "deriv" not in maker.attrs:
        return None
    return root, value, np.asarray(maker.attrs["deriv"], np.float64)


def _operand(ctx: Ctx, name: str, nodes: list[Node]) -> tuple[str | None, np.ndarray, np.ndarray] | None:
    """An input as (root, values, d/droot), or (None, constant, 0) for a scalar constant."""
    if ctx.is_const(name):
        v = ctx.qconsts[name].real() if name in ctx.qconsts else ctx.consts[name]
        return None, np.full(256, float(np.asarray(v, np.float64).reshape(-1)[0])), np.zeros(256)
    return _chain(ctx, ctx.acts[name], nodes)


def _binary_partials(op: str, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(all="ignore"):
        if op == "Add":
            return np.ones_like(a), np.ones_like(b)
        if op == "Sub":
            return np.ones_like(a), -np.ones_like(b)
        if op == "Mul":
            return b, a
        return 1.0 / b, -a / (b * b)  # Div


def lut_derivative(ctx: Ctx, node: onnx.NodeProto, nodes: list[Node]) -> np.ndarray | None:
    """d(output)/d(root) per root code for the table `node` just became, or None."""
    op = node.op_type.removeprefix("QLinear")
    if op in UNARY:
        fn = float_derivative(ctx, node, op)
        chain = _chain(ctx, ctx.acts[node.input[0]], nodes)
        if fn is None or chain is None:
            return None
        _, value, dx = chain
        return fn(value) * dx
    if op in BINARY:
        ia, ib = (0, 3) if node.op_type.startswith("QLinear") else (0, 1)
        a, b = _operand(ctx, node.input[ia], nodes), _operand(ctx, node.input[ib], nodes)
        if a is None or b is None:
            return None
        pa, pb = _binary_partials(op, a[1], b[1])
        return pa * a[2] + pb * b[2]
    return None


def _wrap(handler: Handler) -> Handler:
    def run(ctx: Ctx, node: onnx.NodeProto) -> None:
        start = len(ctx.nodes)
        handler(ctx, node)
        for i in range(start, len(ctx.nodes)):
            n = ctx.nodes[i]
            if n.op == "lut" and "deriv" not in n.attrs:
                d = lut_derivative(ctx, node, ctx.nodes[:i])
                if d is not None and np.all(np.isfinite(d)):
                    ctx.nodes[i] = n.with_attrs(deriv=tuple(float(v) for v in d.astype(np.float32)))

    run.__name__ = getattr(handler, "__name__", "handler")
    return run


def with_derivatives(handlers: dict[str, Handler]) -> dict[str, Handler]:
    """`handlers` with every table-emitting one wrapped to attach `deriv` to its lut nodes."""
    ops = {*UNARY, *BINARY, *(f"QLinear{op}" for op in (*UNARY, *BINARY))}
    return {op: _wrap(h) if op in ops else h for op, h in handlers.items()}
