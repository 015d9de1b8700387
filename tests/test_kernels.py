"""The C runtime kernels against the numpy reference, bit for bit.

Every op's own test cases and seeded random graphs (random shapes, kernel sizes, strides, asymmetric pads,
depthwise multipliers, per-tensor/per-channel weights, extreme scales and zero points, biases near the int32
limits) run through `codegen.ops` and the C kernels, built twice: the portable C paths and the Cortex-M DSP
paths (with emulated DSP instructions). The fixed-point helpers are checked against tte.quant on edge values,
and every kernel source must compile warning-free for Cortex-M7, M4 and M0.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from codegen.ops import INCLUDE_DIR, RUNTIME_DIR, emit, load_all
from tte import ops, quant, reference
from tte.ir import Graph, IOSpec, Node, Tensor
from tte.ops import cases as C
from tte.testing.c_harness import assert_matches_reference, load_snippet, run_c
from tte.testing.kernel_cases import GENERATORS, extreme_inputs, model_like_cases, random_case
from tte.testing.kernel_firmware import assert_passes_on_board, write_sources

KERNEL_OPS = ("conv2d", "depthwise_conv2d", "fully_connected", "add", "avg_pool2d", "mean", "pad", "transpose",
              "lut", "requantize", "reshape")
RANDOM_COUNTS = {"conv2d": 24, "depthwise_conv2d": 24, "fully_connected": 16, "add": 8, "avg_pool2d": 8,
                 "mean": 8, "pad": 6, "transpose": 6, "requantize": 8, "lut": 3, "reshape": 2}
SRC_FILES = sorted((RUNTIME_DIR / "src").glob("*.c"))


def _inputs(graph: Graph) -> list[dict[str, np.ndarray]]:
    return [C.random_inputs(graph, seed) for seed in (1, 2, 3)] + [extreme_inputs(graph, 4)]


OP_CASES = [(name, g) for name in sorted(ops.OPS) for g in ops.OPS[name].cases()]


@pytest.mark.parametrize("dsp", [False, True], ids=["c", "dsp"])
@pytest.mark.parametrize("graph", [g for _, g in OP_CASES], ids=[f"{op}-{g.name}" for op, g in OP_CASES])
def test_op_cases(graph: Graph, dsp: bool) -> None:
    op = graph.nodes[0].op
    if op not in load_all():
        pytest.skip(f"no C emitter for {op} (another module's)")
    assert_matches_reference(graph, _inputs(graph), dsp)


RANDOM = [(op, i) for op, n in RANDOM_COUNTS.items() for i in range(n)]


@pytest.mark.parametrize("dsp", [False, True], ids=["c", "dsp"])
@pytest.mark.parametrize("op, index", RANDOM, ids=[f"{op}-{i}" for op, i in RANDOM])
def test_random_cases(op: str, index: int, dsp: bool) -> None:
    assert_matches_reference(random_case(op, index), _inputs(random_case(op, index)), dsp)


MODEL_LIKE = model_like_cases()


@pytest.mark.parametrize("dsp", [False, True], ids=["c", "dsp"])
@pytest.mark.parametrize("graph", MODEL_LIKE, ids=[g.name for g in MODEL_LIKE])
def test_model_like_layers(graph: Graph, dsp: bool) -> None:
    assert_matches_reference(graph, _inputs(graph), dsp)


def test_every_op_has_a_kernel() -> None:
    assert set(KERNEL_OPS) <= set(load_all())
    assert set(GENERATORS) == set(KERNEL_OPS)


def test_fast_paths_are_chosen() -> None:
    """conv 1x1 without padding -> the GEMM kernel; depthwise 3x3 with multiplier 1 -> the 3x3 kernel."""
    calls = {}
    for graph in ops.OPS["conv2d"].cases() + ops.OPS["depthwise_conv2d"].cases():
        node = graph.nodes[0]
        code = "\n".join(emit(node, graph, lambda t: t, lambda s: s).lines)
        calls[node.name] = code
    assert "tte_conv2d_1x1_s8(" in calls["conv1x1"]
    assert "tte_conv2d_s8(" in calls["conv3x3_s1"]
    assert "tte_depthwise_conv2d_3x3_s8(" in calls["dw3x3_s1"]
    assert "tte_depthwise_conv2d_s8(" in calls["dw5x5_s1"] and "tte_depthwise_conv2d_s8(" in calls["dw3x3_mult2"]


def test_reshape_emits_no_code_when_aliased() -> None:
    graph = ops.OPS["reshape"].cases()[0]
    node = graph.nodes[0]
    aliased = emit(node, graph, lambda t: "buf", lambda s: s)
    assert not [line for line in aliased.lines if not line.lstrip().startswith("/*")] and not aliased.sources
    copied = emit(node, graph, lambda t: t, lambda s: s)
    assert copied.sources == ["src/copy.c"]


FIXEDPOINT = """
#include "tte_fixedpoint.h"
int32_t srdhm(int32_t a, int32_t b) { return tte_srdhm(a, b); }
int32_t rdbpot(int32_t x, int32_t e) { return tte_rdbpot(x, e); }
int32_t mbqm(int32_t x, int32_t m, int32_t s) { return tte_mbqm(x, m, s); }
int32_t rq(int32_t x, int32_t m, int32_t s) { tte_channel_rq r = tte_channel_rq_make(m, s);
    return tte_channel_rq_apply(&r, x); }
