"""Float32 arithmetic of the train step, written so that a C runtime can reproduce it bit for bit.

Rules the C code must follow (and this module follows in numpy):
- every value is an IEEE single; every `a * b` and `a + b` is rounded to single on its own (`-ffp-contract=off`:
  no fused multiply-add);
- a sum is accumulated left to right from 0.0 in the order each caller documents (`ordered_sum`), never
  pairwise; numpy's `add.accumulate` is such a sequential loop, `np.sum` is not;
- `exp_f32` and `log_f32` below are the runtime's own functions (no libm): range reduction plus a polynomial,
  each step one rounded single operation;
- stochastic rounding draws from `Xorshift32`, one draw per updated parameter element (see tte/train/update_ops.py
  for the order).
"""

from __future__ import annotations

import numpy as np

F32 = np.float32

# Sums are accumulated in chunks of at most this many elements (memory bound only: the order does not change).
_CHUNK_ELEMENTS = 1 << 22


def f32(x: np.ndarray | float) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)


def ordered_sum(terms: np.ndarray, init: np.ndarray | None = None) -> np.ndarray:
    """Sequential float32 sum over axis 0: ((init + t[0]) + t[1]) + ... (init defaults to 0.0)."""
    terms = f32(terms)
    acc = np.zeros(terms.shape[1:], np.float32) if init is None else f32(init).copy()
    if terms.shape[0] == 0:
        return acc
    step = max(1, _CHUNK_ELEMENTS // max(1, int(np.prod(terms.shape[1:]))))
    for start in range(0, terms.shape[0], step):
        chunk = np.concatenate([acc[None], terms[start:start + step]], axis=0)
        acc = np.add.accumulate(chunk, axis=0, dtype=np.float32)[-1]
    return acc


def dequantize(q: np.ndarray, scale: float | np.ndarray, zero_point: int) -> np.ndarray:
    """(float)(q - zp) * s: the integer difference is exact in float32, then one rounded multiply."""
    return (np.asarray(q, np.int32) - np.int32(zero_point)).astype(np.float32) * f32(scale)


# --- exp and log (Cephes single-precision algorithms, one rounded operation per step) --------------------------

_LOG2E = F32(1.44269504088896341)
_EXP_C1 = F32(0.693359375)
_EXP_C2 = F32(-2.12194440e-4)
_EXP_P = tuple(F32(c) for c in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
                                1.6666665459e-1, 5.0000001201e-1))
EXP_MIN, EXP_MAX = F32(-87.0), F32(88.0)


def floor_f32(x: np.ndarray) -> np.ndarray:
    """floor() of singles; C: t = (int32_t)x; if ((float)t > x) t -= 1 (no libm)."""
    return np.floor(f32(x))


def exp_f32(x: np.ndarray) -> np.ndarray:
    """e^x in single precision: 0 below -87, clamped at 88; n = floor(x log2 e + 0.5), r = x - n ln2, poly(r) 2^n."""
    x = f32(x)
    small = x < EXP_MIN
    x = np.minimum(np.maximum(x, EXP_MIN), EXP_MAX)
    n = floor_f32(x * _LOG2E + F32(0.5))
    r = (x - n * _EXP_C1) - n * _EXP_C2
    p = _EXP_P[0]
    for c in _EXP_P[1:]:
        p = p * r + c
    y = (p * (r * r) + r) + F32(1.0)
    # Scaling by 2^n is exact (n in [-126, 127]): C builds the float from the bits ((n + 127) << 23).
    y = y * np.ldexp(F32(1.0), n.astype(np.int32)).astype(np.float32)
    return np.where(small, F32(0.0), y).astype(np.float32)


_SQRTHF = F32(0.707106781186547524)
_LOG_P = tuple(F32(c) for c in (7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1,
                                1.4249322787e-1, -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1,
                                3.3333331174e-1))
_LOG_Q1, _LOG_Q2 = F32(-2.12194440e-4), F32(0.693359375)


