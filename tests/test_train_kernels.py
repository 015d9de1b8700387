"""The C kernels of the train step (runtime_c/src/train_*.c through codegen/ops/train_*.py) against the numpy
training reference (tte/train): bit for bit, op by op and over whole train steps, on the host and on Cortex-M."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from train_helpers import NetBuilder, mobilenet_like

import tte
from codegen.ops import INCLUDE_DIR, RUNTIME_DIR
from codegen.ops.train_split import split_trained_weights, sram_view
from codegen.ops.train_update import inplace_outputs
from tte import reference
from tte.testing import train_cases as T
from tte.testing.c_harness import CProgram, load_snippet, run_c
from tte.testing.kernel_cases import extreme_inputs, random_case
from tte.testing.models import GraphBuilder
from tte.train import Trainer, TrainOptions, with_state
from tte.train.forward_ops import PRE_CLAMP
from tte.train.fp32 import Xorshift32, exp_f32, log_f32, round_update
from tte.train.spec import scheme_spec

TRAIN_SOURCES = sorted(RUNTIME_DIR.glob("src/train_*.c"))
# The ops of tte/train's forward_ops, grad_ops, update_ops and head (tte/train/op_grads.py is another family).
MASKED = ("add", "avg_pool2d", "conv2d", "depthwise_conv2d", "fully_connected", "mean", "requantize")
TRAINING_OPS = {f"{op}_mask" for op in MASKED} | {
    "gather_channels", "fully_connected_f32", "softmax_cross_entropy", "apply_mask", "grad_add",
    "conv2d_input_grad", "depthwise_conv2d_input_grad", "fully_connected_input_grad", "mean_grad",
    "avg_pool2d_grad", "pad_grad", "bias_update", "bias_update_f32", "conv2d_weight_update",
    "depthwise_conv2d_weight_update", "fully_connected_weight_update", "fully_connected_f32_weight_update"}


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).view(np.uint8)


def _assert_same(got: dict, want: dict, names=None) -> None:
    bad = [k for k in (names or want) if not np.array_equal(_bits(got[k]), _bits(np.asarray(want[k], got[k].dtype)))]
    assert not bad, f"{len(bad)} tensors differ, first {bad[:5]}"


# --- nets -----------------------------------------------------------------------------------------------------------


def pool_net():
    """conv -> pad -> clamped, padded average pool -> depthwise/2 -> conv1x1 -> mean -> fc (NetBuilder)."""
    nb = NetBuilder("pool_net", np.random.default_rng(3).uniform(-1, 1, (16, 9, 9, 3)), 3)
    nb.conv(6, 3, 1, act="relu", name="conv")
    nb.pad(((0, 0), (1, 0), (0, 1), (0, 0)), name="pad")
    nb.avg_pool(3, 2, pad=(1, 1, 1, 1), act=(-100, 90), name="pool")
    nb.depthwise(3, 2, name="dw")
    nb.conv(5, 1, act="none", name="project")
    nb.mean(keepdims=True, name="gap")
    nb.reshape((1, 5), name="flatten")
    nb.fc(4, name="classifier")
    return nb.graph()


def zoo_net():
    """conv -> depthwise multiplier 2 -> requantize, a 300-element add (the LUT mask kernel) -> mean -> fc."""
    b = GraphBuilder("zoo_net", 5, pad_mode="same")
    h = b.conv("conv", b.input("input", (1, 10, 10, 3)), 6, 3, 2, act="relu6")
    h = b.conv("dw", h, 0, 3, act="relu", depthwise=True, multiplier=2)
    r = b.requantize("requant", h, float(b.tensors[h].quant.s) * 1.25, -3)
    p = b.conv("project", h, 12, 1)
    h = b.add("add", r, p)
    h = b.mean("gap", h)
    h = b.fully_connected("classifier", h, 5)
    return b.graph([h])


NETS = {"mobilenet": mobilenet_like, "pool": pool_net, "zoo": zoo_net}


def _partial(net_name: str, graph):
    layers = {"mobilenet": {"blocks.1.pointwise1": 0.25, "blocks.1.depthwise": [5, 2, 9], "blocks.0.pointwise2": 0.5,
                            "classifier": 0.5, "first_conv": [1]},
              "pool": {"dw": [0, 4], "project": 0.5, "classifier": [1, 3], "conv": 0.34},
              "zoo": {"dw": [1, 2], "project": 0.5, "classifier": 0.25, "conv": [0, 2]}}[net_name]
    return scheme_spec({"bias": list(layers)[:2], "weights": layers}, graph)


# (net, update spec, options): every training op, both roundings, the three heads, full and partial weights
CONFIGS = [
    ("mobilenet", "full", TrainOptions()),
    ("mobilenet", "partial", TrainOptions(rounding="nearest")),
    ("mobilenet", "mobiletl:2", TrainOptions(head="fp32")),
    ("mobilenet", "bias-only", TrainOptions(head="new:4", seed=7)),
    ("pool", "full", TrainOptions(qas=False)),
    ("pool", "partial", TrainOptions()),
    ("zoo", "full", TrainOptions(head="fp32", rounding="nearest")),
    ("zoo", "partial", TrainOptions(seed=3)),
]


def _trainer(net_name: str, spec: str, options: TrainOptions) -> Trainer:
    net = NETS[net_name]()
    return Trainer(net, _partial(net_name, net) if spec == "partial" else spec, options)


def _sample(tr: Trainer, rng: np.random.Generator):
    t = tr.program.graph[tr.program.graph.inputs[0].tensor]
    return rng.integers(-128, 128, t.shape).astype(np.int8), int(rng.integers(0, tr.num_classes))


# --- forward with masks ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("op", MASKED)
def test_mask_variants_equal_the_reference(op):
    """int8 output and mask bit-exact on the op's cases and 12 random graphs (quantization corners), on random
    and on extreme (-128/127) inputs; weight layers also with a split (flash + SRAM) weight."""
    from tte import ops

    graphs = ops.get(op).cases() + [random_case(op, i) for i in range(12)]
    cases = [T.mask_case(g) for g in graphs]
    if op in T.WEIGHT_OPS:
        cases += [T.mask_case(T.renamed(g, "/split"), split=0.4, seed=i) for i, g in enumerate(graphs)]
    c_graph = T.merge(op, [c for c, _ in cases])
    ref_graph = T.merge(op, [r for _, r in cases])
    for feeds in (T.random_feeds(c_graph, 1), extreme_inputs(c_graph, 2)):
        want = reference.run(ref_graph, feeds)
        for dsp in (False, True):  # the portable and the (emulated) DSP dot products of tte_dot.h
            _assert_same(run_c(c_graph, feeds, dsp=dsp), want)


# --- gradients and updates on random geometry -------------------------------------------------------------------


def _batch1(graphs):
    return [g for g in graphs if g[g.nodes[0].inputs[0]].shape[0] == 1 and g[g.nodes[0].outputs[0]].shape[0] == 1]


@pytest.mark.parametrize("op", T.WEIGHT_OPS)
def test_input_gradients_equal_the_reference(op):
    """Bit-exact input gradients (whole and split weights) on random kernels, strides, pads and multipliers."""
    graphs = _batch1([random_case(op, i) for i in range(10)])
    cases = [T.input_grad_case(g) for g in graphs]
    cases += [T.input_grad_case(T.renamed(g, "/split"), 0.5, i) for i, g in enumerate(graphs)]
    c_graph, ref_graph = T.merge(op, [c for c, _ in cases]), T.merge(op, [r for _, r in cases])
    feeds = T.random_feeds(c_graph, 3)
    _assert_same(run_c(c_graph, feeds), reference.run(ref_graph, feeds))


@pytest.mark.parametrize("op", T.WEIGHT_OPS)
def test_weight_updates_equal_the_reference(op):
    """Fused weight updates bit-exact (new weights and PRNG state) for all or part of the input channels, both
    roundings, QAS on and off, with large learning rates so that most elements move."""
    graphs = _batch1([random_case(op, i) for i in range(8)])
    variants = ((1.0, "stochastic"), (0.5, "nearest"))
    cases = [T.weight_update_case(T.renamed(g, f"/{k}"), frac, rounding, seed=i, qas=i % 3 != 0)
             for i, g in enumerate(graphs) for k, (frac, rounding) in enumerate(variants)]
    c_graph, ref_graph = T.merge(op, [c for c, _ in cases]), T.merge(op, [r for _, r in cases])
    for lr in (0.05, 500.0):
        feeds = T.random_feeds(c_graph, 4, lr=lr)
        got, want = run_c(c_graph, feeds), reference.run(ref_graph, feeds)
        _assert_same(got, want)
    moved = [np.mean(got[o] != c_graph[c_graph.producer(o).inputs[2]].data) for o in got if o.endswith(":new")
             and got[o].dtype == np.int8]
    assert np.mean(moved) > 0.1  # the updates are not all below one LSB


# --- whole train steps ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("net_name,spec,options", CONFIGS, ids=[f"{n}-{s}-{i}" for i, (n, s, _) in enumerate(CONFIGS)])
def test_train_step_tensors_equal_the_reference(net_name, spec, options):
    """Every tensor of a train step (forward, masks, loss, gradients, new parameters, PRNG state) bit-exact."""
    tr = _trainer(net_name, spec, options)
    g = with_state(tr.program.graph, tr.params())
    x, label = _sample(tr, np.random.default_rng(11))
    feeds = {g.inputs[0].tensor: x, "tte:label": np.array([label], np.int32), "tte:lr": np.array([0.1], np.float32)}
    env = reference.run(g, feeds, keep=True)
    got = run_c(T.all_outputs(g), feeds)
    _assert_same(got, env, list(got))


def test_configs_cover_every_training_op():
    from codegen.ops import load_all
    from tte import ops

    assert TRAINING_OPS <= set(ops.OPS) and TRAINING_OPS <= set(load_all())
    assert set(MASKED) <= set(PRE_CLAMP)
    graphs = [split_trained_weights(_trainer(*config).program).graph for config in CONFIGS]
    assert TRAINING_OPS - {n.op for g in graphs for n in g.nodes} == set()


@pytest.mark.parametrize("net_name,spec,options", CONFIGS, ids=[f"{n}-{s}-{i}" for i, (n, s, _) in enumerate(CONFIGS)])
def test_twenty_steps_equal_the_reference(net_name, spec, options):
    """20 steps with the state updated in place (split weights: trained channels in SRAM, the rest const):
    losses and parameters equal the reference's bit for bit (the acceptance bound is <= 1 LSB on <= 0.1%)."""
    tr = _trainer(net_name, spec, options)
    tg = split_trained_weights(tr.program)
    prog = CProgram(tg.graph)
    rng = np.random.default_rng(5)
    lr = 0.05 if options.qas else 500.0  # without QAS the integer step is lr * s_w^2 / s_x^2 times smaller
    for _ in range(20):
        x, label = _sample(tr, rng)
        want = tr.train_step(x, label, lr)
        got = prog.run({tg.graph.inputs[0].tensor: x, "tte:label": np.array([label], np.int32),
                        "tte:lr": np.array([lr], np.float32)})
        assert got["tte:loss"][0] == np.float32(want)
    params, total, off = tr.params(), 0, 0
    for state, _ in tg.state:
        view = sram_view(tg.graph, state)
        want = params[view[0]][..., view[1]] if view else params[state]
        got = prog.read(state)
        total += got.size
        off += int(np.sum(got != want))
        if got.dtype != np.float32:
            assert np.abs(got.astype(np.int64) - want).max() <= 1, state
    assert off <= 0.001 * total, f"{off} of {total} parameters differ"
    assert off == 0  # in fact every float operation follows the reference's order
    changed = [s for s, _ in tg.state if not np.array_equal(prog.read(s), tg.graph[s].data)]
    assert len(changed) >= 0.6 * len(tg.state), changed  # (int32 biases barely move without QAS)
    print(f"{off} of {total} parameters differ; {len(changed)} of {len(tg.state)} state tensors changed")


