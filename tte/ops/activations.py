"""HARD_SWISH, LOGISTIC and TANH in int8 as 256-entry tables, bit-exact with TFLite Micro.

Each builder evaluates TFLite Micro's integer kernel on every int8 input (index = x + 128), with the kernel
parameters computed as the op's Prepare computes them, so the `lut` op that uses the table is exact by
construction:
- HARD_SWISH: reference_ops::HardSwish (16-bit fixed point) with HardSwishParams from HardSwishPrepare.
- LOGISTIC, TANH: reference_integer_ops::Logistic / Tanh: the input is rescaled to Q4.27 by a multiplier from
  frexp(s_in * 2^27), saturated outside the input radius, and passed to gemmlowp's logistic / tanh.

TFLite fixes the output quantization of LOGISTIC (1/256, -128) and TANH (1/128, 0); other output
quantizations are rejected with a TteError.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from tte import gemmlowp as g
from tte.errors import UnsupportedError
from tte.ir import Node, QParams, Tensor
from tte.quant import mbqm, quantize_multiplier, round_half_away

_ALL_INT8 = np.arange(-128, 128, dtype=np.int64)
_INPUT_INTEGER_BITS = 4  # LOGISTIC and TANH rescale their input to Q4.27


def _unsupported(message: str, op: str, node: str | None, hint: str) -> UnsupportedError:
    """The user-facing error, naming the node when the caller knows it."""
    if node is None:
        return UnsupportedError(f"{op}: {message}", hint=hint)
    return UnsupportedError(message, node=node, op=op, hint=hint)


def _per_tensor(in_q: QParams | None, out_q: QParams | None, op: str, node: str | None) -> tuple[QParams, QParams]:
    for what, q in (("input", in_q), ("output", out_q)):
        if q is None or q.per_channel:
            raise _unsupported(f"int8 {what} must be quantized per tensor", op, node, "re-export the model in int8")
    return in_q, out_q


# HARD_SWISH


def _down_scale_to_int16(m: int) -> int:
    """DownScaleInt32ToInt16Multiplier: round a Q31 multiplier to Q15, saturating."""
    if m >= 2**31 - 1 - (1 << 15):
        return 32767
    return (m + (1 << 15)) >> 16


def hard_swish_params(in_q: QParams, out_q: QParams, node: str | None = None) -> dict[str, int]:
    """HardSwishParams as TFLite's HardSwishPrepare computes them (float32 ratios, then QuantizeMultiplier)."""
    in_s, out_s = np.float32(in_q.s), np.float32(out_q.s)
    hires_input_scale = np.float32(1.0 / 128.0) * in_s
    reluish_scale = np.float32(3.0) / np.float32(32768.0)
    out_m, out_e = quantize_multiplier(float(hires_input_scale / out_s))
    if out_e > 0:
        raise _unsupported(
            f"input scale {float(in_s):g} is 128x or more the output scale {float(out_s):g}, which TFLite rejects",
            "hard_swish",
            node,
            "re-quantize the model with a wider output range",
        )
    rel_m, rel_e = quantize_multiplier(float(hires_input_scale / reluish_scale))
    return {
        "input_zero_point": in_q.zp,
        "output_zero_point": out_q.zp,
        "output_multiplier_fixedpoint_int16": _down_scale_to_int16(out_m),
        "output_multiplier_exponent": out_e,
        "reluish_multiplier_fixedpoint_int16": _down_scale_to_int16(rel_m),
        "reluish_multiplier_exponent": rel_e,
    }


def hard_swish_int8(x: np.ndarray, p: dict[str, int]) -> np.ndarray:
    """reference_ops::HardSwish<int8_t> on an array of int8 values; every int16 narrowing is reproduced."""
    w16 = g.wrap_int16
    value = w16(np.asarray(x, dtype=np.int64) - p["input_zero_point"])
    hires = w16(value * (1 << 7))
    preshift_out = g.srdhm16(hires, p["output_multiplier_fixedpoint_int16"])
    # Rescale x from [-3, 3] to [-1, 1] (saturating); the left shift is split so saturation shows only once.
    reluish = hires
    exp = p["reluish_multiplier_exponent"]
    if exp > 0:
        reluish = g.saturating_left_shift16(reluish, exp - 1)
    reluish = g.srdhm16(reluish, p["reluish_multiplier_fixedpoint_int16"])
    if exp > 0:
        reluish = g.saturating_left_shift16(reluish, 1)
    if exp < 0:
        reluish = g.rdbpot16(reluish, -exp)
    reluish = w16((reluish + (1 << 15)) >> 1)  # [-1, 1] -> [0, 1]
    out = g.rdbpot16(g.sdhm16(reluish, preshift_out), -p["output_multiplier_exponent"])
    out = w16(out + p["output_zero_point"])
    return np.clip(out, -128, 127)