"""
FIXEDPOINT_CDEF = """int32_t srdhm(int32_t, int32_t); int32_t rdbpot(int32_t, int32_t);
int32_t mbqm(int32_t, int32_t, int32_t); int32_t rq(int32_t, int32_t, int32_t);"""


def _int32_samples(rng: np.random.Generator, n: int) -> np.ndarray:
    edges = np.array([-(2**31), -(2**31) + 1, -(2**30), -(2**30) - 1, -1, 0, 1, 2**30, 2**30 + 1, 2**31 - 1])
    return np.concatenate([edges, rng.integers(-(2**31), 2**31, n), rng.integers(-5000, 5000, n)])


def test_fixedpoint_helpers_match_tte_quant() -> None:
    lib = load_snippet(FIXEDPOINT, FIXEDPOINT_CDEF)
    rng = np.random.default_rng(7)
    xs = _int32_samples(rng, 300)
    ms = np.concatenate([[0, 2**30, 2**31 - 1, -(2**31)], rng.integers(2**30, 2**31, 40)])
    for a in xs:
        for b in ms[::4]:
            assert lib.srdhm(int(a), int(b)) == int(quant.srdhm(a, b)), (a, b)
    for x in xs:
        for e in range(32):
            assert lib.rdbpot(int(x), e) == int(quant.rdbpot(x, e)), (x, e)
    for m in ms[[0, 1, 2, 5, 9]]:
        for s in range(-31, 32):  # rq: the fast path for s <= -2 (m > 0), the general one otherwise
            want = quant.mbqm(xs[::3], m, s)
            assert [lib.mbqm(int(x), int(m), s) for x in xs[::3]] == want.tolist(), (m, s)
            assert [lib.rq(int(x), int(m), s) for x in xs[::3]] == want.tolist(), (m, s)


ARM_TARGETS = {
    "cortex-m7": ["-mcpu=cortex-m7", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-d16"],
    "cortex-m4": ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"],
    "cortex-m0": ["-mcpu=cortex-m0", "-mthumb", "-mfloat-abi=soft"],  # no DSP: the portable C paths
}


@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None, reason="arm-none-eabi-gcc not installed")
@pytest.mark.parametrize("target", sorted(ARM_TARGETS))
def test_kernels_cross_compile(target: str, tmp_path) -> None:
    for src in SRC_FILES:
        cmd = ["arm-none-eabi-gcc", *ARM_TARGETS[target], "-O2", "-std=c99", "-Wall", "-Wextra", "-Werror",
               f"-I{INCLUDE_DIR}", "-c", str(src), "-o", str(tmp_path / f"{src.stem}.o")]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        assert proc.returncode == 0, f"{src.name} for {target}:\n{proc.stderr}"


def test_host_compile_is_pedantic_clean(tmp_path) -> None:
    """Strict C99 on the host too (both code paths): no extensions the Cortex-M build might not have."""
    cc = shutil.which("cc") or "cc"
    for src in SRC_FILES:
        for extra in ([], ["-DTTE_DSP_EMULATE"]):
            cmd = [cc, "-std=c99", "-pedantic", "-O2", "-Wall", "-Wextra", "-Wshadow", "-Wconversion",
                   "-Wno-sign-conversion", "-Werror", *extra, f"-I{INCLUDE_DIR}", "-c", str(src), "-o",
                   str(tmp_path / f"{src.stem}.o")]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            assert proc.returncode == 0, f"{src.name} {extra}:\n{proc.stderr}"


UBSAN_SCRIPT = """
import sys
import numpy as np
from tte import ops, reference
from tte.testing import c_harness
from tte.testing.kernel_cases import GENERATORS, extreme_inputs, model_like_cases, random_case
from tte.testing.kernel_firmware import assert_passes_on_board, write_sources
c_harness.CFLAGS += ("-fsanitize=undefined", "-fno-sanitize-recover=undefined", "-g")
graphs = [g for name in ops.OPS for g in ops.OPS[name].cases() if name in GENERATORS]
graphs += [random_case(op, i) for op in GENERATORS for i in range(int(sys.argv[1]))]
for g in graphs:
    for dsp in (False, True):
        x = extreme_inputs(g, 1)
        got, want = c_harness.run_c(g, x, dsp=dsp), reference.run(g, x)
        assert all(np.array_equal(got[k], want[k]) for k in want), g.name
