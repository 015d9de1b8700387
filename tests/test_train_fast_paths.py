"""The fast paths of the train kernels (pointwise input gradients and weight updates in register blocks, the
merged split rows and the fast output stage of the mask kernels, the DSP depthwise mask, byte-wise mask
application, four-channel bias sums) against the numpy reference, bit for bit, on shapes that hit their tails:
pixel counts and channel counts that are not multiples of the block, split weights with scattered channels,
masks whose bit groups straddle bytes. On the host (portable and emulated DSP paths) and in QEMU (Cortex-M7)."""

from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import pytest

from tte import reference
from tte.ir import Graph, IOSpec, Node, Tensor
from tte.testing import kernel_firmware
from tte.testing import train_cases as T
from tte.testing.c_harness import run_c
from tte.testing.kernel_cases import _layer, extreme_inputs
from tte.train.forward_ops import mask_bytes

# (hw, cin, cout): 1, 9, 49 and 4 pixels; channel counts below, at and past a block of four
POINTWISE = [(1, 1, 1), (3, 3, 5), (7, 6, 8), (2, 13, 7), (3, 4, 4), (5, 9, 12), (1, 17, 3)]


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).view(np.uint8)


def _assert_same(got: dict, want: dict) -> None:
    bad = [k for k in want if not np.array_equal(_bits(got[k]), _bits(np.asarray(want[k], got[k].dtype)))]
    assert not bad, f"{len(bad)} tensors differ, first {bad[:5]}"


def _pointwise(k: int, hw: int, cin: int, cout: int, act: tuple[int, int] | None = None) -> Graph:
    g = _layer(f"pw{k}", "conv2d", hw, cin, cout, 1, 1, 100 + k)
    if act is None:
        return g
    node = g.nodes[0]
    return g.with_nodes([replace(node, attrs={**node.attrs, "act": act})])


def _depthwise(k: int, hw: int, ch: int, kernel: int, stride: int, act: tuple[int, int]) -> Graph:
    g = _layer(f"dw{k}", "depthwise_conv2d", hw, ch, ch, kernel, stride, 200 + k)
    node = g.nodes[0]
    return g.with_nodes([replace(node, attrs={**node.attrs, "act": act})])


def _input_grad_cases() -> list[tuple[Graph, Graph]]:
    cases = []
    for k, (hw, cin, cout) in enumerate(POINTWISE):
        g = _pointwise(k, hw, cin, cout)
        cases.append(T.input_grad_case(g))
        for j, frac in enumerate((0.3, 0.6, 1.0)):  # scattered trained channels, and every channel trained
            cases.append(T.input_grad_case(T.renamed(g, f"/split{j}"), frac, seed=k + j))
    return cases


def _update_cases() -> list[tuple[Graph, Graph]]:
    cases = []
    for k, (hw, cin, cout) in enumerate(POINTWISE):
        g = _pointwise(k, hw, cin, cout)
        for j, (frac, rounding) in enumerate(((1.0, "stochastic"), (0.5, "nearest"), (0.7, "stochastic"))):
            cases.append(T.weight_update_case(T.renamed(g, f"/{j}"), frac, rounding, seed=k + j, qas=j != 2))
    return cases


def _mask_cases() -> list[tuple[Graph, Graph]]:
    cases = []
    shapes = [*POINTWISE, (2, 260, 3), (3, 40, 9)]  # 260 input channels: too wide to merge on the stack
    for k, (hw, cin, cout) in enumerate(shapes):
        g = _pointwise(k, hw, cin, cout, act=(-110, 70))
        cases.append(T.mask_case(g))
        cases.append(T.mask_case(T.renamed(g, "/split"), split=0.4, seed=k))
    # The full clamp range takes the GEMM pass (tte_gemm_mask_pair): depth a multiple of 4 or not (DSP: fallback),
    # an odd last pixel, odd cout (fallback), depth past TTE_GEMM_MASK_DEPTH (DSP: fallback)
    for k, (hw, cin, cout) in enumerate([(3, 8, 6), (4, 20, 10), (2, 6, 4), (3, 12, 5), (1, 16, 2), (2, 388, 4)]):
        g = _pointwise(50 + k, hw, cin, cout, act=(-128, 127))
        cases.append(T.mask_case(g))
        cases.append(T.mask_case(T.renamed(g, "/split"), split=0.4, seed=k))
    for k, (hw, ch, kernel, stride) in enumerate([(5, 4, 3, 1), (6, 7, 3, 2), (4, 13, 5, 1), (3, 9, 3, 1)]):
        g = _depthwise(k, hw, ch, kernel, stride, act=(-100, 90))
        cases.append(T.mask_case(g))
        cases.append(T.mask_case(T.renamed(g, "/split"), split=0.5, seed=k))
    return cases


