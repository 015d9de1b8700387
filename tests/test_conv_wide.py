"""conv2d's small-window instance (runtime_c/src/conv2d_wide.c) against the numpy reference, bit for bit: on the
host (portable C and emulated DSP) and in QEMU on Cortex-M7 and M4, where its inner loop is Thumb-2 assembly.

The cases cover what that kernel branches on: the unrolled 3x3 RGB instance and the generic one (1, 2, 4, 5
input channels, 1x1 with padding, 2x2, 1x3 and 5x5 kernels), windows crossing every border (asymmetric
padding, stride 1 and 2), odd pixel counts (a lone last pixel), odd channel counts
(the phantom channel), several channel blocks (C_out above the pool's 16 channels for 28 taps), a channel
whose right shift is above 24 (the zero point added, not folded), images smaller than the kernel, the largest
windows that still fit (C_out <= 2) and ones just over the limit (the older path), per-tensor quantization,
no bias, zero points at both ends and a narrower clamp (not this instance: checked through the same call).
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


def _conv(name: str, shape: tuple[int, int, int, int], cout: int, kernel: tuple[int, int], stride: int,
          pad: tuple[int, int, int, int], zp: int, seed: int, per_channel: bool = True, with_bias: bool = True,
          act: tuple[int, int] = (-128, 127), tiny: int | None = None) -> Graph:
    """A conv2d over an NHWC input `shape` whose requantization has right shifts of about 9 (the fast instance
    unless `act` narrows the clamp); channel `tiny`'s weight scale is 2^-18 of the others' (a right shift
    above 24: the zero point cannot be folded), as real models have for dead channels."""
    rng = np.random.default_rng(seed)
    n, h, w, cin = shape
    kh, kw = kernel
    x = C.activation(f"{name}_x", shape, float(np.float32(6 / 255)), int(rng.integers(-128, 128)))
    wt = weights(rng, f"{name}_w", (cout, kh, kw, cin), 0, per_channel)
    scale = np.asarray(wt.quant.scale, np.float32).reshape(-1)
    if tiny is not None:
        small = scale.copy()
        small[tiny] *= np.float32(2.0**-18)
        wt = Tensor(wt.name, wt.shape, "int8", QParams(small, np.zeros(cout), 0), wt.data)
    b = bias(rng, f"{name}_b", cout, x.quant.s, wt) if with_bias else None
    oh, ow = out_size(h, kh, stride, pad[0], pad[2]), out_size(w, kw, stride, pad[1], pad[3])
    m = 1.5 * 2.0 ** -10
    y = C.activation(f"{name}_y", (n, oh, ow, cout), float(np.float32(x.quant.s * float(np.mean(scale)) / m)), zp)
    ins = [t for t in (x, wt, b) if t is not None]
    return C.single_node("conv2d", name, ins, [y], stride=(stride, stride), pad=pad, act=act)


CASES = [
    _conv("rgb_s2_pad1", (1, 9, 11, 3), 16, (3, 3), 2, (1, 1, 1, 1), -128, 1),
    _conv("rgb_s1_oddpix", (1, 5, 7, 3), 7, (3, 3), 1, (1, 1, 1, 1), 127, 2),
    _conv("rgb_s2_asym", (1, 8, 9, 3), 6, (3, 3), 2, (0, 1, 2, 0), 3, 3),
    _conv("rgb_s2_oddpix", (1, 5, 5, 3), 5, (3, 3), 2, (1, 1, 1, 1), -40, 4),
    _conv("rgb_blocks_19", (1, 6, 6, 3), 19, (3, 3), 2, (1, 1, 1, 1), 12, 5),
    _conv("rgb_blocks_34", (1, 4, 5, 3), 34, (3, 3), 1, (1, 1, 1, 1), -3, 6),
    _conv("rgb_nopad_tensor", (1, 7, 7, 3), 8, (3, 3), 2, (0, 0, 0, 0), 0, 7, per_channel=False),
    _conv("rgb_nobias_cout1", (1, 6, 5, 3), 1, (3, 3), 1, (1, 1, 1, 1), 60, 8, with_bias=False),
    _conv("c1_3x3_s1", (1, 7, 6, 1), 8, (3, 3), 1, (1, 1, 1, 1), -100, 9),
    _conv("c2_3x3_s2", (1, 9, 9, 2), 9, (3, 3), 2, (1, 0, 1, 2), 44, 10),
    _conv("c4_3x3_s1", (1, 5, 6, 4), 12, (3, 3), 1, (1, 1, 1, 1), -128, 11),
    _conv("c5_2x2_s2", (1, 7, 8, 5), 6, (2, 2), 2, (1, 1, 0, 0), 9, 12),
    _conv("c3_1x3_s1", (1, 4, 9, 3), 4, (1, 3), 1, (0, 1, 0, 1), -7, 13),
    _conv("c8_1x1_pad", (1, 4, 4, 8), 6, (1, 1), 1, (1, 1, 1, 1), 20, 14),
    _conv("c11_3x3_cout4", (1, 5, 5, 11), 4, (3, 3), 1, (1, 1, 1, 1), -60, 15),
    _conv("c5_5x5_cout2", (1, 7, 7, 5), 2, (5, 5), 2, (2, 2, 2, 2), 100, 16),
    _conv("c5_5x5_cout3_old", (1, 6, 6, 5), 3, (5, 5), 1, (2, 2, 2, 2), -90, 17),
    _conv("c12_3x3_old", (1, 4, 4, 12), 6, (3, 3), 1, (1, 1, 1, 1), 5, 18),
    _conv("rgb_tiny_channel", (1, 7, 8, 3), 16, (3, 3), 2, (1, 1, 1, 1), -128, 20, tiny=11),
    _conv("c2_tiny_channel_odd", (1, 5, 6, 2), 5, (3, 3), 1, (1, 1, 1, 1), 77, 21, tiny=4),
    _conv("rgb_kernel_taller", (1, 2, 5, 3), 4, (3, 3), 1, (1, 1, 1, 1), -25, 22),
    _conv("c2_kernel_wider", (1, 5, 2, 2), 3, (3, 3), 2, (1, 1, 1, 1), 31, 23),
    _conv("rgb_relu_clamp", (1, 6, 6, 3), 5, (3, 3), 2, (1, 1, 1, 1), -128, 19, act=(-128, 50)),
]


def _inputs(graph: Graph) -> list[dict[str, np.ndarray]]:
    return [C.random_inputs(graph, 1), extreme_inputs(graph, 2)]


@pytest.mark.parametrize("dsp", [False, True], ids=["c", "dsp"])
@pytest.mark.parametrize("graph", CASES, ids=[g.name for g in CASES])
def test_conv_wide_on_host(graph: Graph, dsp: bool) -> None:
    assert_matches_reference(graph, _inputs(graph), dsp)


def test_cases_take_the_fast_instance() -> None:
    """Every case has right shifts >= 2 on all channels (else the new kernel would not run), above 24 on one
    channel exactly in the _tiny_ ones, and the windows of the cases named _old really are over its limit."""
    from tte.quant import quantize_multiplier

    for g in CASES:
        node = g.nodes[0]
        x, w, y = g[node.inputs[0]], g[node.inputs[1]], g[node.outputs[0]]
        ms = np.asarray(x.quant.s * np.asarray(w.quant.scale, np.float64) / y.quant.s).reshape(-1)
        shifts = [-int(quantize_multiplier(float(m))[1]) for m in ms]
        assert 2 <= min(shifts), g.name
        assert (max(shifts) > 24) == ("tiny" in g.name), g.name
        k_pad = (int(np.prod(w.shape[1:])) + 3) // 4 * 4
        fits = 3 * k_pad + 16 <= 320 or (2 * k_pad + 8 <= 320 and w.shape[0] <= 2)
        assert fits == (not g.name.endswith("_old")), g.name


@pytest.mark.qemu
@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None,
                    reason="needs arm-none-eabi-gcc and qemu-system-arm")
@pytest.mark.parametrize("board", ["cortex-m7", "cortex-m4"])
def test_conv_wide_on_cortex_m(board: str, tmp_path) -> None:
    inputs = [_inputs(g) for g in CASES]
    assert_passes_on_board(tmp_path / "fw", board, write_sources(tmp_path / "cases", CASES, inputs))
