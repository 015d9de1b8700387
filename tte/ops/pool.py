"""avg_pool2d and mean (global average pooling), as TFLite Micro computes them in int8."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tte.ir import Graph, Node
from tte.ops import OpDef, register
from tte.ops import cases as C
from tte.ops.conv2d import out_size
from tte.quant import activation_range, mbqm, quantize_multiplier


def _c_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """C integer division (truncates toward zero)."""
    q = np.abs(a) // np.abs(b)
    return np.where((a < 0) != (b < 0), -q, q)


def avg_pool_reference(node: Node, graph: Graph, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Sum of the raw int8 values over the window clipped to the image, divided (rounded) by the tap count."""
    x = inputs[0][0].astype(np.int64)
    kh, kw = node.attrs["kernel"]
    sh, sw = node.attrs["stride"]
    pt, pl, pb, pr = node.attrs["pad"]
    h, w, _ = x.shape
    xp = np.pad(x, ((pt, pb), (pl, pr), (0, 0)))
    ones = np.pad(np.ones((h, w), np.int64), ((pt, pb), (pl, pr)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(0, 1))[::sh, ::sw]
    cnt = np.lib.stride_tricks.sliding_window_view(ones, (kh, kw))[::sh, ::sw].sum(axis=(2, 3))[..., None]
    acc = win.sum(axis=(3, 4))
    half = cnt // 2
    y = np.where(acc > 0, _c_div(acc + half, cnt), _c_div(acc - half, cnt))
    lo, hi = node.attrs["act"]
    return [np.clip(y, lo, hi).astype(np.int8)[None]]


def mean_params(s_in: float, s_out: float, n: int) -> tuple[int, int]:
    """TFLite Micro MEAN: fold 1/N into the multiplier (M' = (M << sh) / N, S' = S - sh)."""
    m, s = quantize_multiplier(float(np.float64(np.float32(s_in)) / np.float64(np.float32(s_out))))
    sh = min(int(np.floor(np.log2(n))), 32, 31 + s)
    m2 = int((m << sh) // n) if m >= 0 else -int(((-m) << sh) // n)
    return m2, s - sh


def mean_reference(node: Node, graph: Graph, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    qx, qy = graph[node.inputs[0]].quant, graph[node.outputs[0]].quant
    axes = tuple(node.attrs["axes"])
    x = inputs[0].astype(np.int64)
    n = int(np.prod([x.shape[a] for a in axes]))
    total = x.sum(axis=axes, keepdims=True) - qx.zp * n
    # TFLite Micro's source (reduce_common.cc, EvalIntegerMean) has a plain-division path (raw sum / N,
    # truncating) when input and output quantization are equal, but the tflite-micro build we test against
    # rescales through the multiplier path below in that case too (checked bit for bit by the mean_same_q cases
    # of tests/test_ops_oracle.py; the plain division differed in 1 LSB on most outputs). We follow the oracle.
    m, s = mean_params(qx.s, qy.s, n)
    y = np.clip(mbqm(total, m, s) + qy.zp, -128, 127).astype(np.int8)
    return [y.reshape(graph[node.outputs[0]].shape)]


def _pool_case(name: str, hw: tuple, c: int, k: tuple, s: tuple, pad: tuple, seed: int, act: str = "none") -> Graph:
    rng = np.random.default_rng(seed)
    zp = int(rng.integers(-10, 10))
    x = C.activation(f"{name}_x", (1, *hw, c), 0.05, zp)
    oh, ow = out_size(hw[0], k[0], s[0], pad[0], pad[2]), out_size(hw[1], k[1], s[1], pad[1], pad[3])
    y = C.activation(f"{name}_y", (1, oh, ow, c), 0.05, zp)
    return C.single_node("avg_pool2d", name, [x], [y], kernel=k, stride=s, pad=pad, act=activation_range(act, 0.05, zp))


def avg_pool_cases() -> list[Graph]:
    return [
        _pool_case("avgpool2x2", (6, 6), 4, (2, 2), (2, 2), (0, 0, 0, 0), 0),
        _pool_case("avgpool3x3_same", (7, 7), 3, (3, 3), (2, 2), (1, 1, 1, 1), 1),
        _pool_case("avgpool3x3_s1", (5, 5), 2, (3, 3), (1, 1), (1, 1, 1, 1), 2),
        # Edge windows of SAME padding hold 2 or 4 taps: the rounding divides by the clipped count.
        _pool_case("avgpool2x3_same_relu_n1", (6, 7), 5, (2, 3), (1, 2), (0, 1, 1, 1), 3, "relu_n1_to_1"),
    ]


def _mean_case(name: str, hw: tuple, c: int, s_in: float, s_out: float, keepdims: bool, seed: int,
               same_zp: bool = False) -> Graph:
    """`same_zp` with s_in == s_out: equal quantizations, where TFLM's source has a special path (see
    mean_reference; the tflite-micro oracle rescales as usual)."""
    rng = np.random.default_rng(seed)
    x = C.activation(f"{name}_x", (1, *hw, c), s_in, int(rng.integers(-20, 20)))
    zp_out = x.quant.zp if same_zp else int(rng.integers(-20, 20))
    y = C.activation(f"{name}_y", (1, 1, 1, c) if keepdims else (1, c), s_out, zp_out)
    return C.single_node("mean", name, [x], [y], axes=(1, 2), keepdims=keepdims)


def mean_cases() -> list[Graph]:
    return [
        _mean_case("mean_4x4", (4, 4), 8, 0.05, 0.03, True, 0),
        _mean_case("mean_7x5", (7, 5), 6, 0.02, 0.02, False, 1),
        _mean_case("mean_3x3", (3, 3), 10, 0.1, 0.05, True, 2),
        _mean_case("mean_same_q", (5, 5), 7, 0.04, 0.04, False, 3, same_zp=True),
        _mean_case("mean_same_q_keepdims", (6, 4), 5, 0.1, 0.1, True, 4, same_zp=True),
    ]


def avg_pool_macs(node: Node, graph: Graph) -> int:
    kh, kw = node.attrs["kernel"]
    return graph[node.outputs[0]].size * kh * kw


register(OpDef("avg_pool2d", avg_pool_reference, avg_pool_macs, avg_pool_cases))
register(OpDef("mean", mean_reference, lambda n, g: g[n.inputs[0]].size, mean_cases))
