"""conv2d and depthwise_conv2d: TFLite Micro's per-channel int8 convolutions (reference_integer_ops).

acc = sum w * (x - zp_in) over taps inside the image (padding with zp_in contributes 0), acc += bias,
y = MBQM(acc, M[oc], shift[oc]) + zp_out, clamped to act. Depthwise: output channel oc = ic * M + m.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tte.ir import Graph, Node, Tensor
from tte.ops import OpDef, register
from tte.ops import cases as C
from tte.quant import activation_range, conv_multipliers, mbqm, wrap_int32


def out_size(size: int, k: int, stride: int, pad_before: int, pad_after: int) -> int:
    return (size + pad_before + pad_after - k) // stride + 1


def patches(node: Node, graph: Graph, x: np.ndarray, kh: int, kw: int) -> np.ndarray:
    """(x - zp_in) as sliding windows [OH, OW, KH, KW, C] in float64 (exact for int8 sums of < 2^37 terms)."""
    zp = graph[node.inputs[0]].quant.zp
    sh, sw = node.attrs["stride"]
    pt, pl, pb, pr = node.attrs["pad"]
    xc = x[0].astype(np.float64) - zp
    xp = np.pad(xc, ((pt, pb), (pl, pr), (0, 0)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(0, 1))  # [OH', OW', C, KH, KW]
    win = win[::sh, ::sw]
    return np.moveaxis(win, 2, 4)  # [OH, OW, KH, KW, C]


def requantize_acc(node: Node, graph: Graph, acc: np.ndarray, s_w: np.ndarray) -> np.ndarray:
    """Per-channel requantization of an int32 accumulator (last axis = output channel) to int8."""
    x, y = graph[node.inputs[0]], graph[node.outputs[0]]
    m, sh = conv_multipliers(x.quant.s, s_w, y.quant.s)
    if len(node.inputs) > 2 and node.inputs[2]:
        acc = wrap_int32(acc + graph[node.inputs[2]].data.astype(np.int64))
    out = mbqm(acc, m, sh) + y.quant.zp
    lo, hi = node.attrs["act"]
    return np.clip(out, lo, hi).astype(np.int8)


def conv2d_reference(node: Node, graph: Graph, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    x = inputs[0]
    w = graph[node.inputs[1]]
    o, kh, kw, _ = w.shape
    p = patches(node, graph, x, kh, kw)
    oh, ow = p.shape[:2]
    acc = p.reshape(oh * ow, -1) @ w.data.reshape(o, -1).T.astype(np.float64)
    acc = acc.astype(np.int64).reshape(1, oh, ow, o)
    return [requantize_acc(node, graph, acc, w.quant.scale)]


def depthwise_reference(node: Node, graph: Graph, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    x = inputs[0]
    w = graph[node.inputs[1]]
    _, kh, kw, co = w.shape
    mult = node.attrs["multiplier"]
    p = patches(node, graph, x, kh, kw)  # [OH, OW, KH, KW, C]
    p = np.repeat(p, mult, axis=4)  # channel ic*mult + m reads input channel ic
    acc = np.einsum("hwijc,ijc->hwc", p, w.data[0].astype(np.float64))
    return [requantize_acc(node, graph, acc.astype(np.int64)[None], w.quant.scale)]


def conv2d_macs(node: Node, graph: Graph) -> int:
    w, y = graph[node.inputs[1]], graph[node.outputs[0]]
    return int(np.prod(y.shape) * np.prod(w.shape[1:]))


def depthwise_macs(node: Node, graph: Graph) -> int:
    w, y = graph[node.inputs[1]], graph[node.outputs[0]]
    return int(np.prod(y.shape) * w.shape[1] * w.shape[2])


def case_out_scale(s_in: float, w: Tensor, fan_in: int) -> float:
    """An output scale for random test inputs: about 50 LSB of standard deviation, so that the cases exercise
    the rounding of unsaturated values as well as the clamps (a uniform int8 input has a std of ~74 LSB)."""
    w_real = w.data.astype(np.float64) * np.asarray(w.quant.scale, np.float64).reshape(
        [-1 if a == (w.quant.axis or 0) else 1 for a in range(len(w.shape))])
    std = s_in * 74.0 * float(np.sqrt(np.mean(w_real**2))) * np.sqrt(fan_in)
    return float(f"{std / 50:.3g}")


def _conv_case(name: str, hw: tuple[int, int], cin: int, cout: int, k: int, stride: int, pad: tuple, act: str,
               depthwise: bool = False, mult: int = 1, seed: int = 0) -> Graph:
    """One conv node; `act` names a fused activation, so that the clamp is one TFLite can express."""
    rng = np.random.default_rng(seed)
    x = C.activation(f"{name}_x", (1, *hw, cin), 0.05, int(rng.integers(-20, 20)))
    if depthwise:
        cout = cin * mult
        w = C.conv_weights(f"{name}_w", (1, k, k, cout), 3, rng)
    else:
        w = C.conv_weights(f"{name}_w", (cout, k, k, cin), 0, rng)
    b = C.bias(f"{name}_b", cout, x.quant.s, w.quant.scale, rng)
    oh = out_size(hw[0], k, stride, pad[0], pad[2])
    ow = out_size(hw[1], k, stride, pad[1], pad[3])
    fan_in = k * k * (1 if depthwise else cin)
    y = C.activation(f"{name}_y", (1, oh, ow, cout), case_out_scale(x.quant.s, w, fan_in), int(rng.integers(-10, 10)))
    attrs = dict(stride=(stride, stride), pad=pad, act=activation_range(act, y.quant.s, y.quant.zp))
    if depthwise:
        return C.single_node("depthwise_conv2d", name, [x, w, b], [y], multiplier=mult, **attrs)
    return C.single_node("conv2d", name, [x, w, b], [y], **attrs)


def conv2d_cases() -> list[Graph]:
    return [
        _conv_case("conv3x3_s1", (8, 8), 3, 8, 3, 1, (1, 1, 1, 1), "none"),
        _conv_case("conv3x3_s2_relu6", (9, 9), 4, 6, 3, 2, (1, 1, 1, 1), "relu6", seed=1),
        _conv_case("conv1x1", (5, 5), 16, 8, 1, 1, (0, 0, 0, 0), "none", seed=2),
        _conv_case("conv5x5_valid_relu", (10, 7), 2, 3, 5, 1, (0, 0, 0, 0), "relu", seed=3),
        _conv_case("conv3x3_s2_same_tf", (8, 8), 3, 4, 3, 2, (0, 0, 1, 1), "none", seed=4),
        _conv_case("conv3x3_s2_asym_pad", (8, 9), 3, 4, 3, 2, (1, 0, 2, 1), "relu_n1_to_1", seed=5),
    ]


def depthwise_cases() -> list[Graph]:
    return [
        _conv_case(f"dw{k}x{k}_s{s}", (11, 11), 8, 0, k, s, (k // 2,) * 4, "relu6" if s == 1 else "none", True, 1,
                   seed=k + s)
        for k in (3, 5, 7) for s in (1, 2)
    ] + [_conv_case("dw3x3_mult2", (6, 6), 3, 0, 3, 1, (1, 1, 1, 1), "relu_n1_to_1", True, 2, seed=9)]


register(OpDef("conv2d", conv2d_reference, conv2d_macs, conv2d_cases))
register(OpDef("depthwise_conv2d", depthwise_reference, depthwise_macs, depthwise_cases))
