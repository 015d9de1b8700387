"""Fused gradient + update ops: they compute a parameter's gradient and apply the update in place.

int8 layers, QAS (DESIGN.md 4.4). With g the gradient sum of one parameter element (below) and f[o] its
per-output-channel factor (a compile-time constant, node attribute `factor`):
    delta = -((lr * g) * f[o]);  q_new = saturate(q + round(delta))
rounded `stochastic` (floor(delta + u), u a xorshift32 draw) or `nearest` (half away from zero), see fp32.py;
weights saturate to [-127, 127], biases to int32.
- bias: g[o] = sum over output positions (raster order) of dacc[p, o] = dL/db_real;
  QAS f = 1 / (s_x s_w[o]); without QAS (SGD on the integer values, the paper's ablation) f = s_x s_w[o].
- weights: g[o, kh, kw, i] = sum over output positions p (raster order) of dacc[p, o] * (float)(x_q - zp_x) at
  the tap (taps outside the image skipped), so dL/dw_real = g * s_x;
  QAS f = s_x / s_w[o]; without QAS f = s_x * s_w[o] (the gradient of the integer weight, lr * s_w^2 smaller).
Only the trained input channels (attribute `channels`, ascending) are computed and written. Stochastic rounding
draws one number per written element, in row-major order of the written sub-tensor (bias: o ascending; conv:
o, kh, kw, channel; depthwise: kh, kw, written channel; fully connected: o, channel), the ops in schedule order.

fp32 head (plain SGD, no rounding): w[o, i] -= lr * (dy[o] * x_real[i]); b[o] -= lr * dy[o].
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tte.ir import Graph, Node
from tte.ops import OpDef, register
from tte.ops.conv2d import patches
from tte.quant import INT32_MAX, INT32_MIN
from tte.train.fp32 import F32, Xorshift32, dequantize, f32, ordered_sum, round_update

WEIGHT_UPDATE_OPS = ("conv2d_weight_update", "depthwise_conv2d_weight_update", "fully_connected_weight_update")
_CHUNK = 1 << 21


def update_factors(s_x: float, s_w: np.ndarray, kind: str, qas: bool) -> tuple[float, ...]:
    """The per-channel factor f[o] of a 'weight' or 'bias' update, from float32 scales computed in double."""
    sx = np.float64(np.float32(s_x))
    sw = np.asarray(s_w, np.float32).astype(np.float64)
    if kind == "weight":
        f = sx / sw if qas else sx * sw
    else:
        f = 1.0 / (sx * sw) if qas else sx * sw
    return tuple(float(v) for v in f.astype(np.float32))


def _rng(node: Node, inputs: Sequence[np.ndarray]) -> Xorshift32 | None:
    if node.attrs["rounding"] != "stochastic":
        return None
    return Xorshift32(int(np.asarray(inputs[-1]).view(np.uint32)[0]))


def _apply(node: Node, inputs: Sequence[np.ndarray], q: np.ndarray, g: np.ndarray, factor: np.ndarray,
           lo: int, hi: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """New integer values for the written elements q (gradient g) and the advanced RNG state, if any."""
    lr = f32(inputs[3] if node.op in WEIGHT_UPDATE_OPS else inputs[2]).reshape(-1)[0]
    delta = -((lr * g) * factor)
    rng = _rng(node, inputs)
    step = round_update(delta, node.attrs["rounding"], rng)
    new = np.clip(q.astype(np.int64) + step, lo, hi)
    extra = [np.array([rng.state], np.uint32).view(np.int32)] if rng is not None else []
    return new, extra


# --- gradients (also used by tests and debugging: the same functions the updates apply) ------------------------


def bias_grad(node: Node, graph: Graph, inputs: Sequence[np.ndarray]) -> np.ndarray:
    """dL/db_real [O] (also for the fp32 head)."""
    dacc = f32(inputs[0])
    return ordered_sum(dacc.reshape(-1, dacc.shape[-1]))


def _positions(dacc: np.ndarray) -> np.ndarray:
    return f32(dacc).reshape(-1, dacc.shape[-1])  # [P, O] in raster order


def conv2d_weight_grad(node: Node, graph: Graph, inputs: Sequence[np.ndarray]) -> np.ndarray:
    """g [O, KH, KW, S] (dL/dw_real = g * s_x) for the trained input channels S."""
    x, dacc, w = inputs[0], _positions(inputs[1]), inputs[2]
    o, kh, kw, _ = w.shape
    xw = patches(node, graph, x, kh, kw).astype(np.float32)  # [OH, OW, KH, KW, S]
    xw = xw.reshape(-1, kh, kw, xw.shape[-1])
    acc = np.zeros((o, kh, kw, xw.shape[-1]), np.float32)
    step = max(1, _CHUNK // acc.size)
    for s in range(0, dacc.shape[0], step):
        acc = ordered_sum(dacc[s:s + step, :, None, None, None] * xw[s:s + step, None], init=acc)
    return acc


def depthwise_weight_grad(node: Node, graph: Graph, inputs: Sequence[np.ndarray]) -> np.ndarray:
    """g [KH, KW, S*M] for the written output channels (channel s*M + m of each trained input channel s)."""
    x, dacc, w = inputs[0], _positions(inputs[1]), inputs[2]
    _, kh, kw, _ = w.shape
    mult = int(node.attrs["multiplier"])
    cols = written_channels(node)
    xw = patches(node, graph, x, kh, kw).astype(np.float32)
    xw = np.repeat(xw.reshape(-1, kh, kw, xw.shape[-1]), mult, axis=3)  # [P, KH, KW, S*M]
    d = dacc[:, cols]
    acc = np.zeros((kh, kw, len(cols)), np.float32)
    step = max(1, _CHUNK // acc.size)
    for s in range(0, d.shape[0], step):
        acc = ordered_sum(d[s:s + step, None, None, :] * xw[s:s + step], init=acc)
    return acc


def fc_weight_grad(node: Node, graph: Graph, inputs: Sequence[np.ndarray]) -> np.ndarray:
    """g [O, S] = dacc[o] * (float)(x_q[s] - zp) (batch 1: one term); fp32 head: dy[o] * x_real[s]."""
    xq = graph[node.inputs[0]].quant
    dacc = f32(inputs[1]).reshape(-1)
    if node.op == "fully_connected_f32_weight_update":
        x = dequantize(inputs[0].reshape(-1), xq.s, xq.zp)
    else:
        x = (inputs[0].reshape(-1).astype(np.int32) - np.int32(xq.zp)).astype(np.float32)
    return dacc[:, None] * x[None, :]


def written_channels(node: Node) -> np.ndarray:
    """The weight's last-axis indices an update writes (depthwise: every output channel of a trained input)."""
    ch = np.asarray(node.attrs["channels"], np.int64)
    mult = int(node.attrs.get("multiplier", 1))
    return (ch[:, None] * mult + np.arange(mult)[None, :]).reshape(-1)


