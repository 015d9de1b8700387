"""TFLite fixed-point building blocks, bit-exact with TFLite Micro (see shared INT8_ARITHMETIC.md).

All functions take numpy arrays (or scalars) and compute in int64 with explicit int32 saturation, so that the
numpy reference and the C runtime agree bit for bit. Python's `//` floors where C truncates: every division
here is written out so that the C semantics are explicit.
"""

from __future__ import annotations

import math

import numpy as np

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def round_half_away(x: np.ndarray | float) -> np.ndarray:
    """Round half away from zero (TFLite's TfLiteRound / std::round), unlike numpy's half-to-even."""
    x = np.asarray(x, dtype=np.float64)
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLite QuantizeMultiplier: real ~= M * 2^(shift - 31), M in [2^30, 2^31); (0, 0) for 0 or tiny."""
    if real == 0.0:
        return 0, 0
    q, e = math.frexp(real)
    m = int(round_half_away(q * (1 << 31)))
    if m == 1 << 31:
        m //= 2
        e += 1
    if e < -31:
        return 0, 0
    return m, e


def conv_multipliers(s_in: float, s_w: np.ndarray, s_out: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (M, shift) for acc scale s_in * s_w[c] -> s_out, computed in double from float32 scales."""
    ms, shs = [], []
    for sw in np.atleast_1d(np.asarray(s_w, dtype=np.float32)):
        real = float(np.float64(np.float32(s_in)) * np.float64(sw) / np.float64(np.float32(s_out)))
        m, sh = quantize_multiplier(real)
        ms.append(m)
        shs.append(sh)
    return np.array(ms, dtype=np.int64), np.array(shs, dtype=np.int64)


def srdhm(a: np.ndarray, b: np.ndarray | int) -> np.ndarray:
    """SaturatingRoundingDoublingHighMul on int32 values (as int64 arrays)."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    overflow = (a == INT32_MIN) & (b == INT32_MIN)
    # a*b fits in int64 (|a|, |b| <= 2^31), the nudge too.
    p = a * b
    nudge = np.where(p >= 0, 1 << 30, 1 - (1 << 30))
    s = p + nudge
    q = _trunc_div_pow2(s, 31)
    return np.where(overflow, INT32_MAX, q)


def _trunc_div_pow2(x: np.ndarray, e: int) -> np.ndarray:
    """x / 2^e rounded toward zero (C integer division)."""
    d = np.int64(1) << np.int64(e)
    return np.where(x >= 0, x // d, -((-x) // d))


def rdbpot(x: np.ndarray, exponent: np.ndarray | int) -> np.ndarray:
    """RoundingDivideByPOT: arithmetic shift right, ties away from zero."""
    x = np.asarray(x, dtype=np.int64)
    e = np.asarray(exponent, dtype=np.int64)
    mask = (np.int64(1) << e) - 1
    rem = x & mask
    thr = (mask >> 1) + (x < 0)
    return (x >> e) + (rem > thr)


def mbqm(x: np.ndarray, m: np.ndarray | int, shift: np.ndarray | int) -> np.ndarray:
    """MultiplyByQuantizedMultiplier (double rounding): RDBPOT(SRDHM(x << left, M), right)."""
    x = np.asarray(x, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    # TFLite multiplies x * (1 << left) in int32 (it wraps in practice); saturate to be well defined.
    xs = wrap_int32(x * (np.int64(1) << left))
    return rdbpot(srdhm(xs, m), right)


def wrap_int32(x: np.ndarray) -> np.ndarray:
    """Two's-complement wrap of int64 values to int32 range (what C's int32 arithmetic does on every target)."""
    x = np.asarray(x, dtype=np.int64)
    return ((x + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def quantize_float(x: np.ndarray, scale: float, zero_point: int, qmin: int = -128, qmax: int = 127) -> np.ndarray:
    """TFLite QUANTIZE float -> int8: clamp(round_half_away(x / (float)scale) + zp); the division in float32."""
    x = np.asarray(x, dtype=np.float32)
    q = round_half_away(x / np.float32(scale)) + zero_point
    return np.clip(q, qmin, qmax).astype(np.int8)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return (np.asarray(q, dtype=np.float32) - np.float32(zero_point)) * np.float32(scale)


def activation_range(act: str, scale: float, zero_point: int) -> tuple[int, int]:
    """The int8 clamp of a fused activation ('none', 'relu', 'relu6', 'relu_n1_to_1')."""
    # TFLite quantizes the bounds as zp + round(f / scale) with f and scale in float32.
    def q(f: float) -> int:
        return zero_point + int(round_half_away(np.float32(f) / np.float32(scale)))

    if act == "none":
        return -128, 127
    if act == "relu":
        return max(-128, zero_point), 127
    if act == "relu6":
        return max(-128, zero_point), min(127, q(6.0))
    if act == "relu_n1_to_1":
        return max(-128, q(-1.0)), min(127, q(1.0))
    raise ValueError(f"unknown activation {act}")
