"""max_pool2d: TFLite Micro's int8 MAX_POOL_2D.

The maximum of the raw int8 values over each window clipped to the image (padding never wins: TFLite starts
from -128 and visits only in-image taps), then the fused-activation clamp. Input and output share scale and
zero point; a frontend that meets another output quantization adds a requantize after the pool (exact, since
requantization is monotonic and so commutes with the maximum).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tte.ir import Graph, Node
from tte.ops import OpDef, register
from tte.ops import cases as C
from tte.ops.conv2d import out_size
from tte.quant import activation_range


def windows(node: Node, x: np.ndarray) -> np.ndarray:
    """[OH, OW, C, KH, KW] windows of x[0] (int64) with out-of-image taps set to a value below any int8."""
    kh, kw = node.attrs["kernel"]
    sh, sw = node.attrs["stride"]
    pt, pl, pb, pr = node.attrs["pad"]
    xp = np.pad(x[0].astype(np.int64), ((pt, pb), (pl, pr), (0, 0)), constant_values=-1000)
    return np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(0, 1))[::sh, ::sw]


def max_pool_reference(node: Node, graph: Graph, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    y = windows(node, inputs[0]).max(axis=(3, 4))
    lo, hi = node.attrs["act"]
    return [np.clip(y, lo, hi).astype(np.int8)[None]]


def _case(name: str, hw: tuple, c: int, k: tuple, s: tuple, pad: tuple, seed: int, act: str = "none") -> Graph:
    rng = np.random.default_rng(seed)
    zp = int(rng.integers(-20, 20))
    x = C.activation(f"{name}_x", (1, *hw, c), 0.05, zp)
    oh, ow = out_size(hw[0], k[0], s[0], pad[0], pad[2]), out_size(hw[1], k[1], s[1], pad[1], pad[3])
    y = C.activation(f"{name}_y", (1, oh, ow, c), 0.05, zp)
    return C.single_node("max_pool2d", name, [x], [y], kernel=k, stride=s, pad=pad,
                         act=activation_range(act, 0.05, zp))


def max_pool_cases() -> list[Graph]:
    return [
        _case("maxpool2x2", (6, 6), 4, (2, 2), (2, 2), (0, 0, 0, 0), 0),
        _case("maxpool2x2_odd", (7, 5), 3, (2, 2), (2, 2), (0, 0, 0, 0), 1),
        _case("maxpool3x3_same", (7, 7), 3, (3, 3), (2, 2), (1, 1, 1, 1), 2),
        _case("maxpool3x3_s1_relu", (5, 6), 5, (3, 3), (1, 1), (1, 1, 1, 1), 3, "relu"),
        _case("maxpool2x3_same_relu6", (6, 7), 2, (2, 3), (1, 2), (0, 1, 1, 1), 4, "relu6"),
    ]


def max_pool_macs(node: Node, graph: Graph) -> int:
    kh, kw = node.attrs["kernel"]
    return graph[node.outputs[0]].size * kh * kw


register(OpDef("max_pool2d", max_pool_reference, max_pool_macs, max_pool_cases))