def log_f32(x: np.ndarray) -> np.ndarray:
    """Natural log of positive normal singles: x = m 2^e (m in [sqrt(.5), sqrt(2))), polynomial in m - 1."""
    x = f32(x)
    m, e = np.frexp(x)  # m in [0.5, 1), exact; C reads the exponent bits
    m = m.astype(np.float32)
    e = e.astype(np.int32)
    low = m < _SQRTHF
    e = np.where(low, e - 1, e)
    m = np.where(low, (m + m) - F32(1.0), m - F32(1.0)).astype(np.float32)
    z = m * m
    p = _LOG_P[0]
    for c in _LOG_P[1:]:
        p = p * m + c
    y = (p * m) * z
    fe = e.astype(np.float32)
    y = y + fe * _LOG_Q1
    y = y - F32(0.5) * z
    return ((m + y) + fe * _LOG_Q2).astype(np.float32)


# --- xorshift32, vectorized through its linearity over GF(2) ---------------------------------------------------

_BLOCK = 4096


def _xorshift_step(x: np.ndarray) -> np.ndarray:
    x = x ^ ((x << np.uint32(13)) & np.uint32(0xFFFFFFFF))
    x = x ^ (x >> np.uint32(17))
    return x ^ ((x << np.uint32(5)) & np.uint32(0xFFFFFFFF))


def _jump_table() -> np.ndarray:
    """T[j, b] = xorshift32 applied j + 1 times to the state 1 << b (j < _BLOCK)."""
    table = np.empty((_BLOCK, 32), np.uint32)
    x = np.left_shift(np.uint32(1), np.arange(32, dtype=np.uint32))
    for j in range(_BLOCK):
        x = _xorshift_step(x)
        table[j] = x
    return table


_TABLE: np.ndarray | None = None


class Xorshift32:
    """Marsaglia's xorshift32 (13, 17, 5): state -> state; each draw is the new state.

    `uniform(n)` gives the next n draws as singles u = (x >> 8) * 2^-24 in [0, 1), exactly representable. The
    generator is linear over GF(2), so n draws are computed at once from a table of the 32 basis states.
    """

    def __init__(self, state: int) -> None:
        if not 0 < int(state) < 2**32:
            raise ValueError("xorshift32 state must be a nonzero 32-bit value")
        self.state = np.uint32(int(state))

    def draws(self, n: int) -> np.ndarray:
        global _TABLE
        if _TABLE is None:
            _TABLE = _jump_table()
        out = np.empty(n, np.uint32)
        for start in range(0, n, _BLOCK):
            count = min(_BLOCK, n - start)
            bits = ((int(self.state) >> np.arange(32)) & 1).astype(bool)
            block = np.bitwise_xor.reduce(_TABLE[:count, bits], axis=1) if bits.any() else np.zeros(count, np.uint32)
            out[start:start + count] = block
            self.state = np.uint32(block[-1])
        return out

    def uniform(self, n: int) -> np.ndarray:
        return (self.draws(n) >> np.uint32(8)).astype(np.float32) * F32(2.0**-24)


def seed_state(seed: int) -> int:
    """A nonzero xorshift32 state from any integer seed (0 maps to a fixed constant)."""
    s = int(seed) & 0xFFFFFFFF
    return s if s else 0x9E3779B9


# --- rounding of an update to integers --------------------------------------------------------------------------


def round_update(delta: np.ndarray, rounding: str, rng: Xorshift32 | None) -> np.ndarray:
    """Integer steps from float32 deltas: 'stochastic' floor(d + u) (unbiased), 'nearest' half away from zero.

    C: stochastic `s = d + u; floor(s)`; nearest `(int32_t)(d + (d >= 0 ? 0.5f : -0.5f))` (the cast truncates).
    Deltas are clamped to +-2^24 first so that the conversion to int32 is defined.
    """
    d = np.clip(f32(delta), F32(-(2.0**24)), F32(2.0**24))
    if rounding == "stochastic":
        assert rng is not None
        s = d + rng.uniform(d.size).reshape(d.shape)
        return floor_f32(s).astype(np.int64)
    if rounding == "nearest":
        s = d + np.where(d >= 0, F32(0.5), F32(-0.5)).astype(np.float32)
        return np.trunc(s).astype(np.int64)
    raise ValueError(f"unknown rounding {rounding}")
