"""gemmlowp's fixed-point math (fixedpoint/fixedpoint.h), as TFLite Micro's int8 kernels use it.

Values are raw int32 (or int16) fixed-point numbers held in int64 numpy arrays; `ib` is the number of integer
bits of the format (Q<ib>.<31-ib>). Every operation reproduces the C++ integer semantics bit for bit: int32
additions wrap, multiplications are SaturatingRoundingDoublingHighMul, rescales saturate (left) or round
(right). Works element-wise on arrays of any shape, scalars included.

Used by the LOGISTIC/TANH tables (tte/ops/activations.py), HARD_SWISH (int16 helpers) and SOFTMAX.
"""

from __future__ import annotations

import numpy as np

from tte.quant import INT32_MAX, INT32_MIN, rdbpot, srdhm, wrap_int32

INT16_MIN, INT16_MAX = -(2**15), 2**15 - 1

# Raw constants of gemmlowp (Q0.31 unless named): exp(-1/8), 1/3, 48/17 and -32/17 (both Q2.29).
_EXP_MINUS_ONE_EIGHTH = 1895147668
_ONE_THIRD = 715827883
_48_OVER_17 = 1515870810
_NEG_32_OVER_17 = -1010580540
# exp(-2^k) in Q0.31 for the barrel shifter, k = -2 .. 4.
_EXP_BARREL = ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308), (2, 39332535), (3, 720401), (4, 242))


def _i64(x: np.ndarray | int) -> np.ndarray:
    return np.asarray(x, dtype=np.int64)


