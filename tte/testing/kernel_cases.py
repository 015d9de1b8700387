"""Seeded random single-node graphs for the C kernel tests: random shapes and the quantization corners.

Each generator draws one graph for its op from a numpy Generator: random sizes, kernel sizes 1/3/5/7, strides 1/2,
asymmetric pads, depthwise multipliers, per-tensor and per-channel weights, zero points at -128 and 127, scale
ratios that make the requantization shift go left as well as far right (down to a zero multiplier), biases near
the int32 limits (the bias addition wraps) or absent, and every kind of output clamp.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tte.ir import Graph, QParams, Tensor
from tte.ops import cases as C
from tte.ops.conv2d import out_size
from tte.quant import activation_range

Rng = np.random.Generator


def zero_point(rng: Rng) -> int:
    return int(rng.choice([-128, 127, int(rng.integers(-128, 128))], p=[0.2, 0.2, 0.6]))


def scale(rng: Rng, lo: float = -4.0, hi: float = 0.0) -> float:
    return float(np.float32(10.0 ** rng.uniform(lo, hi)))


def act(rng: Rng, s_out: float, zp_out: int) -> tuple[int, int]:
    kind = rng.choice(["none", "relu", "relu6", "range"], p=[0.4, 0.25, 0.2, 0.15])
    if kind == "range":
        lo = int(rng.integers(-128, 1))
        return lo, int(rng.integers(lo + 30, 128))
    return activation_range(str(kind), s_out, zp_out)


def weights(rng: Rng, name: str, shape: tuple[int, ...], axis: int, per_channel: bool, zp: int = 0) -> Tensor:
    lo = -128 if zp else -127
    data = rng.integers(lo, 128, size=shape)
    if per_channel:
        q = QParams(rng.uniform(0.001, 0.05, size=shape[axis]).astype(np.float32), np.zeros(shape[axis]), axis)
    else:
        q = QParams(np.float32(rng.uniform(0.001, 0.05)), zp)
    return Tensor(name, shape, "int8", q, data)


def bias(rng: Rng, name: str, n: int, s_in: float, w: Tensor) -> Tensor | None:
    kind = rng.choice(["normal", "extreme", "none"], p=[0.7, 0.15, 0.15])
    if kind == "none":
        return None
    if kind == "extreme":
        edge = rng.choice([-(2**31), 2**31 - 1], size=n)
        data = edge - np.sign(edge) * rng.integers(0, 5000, size=n)
    else:
        data = rng.integers(-3000, 3000, size=n)
    s = (np.float64(s_in) * np.broadcast_to(np.asarray(w.quant.scale, np.float64), (n,))).astype(np.float32)
    return Tensor(name, (n,), "int32", QParams(s, np.zeros(n), 0 if n > 1 else None), data)


def out_scale(rng: Rng, x: Tensor, w: Tensor, fan_in: int) -> float:
    """Mostly a realistic output scale (~40 LSB of spread for uniform inputs); sometimes one far off either way,
    so that the multiplier's shift is positive (left) or below -31 (a zero multiplier)."""
    x_rms = np.hypot(74.0, x.quant.zp + 0.5)  # uniform int8 minus the zero point
    typical = x.quant.s * x_rms * 73.0 * float(np.mean(w.quant.scale)) * np.sqrt(fan_in) / 40.0
    kind = rng.choice(["typical", "small", "large"], p=[0.7, 0.15, 0.15])
    factor = {"typical": 1.0, "small": 10.0 ** rng.uniform(-7.0, -3.0), "large": 10.0 ** rng.uniform(3.0, 9.0)}[kind]
    return float(np.float32(typical * factor))


def _node(op: str, name: str, ins: list[Tensor | None], outs: list[Tensor], **attrs) -> Graph:
    return C.single_node(op, name, [t for t in ins if t is not None], outs, **attrs)


def _pads(rng: Rng, size: int, k: int, limit: int) -> tuple[int, int]:
    """(before, after) in [0, limit] with at least one output position."""
    before, after = (int(v) for v in rng.integers(0, limit + 1, size=2))
    return before, max(after, k - size - before)