def _check(name: str, cases: list[tuple[Graph, Graph]], seeds=(3,), dsp=(False,), lr: float = 0.05) -> None:
    c_graph, ref_graph = T.merge(name, [c for c, _ in cases]), T.merge(name, [r for _, r in cases])
    for seed in seeds:
        feeds = T.random_feeds(c_graph, seed, lr=lr)
        want = reference.run(ref_graph, feeds)
        for d in dsp:
            _assert_same(run_c(c_graph, feeds, dsp=d), want)


def test_pointwise_input_gradients():
    """4x4 register blocks with pixel and channel tails; split weights (frozen channels from flash in blocks of
    four, trained ones from the SRAM matrix)."""
    _check("pw_grad", _input_grad_cases(), seeds=(3, 4))


def test_pointwise_weight_updates():
    """Four rows at a time with one PRNG copy per row: new weights and the final state equal the reference's
    row-major draws; tails of rows (cout % 4) and columns (T % 4), both roundings, deltas past +-512."""
    cases = _update_cases()
    for lr in (0.05, 2000.0):
        _check("pw_update", cases, seeds=(5,), lr=lr)


def test_mask_fast_paths():
    """Merged split rows, the fast output stage (two and four mask bits at once, straddling bytes) and the DSP
    depthwise windows, on random and on extreme inputs, portable and emulated DSP."""
    cases = _mask_cases()
    c_graph, ref_graph = T.merge("mask_fast", [c for c, _ in cases]), T.merge("mask_fast", [r for _, r in cases])
    for feeds in (T.random_feeds(c_graph, 1), extreme_inputs(c_graph, 2)):
        want = reference.run(ref_graph, feeds)
        for dsp in (False, True):
            _assert_same(run_c(c_graph, feeds, dsp=dsp), want)


def _apply_mask_graph(size: int) -> Graph:
    dy = Tensor(f"dy{size}", (1, size), "float32")
    mask = Tensor(f"mask{size}", (mask_bytes((1, size)),), "uint8")
    out = Tensor(f"dx{size}", (1, size), "float32")
    node = Node("apply_mask", f"apply{size}", (dy.name, mask.name), (out.name,), {})
    ios = tuple(IOSpec(t.name, t.shape, "NHWC", False) for t in (dy, mask))
    return Graph(f"apply{size}", {t.name: t for t in (dy, mask, out)}, (node,), ios,
                 (IOSpec(out.name, out.shape, "NHWC", False),))


def test_apply_mask_bytes():
    """Whole, empty and mixed mask bytes and a tail of 1..7 values (signed zeros and NaN bits copied as they are)."""
    rng = np.random.default_rng(9)
    for size in (1, 7, 8, 29, 64):
        g = _apply_mask_graph(size)
        dy = rng.normal(0, 1, (1, size)).astype(np.float32)
        dy.reshape(-1)[::5] = -0.0
        raw = rng.integers(0, 256, mask_bytes((1, size))).astype(np.uint8)
        raw[::3] = 0xFF
        raw[1::3] = 0
        feeds = {f"dy{size}": dy, f"mask{size}": raw}
        _assert_same(run_c(g, feeds), reference.run(g, feeds))


@pytest.mark.qemu
@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None,
                    reason="needs arm-none-eabi-gcc and qemu-system-arm")
def test_fast_paths_on_cortex_m7(tmp_path, monkeypatch):
    """The same cases on the Cortex-M7 (FPU, DSP instructions, -O2), outputs compared byte for byte with the
    reference's. A split case's C graph reads the SRAM part, so the expected outputs come from its reference
    graph (same name)."""
    from tte.targets import build, run_qemu, write_project

    groups = {"pw_grad": _input_grad_cases(), "pw_update": _update_cases(), "mask_fast": _mask_cases()}
    graphs, refs, inputs = [], {}, []
    for name, cases in groups.items():
        c_graph, ref_graph = T.merge(name, [c for c, _ in cases]), T.merge(name, [r for _, r in cases])
        graphs.append(c_graph)
        refs[name] = ref_graph
        inputs.append([T.random_feeds(c_graph, 6, lr=500.0 if name == "pw_update" else 0.05)])

    class _Reference:
        @staticmethod
        def run(graph, feeds):
            return reference.run(refs[graph.name], feeds)

    monkeypatch.setattr(kernel_firmware, "reference", _Reference)
    sources = kernel_firmware.write_sources(tmp_path / "cases", graphs, inputs)
    fw = build(write_project(tmp_path / "fw", "cortex-m7", sources, stack_bytes=8192))
    run = run_qemu(fw.elf, timeout=120, board="cortex-m7")
    assert run.status == 0, f"{run.message}\n{run.output[-2000:]}"