def test_split_moves_only_the_trained_channels_to_sram():
    tr = _trainer("mobilenet", "partial", TrainOptions())
    tg = split_trained_weights(tr.program)
    slices = tr.program.written_slices()
    for name, cols in slices.items():
        if cols is None:
            assert name in tg.state_names
            continue
        sram = f"{name}:sram"
        assert name not in tg.state_names and sram in tg.state_names
        assert tg.graph[sram].shape[-1] == len(cols) and tg.graph[name].is_const
        readers = [n for n in tg.graph.nodes if name in n.inputs]
        assert {n.op for n in readers} <= {"conv2d_mask", "depthwise_conv2d_mask", "fully_connected_mask",
                                           "conv2d_input_grad", "depthwise_conv2d_input_grad",
                                           "fully_connected_input_grad"}
        assert all(sram in n.inputs for n in readers)
    pairs = [p for n in tg.graph.nodes for p in inplace_outputs(n)]
    assert ("blocks.1.pointwise1:w:sram", "blocks.1.pointwise1:w:sram:new") in pairs
    assert sum(1 for i, _ in pairs if i.startswith("tte:rng")) == sum(n.op.endswith("update") for n in tg.graph.nodes)


MODELS = Path(tte.__file__).resolve().parents[1].parent / "shared" / "models"