def random_conv(rng: Rng, name: str, depthwise: bool = False) -> Graph:
    h, w = (int(v) for v in rng.integers(1, 13, size=2))
    cin = int(rng.integers(1, 21))
    k = int(rng.choice([1, 3, 5, 7]))
    stride = int(rng.choice([1, 2]))
    pt, pb = _pads(rng, h, k, k - 1)
    pl, pr = _pads(rng, w, k, k - 1)
    if k == 1 and rng.random() < 0.6:
        pt, pb, pl, pr = 0, 0, 0, 0
    x = C.activation(f"{name}_x", (1, h, w, cin), scale(rng, -3, 0), zero_point(rng))
    per_channel = rng.random() < 0.8
    if depthwise:
        mult = int(rng.choice([1, 1, 2, 3]))
        cout = cin * mult
        wt = weights(rng, f"{name}_w", (1, k, k, cout), 3, per_channel)
    else:
        mult, cout = 1, int(rng.integers(1, 13))
        wt = weights(rng, f"{name}_w", (cout, k, k, cin), 0, per_channel)
    b = bias(rng, f"{name}_b", cout, x.quant.s, wt)
    oh, ow = out_size(h, k, stride, pt, pb), out_size(w, k, stride, pl, pr)
    s_out = out_scale(rng, x, wt, k * k * (1 if depthwise else cin))
    zp_out = zero_point(rng)
    y = C.activation(f"{name}_y", (1, oh, ow, cout), s_out, zp_out)
    attrs = dict(stride=(stride, stride), pad=(pt, pl, pb, pr), act=act(rng, s_out, zp_out))
    if depthwise:
        return _node("depthwise_conv2d", name, [x, wt, b], [y], multiplier=mult, **attrs)
    return _node("conv2d", name, [x, wt, b], [y], **attrs)


def random_depthwise(rng: Rng, name: str) -> Graph:
    return random_conv(rng, name, depthwise=True)


def random_fc(rng: Rng, name: str) -> Graph:
    i, o = int(rng.integers(1, 301)), int(rng.integers(1, 41))
    batch = int(rng.choice([1, 1, 2, 3]))
    per_channel = rng.random() < 0.5
    zp_w = 0 if per_channel or rng.random() < 0.6 else int(rng.integers(-20, 21))
    shape = (batch, i) if batch > 1 or rng.random() < 0.5 else (1, 1, 1, i)
    x = C.activation(f"{name}_x", shape, scale(rng, -3, 0), zero_point(rng))
    wt = weights(rng, f"{name}_w", (o, i), 0, per_channel, zp_w)
    b = bias(rng, f"{name}_b", o, x.quant.s, wt)
    s_out, zp_out = out_scale(rng, x, wt, i), zero_point(rng)
    y = C.activation(f"{name}_y", (batch, o), s_out, zp_out)
    return _node("fully_connected", name, [x, wt, b], [y], act=act(rng, s_out, zp_out))


def _shape4(rng: Rng, hi: int = 9) -> tuple[int, int, int, int]:
    return (1, *(int(v) for v in rng.integers(1, hi, size=3)))


def random_add(rng: Rng, name: str) -> Graph:
    shape = _shape4(rng)
    a = C.activation(f"{name}_a", shape, scale(rng, -3, 0), zero_point(rng))
    b = C.activation(f"{name}_b", shape, scale(rng, -3, 0), zero_point(rng))
    s_out = float(np.float32(max(a.quant.s, b.quant.s) * 10.0 ** rng.uniform(-1.5, 1.5)))
    y = C.activation(f"{name}_y", shape, s_out, zero_point(rng))
    return _node("add", name, [a, b], [y], act=act(rng, s_out, y.quant.zp))


def random_avg_pool(rng: Rng, name: str) -> Graph:
    h, w, c = (int(v) for v in rng.integers(1, 11, size=3))
    kh, kw = (int(v) for v in rng.integers(1, 6, size=2))
    sh, sw = (int(v) for v in rng.integers(1, 4, size=2))
    pt, pb = _pads(rng, h, kh, kh - 1)
    pl, pr = _pads(rng, w, kw, kw - 1)
    s, zp = scale(rng), zero_point(rng)
    x = C.activation(f"{name}_x", (1, h, w, c), s, zp)
    y = C.activation(f"{name}_y", (1, out_size(h, kh, sh, pt, pb), out_size(w, kw, sw, pl, pr), c), s, zp)
    return _node("avg_pool2d", name, [x], [y], kernel=(kh, kw), stride=(sh, sw), pad=(pt, pl, pb, pr),
                 act=act(rng, s, zp))


