"""The fast forward paths (packed 1x1 GEMM with the zero point folded into the requantization, the conv2d
window kernel's folded requantization and weight-row tails) against the numpy reference, bit for bit: on the
host (portable C and emulated DSP) and in QEMU on Cortex-M7 and M4, where the GEMM pass is Thumb-2 assembly.

The cases cover what those paths branch on: depth a multiple of 4 or not, at most TTE_GEMM_WIDE_DEPTH (384,
weights widened first when there are at least 8 rows) or over, odd pixel counts (a lone last row),
odd channel counts (a lone last column, the last weight row's tail), zero points at both ends, right shifts on
both sides of TTE_FAST_OUT_MAX_SHIFT (24), a clamp narrower than int8 (the general path), strided pointwise
convs, batched fully connected layers and padded 3x3 convs; residual adds (tte_add_lut_s8, whose fast
instance also folds the zero point) on both sides of the shift limit, of odd size and with a narrower clamp.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from tte.ir import Graph, QParams, Tensor
from tte.ops import cases as C
from tte.ops.conv2d import out_size
from tte.testing.c_harness import assert_matches_reference
from tte.testing.kernel_cases import bias, extreme_inputs, weights
from tte.testing.kernel_firmware import assert_passes_on_board, write_sources


def _out_tensor(name: str, shape: tuple[int, ...], x: Tensor, w: Tensor, shift: int, zp: int) -> Tensor:
    """An output whose requantization multiplier has right shift `shift` on every channel (M in
    [2^-shift-1, 2^-shift) for the mean weight scale, so the per-channel shifts stay within one of it)."""
    m = 1.5 * 2.0 ** -(shift + 1)
    s = float(np.float32(x.quant.s * float(np.mean(w.quant.scale)) / m))
    return C.activation(name, shape, s, zp)


def _conv(name: str, hw: int, cin: int, cout: int, k: int, stride: int, shift: int, zp: int, seed: int,
          act: tuple[int, int] = (-128, 127)) -> Graph:
    rng = np.random.default_rng(seed)
    x = C.activation(f"{name}_x", (1, hw, hw, cin), float(np.float32(6 / 255)), int(rng.integers(-128, 128)))
    w = weights(rng, f"{name}_w", (cout, k, k, cin), 0, True)
    w = Tensor(w.name, w.shape, "int8", QParams(np.full(cout, 0.02, np.float32) * rng.uniform(0.8, 1.2, cout)
                                              .astype(np.float32), np.zeros(cout), 0), w.data)
    b = bias(rng, f"{name}_b", cout, x.quant.s, w)
    pad = k // 2
    oh = out_size(hw, k, stride, pad, pad)
    y = _out_tensor(f"{name}_y", (1, oh, oh, cout), x, w, shift, zp)
    ins = [t for t in (x, w, b) if t is not None]
    return C.single_node("conv2d", name, ins, [y], stride=(stride, stride), pad=(pad,) * 4, act=act)


def _fc(name: str, batch: int, n_in: int, n_out: int, shift: int, zp: int, seed: int) -> Graph:
    rng = np.random.default_rng(seed)
    x = C.activation(f"{name}_x", (batch, n_in), 0.02, int(rng.integers(-128, 128)))
    w = weights(rng, f"{name}_w", (n_out, n_in), 0, True)
    b = bias(rng, f"{name}_b", n_out, x.quant.s, w)
    y = _out_tensor(f"{name}_y", (batch, n_out), x, w, shift, zp)
    return C.single_node("fully_connected", name, [t for t in (x, w, b) if t is not None], [y], act=(-128, 127))


def _add(name: str, shape: tuple[int, ...], scales: tuple[float, float, float], zps: tuple[int, int, int],
         act: tuple[int, int] = (-128, 127)) -> Graph:
    """A residual add of at least 256 elements (tte_add_lut_s8)."""
    a = C.activation(f"{name}_a", shape, scales[0], zps[0])
    b = C.activation(f"{name}_b", shape, scales[1], zps[1])
    y = C.activation(f"{name}_y", shape, scales[2], zps[2])
    return C.single_node("add", name, [a, b], [y], act=act)


ADD_CASES = [
    _add("add_fast_out", (1, 8, 8, 6), (0.05, 0.03, 0.06), (-128, 127, -128)),
    _add("add_odd_size", (1, 7, 37, 1), (0.02, 0.07, 0.05), (3, -60, 127)),
    _add("add_shift24", (1, 16, 16, 1), (0.01, 0.012, 0.5), (0, 10, -5)),
    _add("add_shift26", (1, 16, 16, 1), (0.01, 0.012, 2.0), (7, -10, 100)),
    _add("add_relu_clamp", (1, 8, 8, 4), (0.05, 0.05, 0.08), (-10, 20, -128), act=(-128, 60)),
]

CASES = [
    _conv("pw_d8_even", 6, 8, 48, 1, 1, 9, -128, 1),
    _conv("pw_d4_oddpix", 5, 4, 6, 1, 1, 8, 127, 2),
    _conv("pw_d12_oddcols", 5, 12, 7, 1, 1, 10, -37, 3),
    _conv("pw_d20_shift24", 4, 20, 10, 1, 1, 24, 100, 4),
    _conv("pw_d16_shift25", 4, 16, 10, 1, 1, 25, -100, 5),
    _conv("pw_d13_tail", 5, 13, 9, 1, 1, 7, 0, 6),
    _conv("pw_d6_tail", 4, 6, 4, 1, 1, 3, -5, 7),
    _conv("pw_d96", 3, 96, 24, 1, 1, 11, -20, 8),
    _conv("pw_relu_clamp", 4, 16, 8, 1, 1, 8, -128, 9, act=(-128, 40)),
    _conv("pw_stride2", 7, 8, 6, 1, 2, 8, 3, 10),
    _conv("pw_d256_widened", 4, 256, 6, 1, 1, 10, 17, 22),
    _conv("pw_d384_widened", 3, 384, 4, 1, 1, 10, 90, 25),
    _conv("pw_d388_not_widened", 3, 388, 4, 1, 1, 10, -17, 23),
    _conv("pw_rows4_not_widened", 2, 16, 6, 1, 1, 9, 5, 24),
    _fc("fc_batch4", 4, 32, 10, 8, -7, 11),
    _fc("fc_batch5_odd", 5, 17, 9, 9, 60, 12),
    _conv("first_s2_zp", 9, 3, 16, 3, 2, 8, -128, 13),
    _conv("first_s2_oddcout", 8, 3, 7, 3, 2, 9, 45, 14),
    _conv("conv3x3_cout2", 5, 3, 2, 3, 1, 7, -90, 15),
    _conv("conv3x3_c5_shift25", 5, 5, 6, 3, 1, 25, 12, 16),
    *ADD_CASES,
]


def _inputs(graph: Graph) -> list[dict[str, np.ndarray]]:
    return [C.random_inputs(graph, 1), C.random_inputs(graph, 2), extreme_inputs(graph, 3)]


@pytest.mark.parametrize("dsp", [False, True], ids=["c", "dsp"])
@pytest.mark.parametrize("graph", CASES, ids=[g.name for g in CASES])
def test_fast_paths_on_host(graph: Graph, dsp: bool) -> None:
    assert_matches_reference(graph, _inputs(graph), dsp)


def test_cases_reach_the_shift_limit() -> None:
    """The shift cases really sit on both sides of the folded-zero-point limit (else they test nothing)."""
    from tte.quant import quantize_multiplier

    def shifts(g: Graph) -> set[int]:
        node = g.nodes[0]
        x, w, y = g[node.inputs[0]], g[node.inputs[1]], g[node.outputs[0]]
        ms = np.asarray(x.quant.s * np.asarray(w.quant.scale, np.float64) / y.quant.s)
        return {int(quantize_multiplier(float(m))[1]) for m in ms.reshape(-1)}

    by_name = {g.name: g for g in CASES}
    assert min(shifts(by_name["pw_d20_shift24"])) >= -24
    assert max(shifts(by_name["pw_d16_shift25"])) < -24


def test_add_cases_reach_the_shift_limit() -> None:
    """The add cases' output shifts sit on both sides of the folded-zero-point limit."""
    from tte.ops.add import add_params

    def out_shift(g: Graph) -> int:
        node = g.nodes[0]
        qa, qb, qy = (g[t].quant for t in (*node.inputs, node.outputs[0]))
        return add_params(qa.s, qb.s, qy.s)[2][1]

    by_name = {g.name: g for g in ADD_CASES}
    assert -24 <= out_shift(by_name["add_fast_out"]) <= -2
    assert -24 <= out_shift(by_name["add_odd_size"]) <= -2
    assert out_shift(by_name["add_shift24"]) == -24
    assert out_shift(by_name["add_shift26"]) < -24


@pytest.mark.qemu
@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None,
                    reason="needs arm-none-eabi-gcc and qemu-system-arm")
@pytest.mark.parametrize("board", ["cortex-m7", "cortex-m4"])
def test_fast_paths_on_cortex_m(board: str, tmp_path) -> None:
    inputs = [_inputs(g) for g in CASES]
    assert_passes_on_board(tmp_path / "fw", board, write_sources(tmp_path / "cases", CASES, inputs))