def add(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    """int32 addition (wraps, as the C++ does in practice)."""
    return wrap_int32(_i64(a) + _i64(b))


def sub(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    return wrap_int32(_i64(a) - _i64(b))


def saturating_shift_left(x: np.ndarray, exponent: int) -> np.ndarray:
    """SaturatingRoundingMultiplyByPOT<exponent > 0> on int32: x * 2^e, saturated to the int32 range."""
    x = _i64(x)
    if exponent <= 0:
        return rdbpot(x, -exponent) if exponent < 0 else x
    threshold = (1 << (31 - exponent)) - 1
    out = np.where(x > threshold, INT32_MAX, x << exponent)
    return np.where(x < -threshold, INT32_MIN, out)


def rescale(x: np.ndarray, ib_src: int, ib_dst: int) -> np.ndarray:
    """Rescale<ib_dst>(FixedPoint<int32, ib_src>): change the integer bits, saturating or rounding."""
    return saturating_shift_left(x, ib_src - ib_dst)


def rounding_half_sum(a: np.ndarray, b: np.ndarray | int) -> np.ndarray:
    """(a + b) / 2 rounded half away from zero, C truncating division."""
    s = _i64(a) + _i64(b)
    t = s + np.where(s >= 0, 1, -1)
    return np.where(t >= 0, t // 2, -((-t) // 2))


def exp_on_interval_between_negative_one_quarter_and_0_excl(a: np.ndarray) -> np.ndarray:
    """exp(a) for a in [-1/4, 0), Q0.31 in and out: a 4th-order Taylor expansion around -1/8."""
    x = add(a, 1 << 28)
    x2 = srdhm(x, x)
    x3 = srdhm(x2, x)
    x4 = srdhm(x2, x2)
    x4_over_4 = rdbpot(x4, 2)
    poly = rdbpot(add(srdhm(add(x4_over_4, x3), _ONE_THIRD), x2), 1)
    return add(_EXP_MINUS_ONE_EIGHTH, srdhm(_EXP_MINUS_ONE_EIGHTH, add(x, poly)))


def exp_on_negative_values(a: np.ndarray, ib: int) -> np.ndarray:
    """exp(a) for a <= 0 in Q<ib>, result Q0.31 (exp(0) = INT32_MAX)."""
    a = _i64(a)
    fb = 31 - ib
    quarter = 1 << (fb - 2)
    a_mod_quarter_minus_quarter = sub(a & (quarter - 1), quarter)
    result = exp_on_interval_between_negative_one_quarter_and_0_excl(rescale(a_mod_quarter_minus_quarter, ib, 0))
    remainder = sub(a_mod_quarter_minus_quarter, a)
    # Multiply by exp(-2^k) for every bit k of the (multiple of 1/4) remainder; formats too narrow skip high k.
    for k, multiplier in _EXP_BARREL:
        if ib > k:
            bit = (remainder & (1 << (fb + k))) != 0
            result = np.where(bit, srdhm(result, multiplier), result)
    if ib > 5:
        result = np.where(a < -(1 << (36 - ib)), 0, result)
    return np.where(a == 0, INT32_MAX, result)


def _newton_reciprocal_of_half_denominator(half_denominator: np.ndarray) -> np.ndarray:
    """x ~= 1 / half_denominator in Q2.29, three Newton-Raphson steps from 48/17 - 32/17 * d."""
    x = add(_48_OVER_17, srdhm(half_denominator, _NEG_32_OVER_17))
    for _ in range(3):
        one_minus_dx = sub(1 << 29, srdhm(half_denominator, x))
        x = add(x, rescale(srdhm(x, one_minus_dx), 4, 2))
    return x


def one_over_one_plus_x_for_x_in_0_1(a: np.ndarray) -> np.ndarray:
    """1 / (1 + a) for a in [0, 1], Q0.31 in and out."""
    x = _newton_reciprocal_of_half_denominator(rounding_half_sum(a, INT32_MAX))
    return rescale(x, 1, 0)  # ExactMulByPot<-1>: Q2.29 -> Q1.30 on the same raw value, then to Q0.31


def one_minus_x_over_one_plus_x_for_x_in_0_1(a: np.ndarray) -> np.ndarray:
    """(1 - a) / (1 + a) for a in [0, 1], Q0.31 in and out."""
    x = _newton_reciprocal_of_half_denominator(rounding_half_sum(a, INT32_MAX))
    return rescale(sub(x, 1 << 29), 2, 0)


def logistic(a: np.ndarray, ib: int) -> np.ndarray:
    """1 / (1 + exp(-a)) for a in Q<ib>, result Q0.31."""
    a = _i64(a)
    positive = a > 0
    abs_a = np.where(positive, a, -a)
    result_if_positive = one_over_one_plus_x_for_x_in_0_1(exp_on_negative_values(-abs_a, ib))
    result_if_negative = sub(INT32_MAX, result_if_positive)
    out = np.where(positive, result_if_positive, result_if_negative)
    return np.where(a == 0, 1 << 30, out)


def tanh(a: np.ndarray, ib: int) -> np.ndarray:
    """tanh(a) for a in Q<ib>, result Q0.31; exp(2n) is taken on n = -|a| read as Q<ib + 1>."""
    a = _i64(a)
    negative = a < 0
    n = np.where(negative, a, -a)
    t = one_minus_x_over_one_plus_x_for_x_in_0_1(exp_on_negative_values(n, ib + 1))
    return np.where(a == 0, 0, np.where(negative, -t, t))


def reciprocal(x: np.ndarray, x_integer_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """TFLite's GetReciprocal: (1 / x as Q0.31 of x normalized to [1, 2), num_bits_over_unit), x > 0."""
    x = _i64(x)
    headroom_plus_one = 32 - _bit_length(x)  # count of leading zeros of the uint32
    num_bits_over_unit = x_integer_bits - headroom_plus_one
    shifted_sum_minus_one = ((x << headroom_plus_one) & 0xFFFFFFFF) - (1 << 31)
    return one_over_one_plus_x_for_x_in_0_1(shifted_sum_minus_one), num_bits_over_unit


def _bit_length(x: np.ndarray) -> np.ndarray:
    """Bit length of non-negative int64 values (exact, no float rounding)."""
    x = _i64(x)
    n = np.zeros(x.shape, dtype=np.int64)
    for step in (32, 16, 8, 4, 2, 1):
        big = (x >> step) != 0
        n = np.where(big, n + step, n)
        x = np.where(big, x >> step, x)
    return n + (x != 0)


# int16 primitives (HARD_SWISH computes on int16 values).


def wrap_int16(x: np.ndarray | int) -> np.ndarray:
    """Two's-complement narrowing to int16 (what storing an int into an int16_t does)."""
    return ((_i64(x) + (1 << 15)) & 0xFFFF) - (1 << 15)


def srdhm16(a: np.ndarray, b: np.ndarray | int) -> np.ndarray:
    """gemmlowp SaturatingRoundingDoublingHighMul on int16."""
    a, b = _i64(a), _i64(b)
    p = a * b
    s = p + np.where(p >= 0, 1 << 14, 1 - (1 << 14))
    q = wrap_int16(np.where(s >= 0, s >> 15, -((-s) >> 15)))
    return np.where((a == INT16_MIN) & (b == INT16_MIN), INT16_MAX, q)


def sdhm16(a: np.ndarray, b: np.ndarray | int) -> np.ndarray:
    """TFLite's SaturatingDoublingHighMul on int16: like srdhm16 but rounding toward zero (SQDMULH)."""
    a, b = _i64(a), _i64(b)
    p = a * b
    q = wrap_int16(np.where(p >= 0, p >> 15, -((-p) >> 15)))
    return np.where((a == INT16_MIN) & (b == INT16_MIN), INT16_MAX, q)


def rdbpot16(x: np.ndarray, exponent: int) -> np.ndarray:
    """gemmlowp RoundingDivideByPOT on int16, including its exponent >= 16 behaviour.

    The mask `(1 << e) - 1` is narrowed to int16, so for e >= 16 it is -1 and a non-negative x gives 1,
    a negative x gives -1 (not 0): reproduced because TFLite Micro computes exactly this.
    """
    x = _i64(x)
    mask = int(wrap_int16((1 << exponent) - 1))
    remainder = wrap_int16(x & mask)
    threshold = wrap_int16((mask >> 1) + (x < 0))
    return wrap_int16((x >> exponent) + (remainder > threshold))


def saturating_left_shift16(x: np.ndarray, amount: int) -> np.ndarray:
    """TFLite's SaturatingLeftShift for HARD_SWISH: x * 2^amount clamped to int16."""
    return np.clip(_i64(x) * (1 << amount), INT16_MIN, INT16_MAX)