def random_mean(rng: Rng, name: str) -> Graph:
    shape = _shape4(rng, 13)
    axes = [(1, 2), (1, 2), (1,), (2,), (2, 3)][int(rng.integers(0, 5))]
    keepdims = bool(rng.random() < 0.5)
    x = C.activation(f"{name}_x", shape, scale(rng, -3, 0), zero_point(rng))
    kept = tuple(1 if a in axes else d for a, d in enumerate(shape))
    out = kept if keepdims else tuple(d for a, d in enumerate(shape) if a not in axes)
    y = C.activation(f"{name}_y", out, float(np.float32(x.quant.s * 10.0 ** rng.uniform(-1.5, 1))), zero_point(rng))
    return _node("mean", name, [x], [y], axes=axes, keepdims=keepdims)


def random_pad(rng: Rng, name: str) -> Graph:
    rank = int(rng.integers(2, 5))
    shape = tuple(int(v) for v in rng.integers(1, 7, size=rank))
    pads = tuple((int(a), int(b)) for a, b in rng.integers(0, 4, size=(rank, 2)))
    zp = zero_point(rng)
    x = C.activation(f"{name}_x", shape, 0.1, zp)
    y = C.activation(f"{name}_y", tuple(d + a + b for d, (a, b) in zip(shape, pads, strict=True)), 0.1, zp)
    extra = {"value": int(rng.integers(-128, 128))} if rng.random() < 0.3 else {}
    return _node("pad", name, [x], [y], pads=pads, **extra)


def random_transpose(rng: Rng, name: str) -> Graph:
    rank = int(rng.integers(2, 5))
    shape = tuple(int(v) for v in rng.integers(1, 7, size=rank))
    perm = tuple(int(p) for p in rng.permutation(rank))
    x = C.activation(f"{name}_x", shape, 0.1, 0)
    y = C.activation(f"{name}_y", tuple(shape[p] for p in perm), 0.1, 0)
    return _node("transpose", name, [x], [y], perm=perm)


def random_requantize(rng: Rng, name: str) -> Graph:
    shape = _shape4(rng)
    s_in = scale(rng, -3, 0)
    x = C.activation(f"{name}_x", shape, s_in, zero_point(rng))
    y = C.activation(f"{name}_y", shape, float(np.float32(s_in * 10.0 ** rng.uniform(-4, 4))), zero_point(rng))
    return _node("requantize", name, [x], [y])


def random_lut(rng: Rng, name: str) -> Graph:
    shape = _shape4(rng)
    x = C.activation(f"{name}_x", shape, 0.1, zero_point(rng))
    y = C.activation(f"{name}_y", shape, 0.05, zero_point(rng))
    return _node("lut", name, [x], [y], table=tuple(int(v) for v in rng.integers(-128, 128, 256)))


def random_reshape(rng: Rng, name: str) -> Graph:
    shape = _shape4(rng)
    x = C.activation(f"{name}_x", shape, 0.1, zero_point(rng))
    y = C.activation(f"{name}_y", (1, int(np.prod(shape))), 0.1, x.quant.zp)
    return _node("reshape", name, [x], [y])


GENERATORS: dict[str, Callable[[Rng, str], Graph]] = {
    "conv2d": random_conv,
    "depthwise_conv2d": random_depthwise,
    "fully_connected": random_fc,
    "add": random_add,
    "avg_pool2d": random_avg_pool,
    "mean": random_mean,
    "pad": random_pad,
    "transpose": random_transpose,
    "requantize": random_requantize,
    "lut": random_lut,
    "reshape": random_reshape,
}


def random_case(op: str, index: int, seed: int = 2024) -> Graph:
    """The index-th random graph of `op` (deterministic)."""
    rng = np.random.default_rng([seed, sorted(GENERATORS).index(op), index])
    return GENERATORS[op](rng, f"{op}_r{index}")


