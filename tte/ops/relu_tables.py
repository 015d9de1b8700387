"""RELU, RELU6 and LEAKY_RELU of TFLite Micro in int8, as 256-entry `lut` tables.

Like `tte.ops.activations`, each builder evaluates TFLite Micro's integer kernel on all 256 inputs:
- RELU (ReluQuantized): y = clamp(zp_out + MBQM(x - zp_in, M, S), lo, hi) with M, S from the
  float32 ratio s_in / s_out; lo = max(-128, zp_out + round(min / s_out)), hi likewise (127 when unbounded).
- RELU6 (Relu6Quantized): a clamp of the raw input to [zp_in, zp_in + round(6 / s_in)], no rescaling (the
  output keeps the input quantization).
- LEAKY_RELU (QuantizeLeakyRelu): x - zp_in >= 0 -> identity multiplier s_in / s_out, else the alpha
  multiplier alpha * s_in / s_out (both float32 ratios); + zp_out, saturated to int8.
"""

from __future__ import annotations

import numpy as np

from tte.errors import UnsupportedError
from tte.ir import Node, QParams, Tensor
from tte.quant import mbqm, quantize_multiplier, round_half_away

_ALL_INT8 = np.arange(-128, 128, dtype=np.int64)
_BOUNDS = {"relu": (0.0, None)}


def _ratio(num: float, den: float) -> tuple[int, int]:
    return quantize_multiplier(float(np.float32(num) / np.float32(den)))


def _q(f: float, q: QParams) -> int:
    return q.zp + int(round_half_away(np.float32(f) / np.float32(q.s)))


def relu_table(kind: str, in_q: QParams, out_q: QParams) -> np.ndarray:
    """RELU (requantizing) for every input code."""
    lo_f, hi_f = _BOUNDS[kind]
    m, s = _ratio(in_q.s, out_q.s)
    lo = max(-128, _q(lo_f, out_q))
    hi = 127 if hi_f is None else min(127, _q(hi_f, out_q))
    return np.clip(out_q.zp + mbqm(_ALL_INT8 - in_q.zp, m, s), lo, hi)


def relu6_table(in_q: QParams, out_q: QParams) -> np.ndarray:
    """RELU6: a clamp of the raw codes; the output must share the input quantization."""
    return np.clip(_ALL_INT8, in_q.zp, min(127, _q(6.0, in_q)))


def leaky_relu_table(alpha: float, in_q: QParams, out_q: QParams) -> np.ndarray:
    m_id, s_id = _ratio(in_q.s, out_q.s)
    m_a, s_a = quantize_multiplier(float(np.float32(in_q.s) * np.float32(alpha) / np.float32(out_q.s)))
    x = _ALL_INT8 - in_q.zp
    y = np.where(x >= 0, mbqm(x, m_id, s_id), mbqm(x, m_a, s_a)) + out_q.zp
    return np.clip(y, -128, 127)


def relu_lut_node(kind: str, name: str, x: Tensor, y: Tensor, alpha: float = 0.0) -> Node:
    """The `lut` node of a standalone RELU / RELU6 / LEAKY_RELU (attrs table, source_op and,
    for leaky_relu, alpha)."""
    for what, q in (("input", x.quant), ("output", y.quant)):
        if q is None or q.per_channel:
            raise UnsupportedError(f"int8 {what} must be quantized per tensor", node=name, op=kind,
                                   hint="re-export the model in int8")
    attrs: dict = {"source_op": kind}
    if kind == "relu6":
        if not (np.float32(x.quant.s) == np.float32(y.quant.s) and x.quant.zp == y.quant.zp):
            raise UnsupportedError("RELU6 with different input and output quantization", node=name, op=kind,
                                   hint="TFLite's int8 RELU6 keeps the input quantization")
        table = relu6_table(x.quant, y.quant)
    elif kind == "leaky_relu":
        table = leaky_relu_table(alpha, x.quant, y.quant)
        attrs["alpha"] = float(np.float32(alpha))
    elif kind in _BOUNDS:
        table = relu_table(kind, x.quant, y.quant)
    else:
        raise UnsupportedError(f"no int8 table for {kind}", node=name, op=kind)
    return Node("lut", name, (x.name,), (y.name,), {"table": tuple(int(v) for v in table), **attrs})
