"""softmax: TFLite Micro's int8 SOFTMAX over the last axis (output fixed at scale 1/256, zero point -128).

Per row: d = x - max(row); entries with d < diff_min are taken as exp = 0 (output -128). The others are
rescaled by beta * s_in into Q5.26 (`input_multiplier`, `input_left_shift`), exponentiated with gemmlowp's
exp_on_negative_values (Q0.31), summed in Q12.19, and each exp is multiplied by the sum's reciprocal
(GetReciprocal) and shifted down to 1/256 units. The parameters are those of TFLM's SoftmaxPrepare
(PreprocessSoftmaxScaling, CalculateInputRadius), computed in double from the float32 beta and input scale.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tte import gemmlowp as g
from tte.errors import UnsupportedError
from tte.ir import Graph, Node
from tte.ops import OpDef, register
from tte.ops import cases as C
from tte.quant import quantize_multiplier, srdhm, wrap_int32

SCALED_DIFF_INTEGER_BITS = 5  # exp input format Q5.26
ACCUMULATION_INTEGER_BITS = 12  # sum of exps in Q12.19
OUTPUT_SCALE, OUTPUT_ZERO_POINT = 1.0 / 256.0, -128


@dataclass(frozen=True)
class SoftmaxParams:
    """What the int8 kernel needs: diffs >= diff_min are rescaled by SRDHM(d << input_left_shift, multiplier)."""

    input_multiplier: int
    input_left_shift: int
    diff_min: int


def softmax_params(beta: float, input_scale: float, node: str | None = None) -> SoftmaxParams:
    """TFLM SoftmaxPrepare for int8: beta * s_in * 2^26, capped at 2^31 - 1, as a multiplier greater than one."""
    real = float(np.float32(beta)) * float(np.float32(input_scale)) * float(1 << (31 - SCALED_DIFF_INTEGER_BITS))
    real = min(real, float((1 << 31) - 1))
    if not real > 1.0:
        # TFLite's QuantizeMultiplierGreaterThanOne aborts here.
        raise UnsupportedError(
            f"beta * input scale = {real / 2**26:.3g} is too small for TFLite's int8 softmax (needs > 2^-26)",
            node=node,
            op="softmax",
            hint="quantize the softmax input with a larger scale",
        )
    multiplier, left_shift = quantize_multiplier(real)
    radius = ((1 << SCALED_DIFF_INTEGER_BITS) - 1) * (1 << (31 - SCALED_DIFF_INTEGER_BITS)) / 2.0**left_shift
    return SoftmaxParams(multiplier, left_shift, -int(math.floor(radius)))


def _exps_and_sum(x: np.ndarray, p: SoftmaxParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(used mask, exp(beta * s_in * d) in Q0.31, row sums in Q12.19) for int8 x, rows along the last axis."""
    x = np.asarray(x, dtype=np.int64)
    diff = x - x.max(axis=-1, keepdims=True)
    used = diff >= p.diff_min
    # |diff << left_shift| < 31 * 2^26 whenever diff >= diff_min: no int32 overflow for the used entries.
    scaled = srdhm(wrap_int32(np.where(used, diff, 0) << p.input_left_shift), p.input_multiplier)
    exps = g.exp_on_negative_values(scaled, SCALED_DIFF_INTEGER_BITS)
    terms = np.where(used, g.rescale(exps, 0, ACCUMULATION_INTEGER_BITS), 0)
    return used, exps, wrap_int32(terms.sum(axis=-1, keepdims=True))


def softmax_int8(x: np.ndarray, p: SoftmaxParams) -> np.ndarray:
    """reference_ops::Softmax<int8_t, int8_t> over the last axis of x."""
    used, exps, sum_of_exps = _exps_and_sum(x, p)
    shifted_scale, num_bits_over_unit = g.reciprocal(sum_of_exps, ACCUMULATION_INTEGER_BITS)
    exponent = num_bits_over_unit + 31 - 8
    # TFLM aborts (TFLITE_CHECK) when exponent > 31, i.e. a sum of exps >= 512 (see tflm_aborts): every
    # probability of such a row is < 1/512, so it rounds to 0 in 1/256 units, which is what we return.
    unsat = np.where(exponent > 31, 0, g.rdbpot(srdhm(shifted_scale, exps), np.minimum(exponent, 31)))
    y = np.where(used, np.clip(unsat + OUTPUT_ZERO_POINT, -128, 127), -128)
    return y.astype(np.int8)


def tflm_aborts(x: np.ndarray, p: SoftmaxParams) -> bool:
    """True when TFLite Micro's kernel would abort on its shift check for some row of x: a sum of exps of 512
    or more, only possible in rows of 512+ values near the row maximum (the reference then gives -128)."""
    _, _, sum_of_exps = _exps_and_sum(x, p)
    _, num_bits_over_unit = g.reciprocal(sum_of_exps, ACCUMULATION_INTEGER_BITS)
    return bool(np.any(num_bits_over_unit + 31 - 8 > 31))


def check_softmax_output(node: Node, graph: Graph) -> None:
    q = graph[node.outputs[0]].quant
    if q is None or q.per_channel or not (np.float32(q.s) == np.float32(OUTPUT_SCALE) and q.zp == OUTPUT_ZERO_POINT):
        raise UnsupportedError(
            f"int8 output must be quantized as (scale 1/256, zero point -128), got {q}",
            node=node.name,
            op="softmax",
            hint="TFLite fixes the softmax output quantization; re-export the model with it",
        )


def node_params(node: Node, graph: Graph) -> SoftmaxParams:
    """The kernel parameters of a softmax node (checks the output quantization)."""
    check_softmax_output(node, graph)
    return softmax_params(float(node.attrs.get("beta", 1.0)), graph[node.inputs[0]].quant.s, node.name)


def softmax_reference(node: Node, graph: Graph, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    return [softmax_int8(inputs[0], node_params(node, graph))]


def _softmax_case(name: str, shape: tuple[int, ...], s_in: float, zp: int, beta: float = 1.0) -> Graph:
    x = C.activation(f"{name}_x", shape, s_in, zp)
    y = C.activation(f"{name}_y", shape, OUTPUT_SCALE, OUTPUT_ZERO_POINT)
    return C.single_node("softmax", name, [x], [y], beta=beta)


def softmax_cases() -> list[Graph]:
    return [
        _softmax_case("softmax_10", (1, 10), 0.1, -5),
        _softmax_case("softmax_rows", (1, 3, 4, 7), 0.05, 10),
        _softmax_case("softmax_wide", (1, 100), 0.25, 0),
        _softmax_case("softmax_beta", (2, 33), 0.02, -20, beta=2.5),
    ]


register(OpDef("softmax", softmax_reference, cases=softmax_cases))