def real_gradient(node: Node, graph: Graph, inputs: Sequence[np.ndarray]) -> np.ndarray:
    """dL/d(real parameter) of what an update node writes (weights: trained channels only)."""
    if node.op in ("bias_update", "bias_update_f32"):
        return bias_grad(node, graph, inputs)
    grad = {"conv2d_weight_update": conv2d_weight_grad, "depthwise_conv2d_weight_update": depthwise_weight_grad,
            "fully_connected_weight_update": fc_weight_grad,
            "fully_connected_f32_weight_update": fc_weight_grad}[node.op](node, graph, inputs)
    if node.op == "fully_connected_f32_weight_update":
        return grad
    return grad * F32(graph[node.inputs[0]].quant.s)


# --- the update ops ---------------------------------------------------------------------------------------------


def bias_update_reference(node: Node, graph: Graph, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    b = inputs[1]
    g = bias_grad(node, graph, inputs)
    new, extra = _apply(node, inputs, b, g, f32(node.attrs["factor"]), INT32_MIN, INT32_MAX)
    return [new.astype(np.int32), *extra]


def _weight_update(node: Node, graph: Graph, inputs: Sequence[np.ndarray], g: np.ndarray,
                   index: tuple, factor: np.ndarray) -> list[np.ndarray]:
    w = inputs[2]
    new, extra = _apply(node, inputs, w[index], g, factor, -127, 127)
    out = w.copy()
    out[index] = new.astype(np.int8)
    return [out, *extra]


def conv2d_weight_update_reference(node: Node, graph: Graph, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    g = conv2d_weight_grad(node, graph, inputs)
    ch = np.asarray(node.attrs["channels"], np.int64)
    factor = f32(node.attrs["factor"])[:, None, None, None]
    return _weight_update(node, graph, inputs, g, (slice(None), slice(None), slice(None), ch), factor)


def depthwise_weight_update_reference(node: Node, graph: Graph, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    g = depthwise_weight_grad(node, graph, inputs)
    cols = written_channels(node)
    factor = f32(node.attrs["factor"])[cols][None, None, :]
    return _weight_update(node, graph, inputs, g[None], (slice(None), slice(None), slice(None), cols), factor)


def fc_weight_update_reference(node: Node, graph: Graph, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    g = fc_weight_grad(node, graph, inputs)
    ch = np.asarray(node.attrs["channels"], np.int64)
    factor = f32(node.attrs["factor"])[:, None]
    return _weight_update(node, graph, inputs, g, (slice(None), ch), factor)


def fc_f32_weight_update_reference(node: Node, graph: Graph, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    g = fc_weight_grad(node, graph, inputs)
    lr = f32(inputs[3]).reshape(-1)[0]
    ch = np.asarray(node.attrs["channels"], np.int64)
    w = f32(inputs[2]).copy()
    w[:, ch] = w[:, ch] - lr * g
    return [w]


def bias_update_f32_reference(node: Node, graph: Graph, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    lr = f32(inputs[2]).reshape(-1)[0]
    return [f32(inputs[1]) - lr * f32(inputs[0]).reshape(-1)]


def _conv_update_macs(node: Node, graph: Graph) -> int:
    kh, kw = graph[node.inputs[2]].shape[1:3]
    return graph[node.inputs[1]].size * kh * kw * len(node.attrs["channels"])


def _dw_update_macs(node: Node, graph: Graph) -> int:
    dacc, w = graph[node.inputs[1]], graph[node.inputs[2]]
    positions = dacc.size // dacc.shape[-1]
    return positions * w.shape[1] * w.shape[2] * len(written_channels(node))


def _fc_update_macs(node: Node, graph: Graph) -> int:
    return graph[node.inputs[2]].shape[0] * len(node.attrs["channels"])


def _register() -> None:
    register(OpDef("bias_update", bias_update_reference))
    register(OpDef("conv2d_weight_update", conv2d_weight_update_reference, _conv_update_macs))
    register(OpDef("depthwise_conv2d_weight_update", depthwise_weight_update_reference, _dw_update_macs))
    register(OpDef("fully_connected_weight_update", fc_weight_update_reference, _fc_update_macs))
    register(OpDef("fully_connected_f32_weight_update", fc_f32_weight_update_reference, _fc_update_macs))
    register(OpDef("bias_update_f32", bias_update_f32_reference))


_register()
