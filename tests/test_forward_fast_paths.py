"""The forward fast paths of the train step against the numpy reference, bit for bit: the pointwise mask GEMM pass
(gemm_mask_s8.c, tte_gemm_mask_pair), the depthwise mask groups (depthwise_conv2d.c) and the 3x3 window runs
(depthwise_runs.c).

The layers' outputs are centred (zero point 0, a scale that saturates a good share of them on each side), so that
mask bits of 0 come from both ends of the int8 range, and every case asserts that it does. Host (portable and
emulated DSP) and QEMU (Cortex-M7, where the GEMM pass and the 3x3 run are assembly)."""

from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import pytest

from tte import reference
from tte.ir import Graph, QParams
from tte.testing import kernel_firmware
from tte.testing import train_cases as T
from tte.testing.c_harness import run_c
from tte.testing.kernel_cases import _layer
from tte.train.forward_ops import unpack_mask

# (hw, cin, cout): depth a multiple of 4 or not (DSP: the C fallback), odd pixel counts, odd cout (fallback),
# depth past TTE_GEMM_MASK_DEPTH = 384 (DSP: fallback), 2 pixels
POINTWISE = [(3, 8, 6), (4, 20, 10), (2, 6, 4), (3, 12, 5), (1, 16, 2), (2, 388, 4), (5, 24, 8)]
# (hw, channels, kernel, stride): channel counts past a group of four (overlapping last group), stride 2, 5x5, 7x7,
# 3x3 outputs of 64 pixels and more (every window a run, cut ones shifted: tte_dw_runs), 1x1 and 2x2 images
DEPTHWISE = [(6, 4, 3, 1), (7, 6, 3, 2), (5, 9, 3, 1), (6, 8, 5, 1), (7, 5, 5, 2), (8, 4, 7, 1), (9, 12, 7, 2),
             (2, 4, 3, 1), (1, 7, 3, 1), (9, 8, 3, 1), (17, 6, 3, 2), (16, 4, 3, 2), (8, 13, 3, 1)]


def _with_scale(g: Graph, factor: float) -> Graph:
    """The layer with a moderate bias (|b| < 3000), its output at zero point 0 and `factor` times the typical
    output scale of its fan-in (kernel_cases.out_scale)."""
    node = g.nodes[0]
    x, w, y = g[node.inputs[0]], g[node.inputs[1]], g[node.outputs[0]]
    fan_in = int(np.prod(w.shape[1:])) if node.op == "conv2d" else int(np.prod(w.shape[1:3]))
    typical = x.quant.s * np.hypot(74.0, x.quant.zp + 0.5) * 73.0 * float(np.mean(w.quant.scale)) * np.sqrt(fan_in)
    tensors = {**g.tensors, y.name: replace(y, quant=QParams(np.float32(typical / 40.0 * factor), 0))}
    if len(node.inputs) > 2 and node.inputs[2]:
        b = g[node.inputs[2]]
        tensors[b.name] = replace(b, data=(b.data.astype(np.int64) % 6001 - 3000).astype(b.data.dtype))
    return replace(g, tensors=tensors)


def _centred(g: Graph) -> Graph:
    """The layer at the output scale (2^(i/2) times the typical one) that best balances the outputs saturated at
    -128, saturated at 127 and inside, on random inputs."""
    def balance(c: Graph) -> float:
        y = reference.run(c, T.random_feeds(c, 7))[c.nodes[0].outputs[0]]
        lo, hi = np.mean(y == -128), np.mean(y == 127)
        return min(lo, hi, 1.0 - lo - hi)

    return max((_with_scale(g, 2.0 ** (i / 2)) for i in range(-16, 4)), key=balance)


def _pointwise(k: int, hw: int, cin: int, cout: int) -> Graph:
    return _centred(_layer(f"fpw{k}", "conv2d", hw, cin, cout, 1, 1, 300 + k))


def _depthwise(k: int, hw: int, ch: int, kernel: int, stride: int) -> Graph:
    return _centred(_layer(f"fdw{k}", "depthwise_conv2d", hw, ch, ch, kernel, stride, 400 + k))