@pytest.mark.skipif(not (MODELS / "mbv2-w0.35-int8.onnx").is_file(), reason="needs ../shared/models")
def test_paper_model_sparse_update_equals_the_reference():
    """The paper's mbv2-w0.35 with its 99 KB sparse scheme (partial-channel weights split flash + SRAM): three
    steps in C equal the numpy reference, losses and all trained parameters."""
    from tte.frontend import load

    tr = Trainer(load(MODELS / "mbv2-w0.35-int8.onnx"), f"sparse:{MODELS / 'paper_schemes.json'}#mbv2-w0.35/99kb")
    tg = split_trained_weights(tr.program)
    assert any(sram_view(tg.graph, s) for s in tg.state_names)
    prog = CProgram(tg.graph)
    rng = np.random.default_rng(1)
    for _ in range(3):
        x, label = _sample(tr, rng)
        want = tr.train_step(x, label, 0.02)
        got = prog.run({tg.graph.inputs[0].tensor: x, "tte:label": np.array([label], np.int32),
                        "tte:lr": np.array([0.02], np.float32)})
        assert got["tte:loss"][0] == np.float32(want)
    params = tr.params()
    for state in tg.state_names:
        view = sram_view(tg.graph, state)
        assert np.array_equal(prog.read(state), params[view[0]][..., view[1]] if view else params[state]), state