def extreme_inputs(graph: Graph, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs of only -128 and 127: the largest accumulators and saturations."""
    rng = np.random.default_rng(seed)
    return {io.tensor: rng.choice(np.array([-128, 127], np.int8), size=graph[io.tensor].shape)
            for io in graph.inputs}


def _layer(name: str, op: str, hw: int, cin: int, cout: int, k: int, stride: int, seed: int) -> Graph:
    """One MobileNet-like layer: symmetric padding, full-range clamp (ReLU6 as the int8 clamp of zp -128)."""
    rng = np.random.default_rng(seed)
    x = C.activation(f"{name}_x", (1, hw, hw, cin), float(np.float32(6 / 255)), -128)
    depthwise = op == "depthwise_conv2d"
    wt = (weights(rng, f"{name}_w", (1, k, k, cin), 3, True) if depthwise
          else weights(rng, f"{name}_w", (cout, k, k, cin), 0, True))
    b = bias(rng, f"{name}_b", cin if depthwise else cout, x.quant.s, wt) or None
    pad = k // 2
    oh = out_size(hw, k, stride, pad, pad)
    s_out = out_scale(np.random.default_rng(seed + 1), x, wt, k * k * (1 if depthwise else cin))
    y = C.activation(f"{name}_y", (1, oh, oh, cin if depthwise else cout), s_out, -128)
    attrs = dict(stride=(stride, stride), pad=(pad,) * 4, act=(-128, 127))
    if depthwise:
        return _node(op, name, [x, wt, b], [y], multiplier=1, **attrs)
    return _node(op, name, [x, wt, b], [y], **attrs)


def model_like_cases() -> list[Graph]:
    """Layer shapes of the paper's MobileNet-style models (scaled down in H and W): long dot products, the
    fast requantization path, the 3x3, 5x5 and 7x7 depthwise kernels and the first 3x3 stride-2 conv."""
    rng = np.random.default_rng(5)
    x = C.activation("fc448_x", (1, 448), 0.02, -128)
    wt = weights(rng, "fc448_w", (100, 448), 0, True)
    y = C.activation("fc448_y", (1, 100), out_scale(rng, x, wt, 448), 3)
    fc = _node("fully_connected", "fc448", [x, wt, bias(rng, "fc448_b", 100, x.quant.s, wt)], [y], act=(-128, 127))
    return [
        _layer("pw16to48", "conv2d", 8, 16, 48, 1, 1, 1),
        _layer("pw48to16", "conv2d", 8, 48, 16, 1, 1, 2),
        _layer("pw8to24", "conv2d", 9, 8, 24, 1, 1, 3),
        _layer("pw96to24", "conv2d", 4, 96, 24, 1, 1, 4),
        _layer("first3x3s2", "conv2d", 16, 3, 16, 3, 2, 5),
        _layer("dw3x3s1", "depthwise_conv2d", 9, 48, 48, 3, 1, 6),
        _layer("dw3x3s2", "depthwise_conv2d", 9, 24, 24, 3, 2, 7),
        _layer("dw5x5s1", "depthwise_conv2d", 7, 40, 40, 5, 1, 8),
        _layer("dw7x7s2", "depthwise_conv2d", 9, 20, 20, 7, 2, 9),
        _layer("conv3x3c40", "conv2d", 6, 40, 8, 3, 1, 10),  # a 360-byte window
        _layer("conv7x7c16", "conv2d", 6, 16, 6, 7, 1, 11),  # 784 bytes: the path without the window buffer
        fc,
        _add("residual_same_scale", (1, 16, 16, 8), 0.05, 0.05, 0.05, (-128, 127)),
        _add("residual_mixed_relu", (1, 8, 8, 24), 0.02, 0.07, 0.06, (-20, 127)),
    ]


def _add(name: str, shape: tuple[int, ...], sa: float, sb: float, so: float, act: tuple[int, int]) -> Graph:
    a = C.activation(f"{name}_a", shape, sa, 5)
    b = C.activation(f"{name}_b", shape, sb, -7)
    y = C.activation(f"{name}_y", shape, so, -20)
    return _node("add", name, [a, b], [y], act=act)