def _mask_cases() -> list[tuple[Graph, Graph]]:
    cases = []
    for k, shape in enumerate(POINTWISE):
        g = _pointwise(k, *shape)
        cases.append(T.mask_case(g))
        cases.append(T.mask_case(T.renamed(g, "/split"), split=0.4, seed=k))
    for k, shape in enumerate(DEPTHWISE):
        cases.append(T.mask_case(_depthwise(k, *shape)))
    return cases


def _forward_cases() -> list[Graph]:
    """The plain depthwise layers (tte_depthwise_conv2d_3x3_s8 / _s8) of the same shapes."""
    return [_depthwise(50 + k, *shape) for k, shape in enumerate(DEPTHWISE)]


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).view(np.uint8)


def _assert_same(got: dict, want: dict) -> None:
    bad = [k for k in want if not np.array_equal(_bits(got[k]), _bits(np.asarray(want[k], got[k].dtype)))]
    assert not bad, f"{len(bad)} tensors differ, first {bad[:5]}"


def _assert_both_sides(graph: Graph, want: dict) -> None:
    """Mask bits of 0 at -128 and at 127 and bits of 1, in every layer of 40 outputs or more and in all together."""
    seen = np.zeros(3, bool)
    for node in graph.nodes:
        y, mask = want[node.outputs[0]], want[node.outputs[1]]
        bits = unpack_mask(mask, y.shape)
        have = np.array([(~bits & (y == -128)).any(), (~bits & (y == 127)).any(), bits.any()])
        assert have.all() or y.size < 40, f"{node.name}: {have}"
        seen |= have
    assert seen.all()


def test_mask_fast_paths_both_sides():
    """Outputs and mask bits of the pointwise GEMM pass and the depthwise groups, random inputs, portable and
    emulated DSP."""
    cases = _mask_cases()
    c_graph, ref_graph = T.merge("fwd_mask", [c for c, _ in cases]), T.merge("fwd_mask", [r for _, r in cases])
    feeds = T.random_feeds(c_graph, 7)
    want = reference.run(ref_graph, feeds)
    _assert_both_sides(ref_graph, want)
    for dsp in (False, True):
        _assert_same(run_c(c_graph, feeds, dsp=dsp), want)


def test_depthwise_forward_runs():
    """The depthwise kernels' window runs (3x3) and groups (5x5, 7x7, stride 2, odd channel counts)."""
    for g in _forward_cases():
        feeds = T.random_feeds(g, 8)
        want = reference.run(g, feeds)
        for dsp in (False, True):
            _assert_same(run_c(g, feeds, dsp=dsp), want)


@pytest.mark.qemu
@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None,
                    reason="needs arm-none-eabi-gcc and qemu-system-arm")
def test_forward_fast_paths_on_cortex_m7(tmp_path, monkeypatch):
    """The same cases on the Cortex-M7 (the assembly passes), outputs compared byte for byte with the reference's."""
    from tte.targets import build, run_qemu, write_project

    cases = _mask_cases()
    c_graph, ref_graph = T.merge("fwd_mask", [c for c, _ in cases]), T.merge("fwd_mask", [r for _, r in cases])
    fwd = _forward_cases()
    refs = {c_graph.name: ref_graph, **{g.name: g for g in fwd}}

    class _Reference:
        @staticmethod
        def run(graph, feeds):
            return reference.run(refs[graph.name], feeds)

    monkeypatch.setattr(kernel_firmware, "reference", _Reference)
    graphs = [c_graph, *fwd]
    inputs = [[T.random_feeds(g, 9)] for g in graphs]
    sources = kernel_firmware.write_sources(tmp_path / "cases", graphs, inputs)
    fw = build(write_project(tmp_path / "fw", "cortex-m7", sources, stack_bytes=8192))
    run = run_qemu(fw.elf, timeout=120, board="cortex-m7")
    assert run.status == 0, f"{run.message}\n{run.output[-2000:]}"