# --- float building blocks ------------------------------------------------------------------------------------------

_MATH = """
#include <stdint.h>
#include "tte_train_math.h"
void exp_all(int n, const float *x, float *y) { int i; for (i = 0; i < n; i++) y[i] = tte_exp_f32(x[i]); }
void log_all(int n, const float *x, float *y) { int i; for (i = 0; i < n; i++) y[i] = tte_log_f32(x[i]); }
void steps(int n, const float *d, uint32_t *rng, int32_t *out)
{ int i; for (i = 0; i < n; i++) out[i] = tte_round_step_f32(d[i], rng); }
"""
_MATH_CDEF = """void exp_all(int n, const float *x, float *y); void log_all(int n, const float *x, float *y);
void steps(int n, const float *d, uint32_t *rng, int32_t *out);"""


def _call(lib, fn, x: np.ndarray, dtype, *extra):
    from cffi import FFI

    ffi = FFI()
    out = np.zeros(x.size, dtype)
    getattr(lib, fn)(x.size, ffi.cast("float *", x.ctypes.data), *extra, ffi.cast("void *", out.ctypes.data))
    return out


def test_exp_log_and_rounding_equal_the_reference():
    lib = load_snippet(_MATH, _MATH_CDEF)
    rng = np.random.default_rng(0)
    x = np.concatenate([np.linspace(-90, 90, 40001), rng.normal(0, 5, 20000)]).astype(np.float32)
    assert np.array_equal(_bits(_call(lib, "exp_all", x, np.float32)), _bits(exp_f32(x)))
    y = np.concatenate([np.geomspace(1.2e-38, 3e38, 40001), rng.uniform(0.5, 2.0, 20000)]).astype(np.float32)
    assert np.array_equal(_bits(_call(lib, "log_all", y, np.float32)), _bits(log_f32(y)))
    d = np.concatenate([rng.normal(0, 3, 20000), [0.5, -0.5, 1.5, -2.5, 3e7, -3e7, 0.0, -0.0]]).astype(np.float32)
    from cffi import FFI

    state = np.array([12345], np.uint32)
    got = _call(lib, "steps", d, np.int32, FFI().cast("uint32_t *", state.ctypes.data))
    ref_rng = Xorshift32(12345)
    assert np.array_equal(got, round_update(d, "stochastic", ref_rng)) and state[0] == ref_rng.state
    assert np.array_equal(_call(lib, "steps", d, np.int32, FFI().NULL), round_update(d, "nearest", None))