print(len(graphs))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="UBSan through dlopen is checked on Linux")
def test_no_undefined_behaviour() -> None:
    """Kernels built with -fsanitize=undefined (abort on the first report) on extreme inputs, in a subprocess."""
    root = str(RUNTIME_DIR.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", UBSAN_SCRIPT, "6"], capture_output=True, text=True, cwd=root,
                          env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert int(proc.stdout.split()[-1]) > 60


QEMU_BOARDS = ("cortex-m4", "cortex-m7")


@pytest.mark.qemu
@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None,
                    reason="needs arm-none-eabi-gcc and qemu-system-arm")
@pytest.mark.parametrize("board", QEMU_BOARDS)
def test_kernels_on_cortex_m(board: str, tmp_path) -> None:
    """The op cases, model-like layers and random graphs on the target's instructions (DSP intrinsics and the
    inline assembly), bit-exact with the reference, in QEMU."""
    graphs = [g for op in KERNEL_OPS for g in ops.OPS[op].cases()] + model_like_cases()
    graphs += [random_case(op, i) for op in ("conv2d", "depthwise_conv2d", "fully_connected") for i in range(8)]
    graphs += [random_case(op, i) for op in ("add", "avg_pool2d", "mean", "requantize") for i in range(2)]
    inputs = [[C.random_inputs(g, 21), extreme_inputs(g, 22)] for g in graphs]
    sources = write_sources(tmp_path / "cases", graphs, inputs)
    assert_passes_on_board(tmp_path / "fw", board, sources)


def test_transpose_f32_moves_gradients_exactly() -> None:
    """A boundary transpose also carries fp32 gradients on the backward path (e.g. before a Flatten)."""
    x = Tensor("g_x", (1, 3, 4, 5), "float32")
    y = Tensor("g_y", (1, 5, 3, 4), "float32")
    node = Node("transpose", "to_nchw/grad", ("g_x",), ("g_y",), {"perm": (0, 3, 1, 2)})
    graph = Graph("tf32", {"g_x": x, "g_y": y}, (node,), (IOSpec("g_x", x.shape, "NHWC", False),),
                  (IOSpec("g_y", y.shape, "NHWC", False),))
    data = np.random.default_rng(0).standard_normal(x.shape).astype(np.float32)
    out = run_c(graph, data)["g_y"]
    np.testing.assert_array_equal(out, reference.run(graph, data)["g_y"])