def hard_swish_table(in_q: QParams, out_q: QParams, node: str | None = None) -> tuple[int, ...]:
    """The int8 HARD_SWISH of TFLite Micro for every input (index x + 128); `node` names errors."""
    in_q, out_q = _per_tensor(in_q, out_q, "hard_swish", node)
    return _as_table(hard_swish_int8(_ALL_INT8, hard_swish_params(in_q, out_q, node)))


# LOGISTIC and TANH


def input_rescale_params(in_q: QParams) -> tuple[int, int, int]:
    """(input_multiplier, input_left_shift, input_range_radius) as the LOGISTIC/TANH Prepare computes them."""
    real = float(np.float64(np.float32(in_q.s)) * float(1 << (31 - _INPUT_INTEGER_BITS)))
    q, left_shift = math.frexp(real)
    multiplier = int(round_half_away(q * (1 << 31)))
    # CalculateInputRadius: the largest |x - zp| whose rescaled value stays inside Q4.27.
    max_rescaled = 1.0 * ((1 << _INPUT_INTEGER_BITS) - 1) * (1 << (31 - _INPUT_INTEGER_BITS)) / 2.0**left_shift
    return multiplier, left_shift, int(math.floor(max_rescaled))


def _fixed_output(q: QParams, scale: float, zp: int, op: str, node: str | None) -> None:
    if not (np.float32(q.s) == np.float32(scale) and q.zp == zp):
        raise _unsupported(
            f"int8 output must be quantized as (scale 1/{round(1 / scale)}, zero point {zp}), got {q}",
            op,
            node,
            "TFLite fixes this output quantization; re-export the model with it",
        )


def _saturated_unary(
    in_q: QParams, fixed_point_fn: Callable[[np.ndarray], np.ndarray], to_int8: Callable[[np.ndarray], np.ndarray]
) -> tuple[int, ...]:
    """Shared body of the int8 Logistic/Tanh kernels: saturate outside the radius, else rescale to Q4.27."""
    multiplier, left_shift, radius = input_rescale_params(in_q)
    x = _ALL_INT8 - in_q.zp
    inside = (x > -radius) & (x < radius)
    xq = np.where(inside, x, 0)  # values outside are never rescaled (that could overflow int32)
    y = to_int8(fixed_point_fn(mbqm(xq, multiplier, left_shift)))
    y = np.where(x <= -radius, -128, np.where(x >= radius, 127, y))
    return _as_table(y)


def logistic_table(in_q: QParams, out_q: QParams, node: str | None = None) -> tuple[int, ...]:
    """The int8 LOGISTIC of TFLite Micro (output fixed at 1/256, -128) for every input (index x + 128)."""
    in_q, out_q = _per_tensor(in_q, out_q, "logistic", node)
    _fixed_output(out_q, 1.0 / 256.0, -128, "logistic", node)
    return _saturated_unary(
        in_q,
        lambda a: g.logistic(a, _INPUT_INTEGER_BITS),
        lambda q0: np.clip(g.rdbpot(q0, 31 - 8) - 128, -128, 127),
    )


def tanh_table(in_q: QParams, out_q: QParams, node: str | None = None) -> tuple[int, ...]:
    """The int8 TANH of TFLite Micro (output fixed at 1/128, 0) for every input (index x + 128)."""
    in_q, out_q = _per_tensor(in_q, out_q, "tanh", node)
    _fixed_output(out_q, 1.0 / 128.0, 0, "tanh", node)
    return _saturated_unary(
        in_q,
        lambda a: g.tanh(a, _INPUT_INTEGER_BITS),
        lambda q0: np.clip(g.rdbpot(q0, 31 - 7), -128, 127),
    )


def _as_table(values: np.ndarray) -> tuple[int, ...]:
    assert values.shape == (256,)
    return tuple(int(v) for v in values)


TABLES: dict[str, Callable[..., tuple[int, ...]]] = {
    "hard_swish": hard_swish_table,
    "logistic": logistic_table,
    "tanh": tanh_table,
}


def lut_node(kind: str, name: str, x: Tensor, y: Tensor) -> Node:
    """The IR `lut` node computing activation `kind` (hard_swish, logistic, tanh) from x to y.

    The table depends on both quantizations; `source_op` records the activation so that writers (the .tflite
    test writer) and reports can name it.
    """
    if kind not in TABLES:
        raise UnsupportedError(
            f"no int8 table for activation {kind}", node=name, op=kind, hint="supported: " + ", ".join(sorted(TABLES))
        )
    table = TABLES[kind](x.quant, y.quant, node=name)
    return Node("lut", name, (x.name,), (y.name,), {"table": table, "source_op": kind})