UBSAN_SCRIPT = """
import sys
sys.path.insert(0, "tests")
from tte.testing import c_harness
c_harness.CFLAGS += ("-fsanitize=undefined,float-cast-overflow", "-fno-sanitize-recover=all", "-g")
import test_train_kernels as t
for op in t.MASKED:
    t.test_mask_variants_equal_the_reference(op)
for op in t.T.WEIGHT_OPS:
    t.test_input_gradients_equal_the_reference(op)
    t.test_weight_updates_equal_the_reference(op)
for k in (0, 5, 7):
    t.test_train_step_tensors_equal_the_reference(*t.CONFIGS[k])
print("checked")
"""


@pytest.mark.skipif(sys.platform != "linux", reason="UBSan through dlopen is checked on Linux")
def test_no_undefined_behaviour():
    """The op and train step tests above with kernels built with -fsanitize=undefined,float-cast-overflow
    (abort on the first report), in a subprocess."""
    root = RUNTIME_DIR.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", UBSAN_SCRIPT], capture_output=True, text=True, cwd=root, env=env)
    assert proc.returncode == 0 and proc.stdout.split()[-1] == "checked", proc.stderr[-3000:]


# --- Cortex-M -------------------------------------------------------------------------------------------------------

CPU_FLAGS = {
    "cortex-m7": ["-mcpu=cortex-m7", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-sp-d16"],
    "cortex-m4": ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"],
    "cortex-m0": ["-mcpu=cortex-m0", "-mthumb", "-mfloat-abi=soft"],
}


@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None, reason="needs arm-none-eabi-gcc")
@pytest.mark.parametrize("cpu", sorted(CPU_FLAGS))
def test_train_kernels_compile_for_cortex_m(cpu, tmp_path):
    """-O2 -Wall -Wextra -Werror -ffp-contract=off, and -Wdouble-promotion: a double constant in float code would
    change the bits (and cost a software double on an FPU without doubles)."""
    for src in TRAIN_SOURCES:
        cmd = ["arm-none-eabi-gcc", *CPU_FLAGS[cpu], "-O2", "-Wall", "-Wextra", "-Werror", "-ffp-contract=off",
               "-std=c99", "-Wdouble-promotion", "-Wshadow", f"-I{INCLUDE_DIR}", "-c", str(src), "-o",
               str(tmp_path / f"{src.stem}.o")]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        assert proc.returncode == 0, f"{src.name}:\n{proc.stderr}"
    assert len(TRAIN_SOURCES) >= 8


@pytest.mark.qemu
@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None,
                    reason="needs arm-none-eabi-gcc and qemu-system-arm")
def test_train_steps_on_cortex_m7(tmp_path):
    """Whole train steps (every intermediate tensor compared byte for byte with the numpy reference) on the
    Cortex-M7 FPU in QEMU: with the host tests above, host C == Cortex-M C == reference."""
    from tte.targets import build, run_qemu, write_project
    from tte.testing.kernel_firmware import write_sources

    graphs, inputs = [], []
    for k in (0, 2, 6):
        net_name, spec, options = CONFIGS[k]
        tr = _trainer(net_name, spec, options)
        g = T.all_outputs(with_state(tr.program.graph, tr.params()))
        x, label = _sample(tr, np.random.default_rng(k))
        graphs.append(replace(g, name=f"{net_name}_{k}"))
        inputs.append([{g.inputs[0].tensor: x, "tte:label": np.array([label], np.int32),
                        "tte:lr": np.array([0.1], np.float32)}])
    sources = write_sources(tmp_path / "cases", graphs, inputs)
    fw = build(write_project(tmp_path / "fw", "cortex-m7", sources, stack_bytes=8192))
    run = run_qemu(fw.elf, timeout=120, board="cortex-m7")
    assert run.status == 0, f"{run.message}\n{run.output[-2000:]}"
