"""The fused block backward (tte/train/fuse_block.py, block_grad.py; runtime_c/src/train_block_grad.c): which
chains the pass fuses, fused == unfused in numpy (losses, parameters and PRNG state, bit for bit), the C kernel ==
the numpy reference on the host and in QEMU, and the memory it saves."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from train_helpers import NetBuilder, mobilenet_like

from tte import host
from tte.compile import TrainConfig, build, write_output
from tte.train import Trainer, TrainOptions
from tte.train.block_grad import BIAS_ASSIGN, BLOCK_GRAD, jump
from tte.train.fp32 import Xorshift32
from tte.train.spec import scheme_spec

MODELS = Path(__file__).resolve().parents[1].parent / "shared" / "models"
# block 0: pw1 weight whole, dw bias frozen; block 1: pw1 weight on half its input channels, every bias
SPARSE = {"bias": ["blocks.0.pointwise1", "blocks.1.pointwise1", "blocks.1.depthwise", "blocks.1.pointwise2"],
          "weights": {"blocks.0.pointwise1": 1, "blocks.1.pointwise1": 0.5}, "classifier": "full"}


def odd_net():
    """A block of 10 expanded channels (not a multiple of 4) around a 5x5 stride-2 depthwise, 9x9 input."""
    nb = NetBuilder("odd_net", np.random.default_rng(4).uniform(-1, 1, (16, 9, 9, 3)), 4)
    nb.conv(6, 3, 1, name="stem")
    nb.conv(10, 1, name="blocks.0.pointwise1")
    nb.depthwise(5, 2, name="blocks.0.depthwise")
    nb.conv(6, 1, act="none", name="blocks.0.pointwise2")
    nb.mean(keepdims=True, name="pool")
    nb.reshape((1, 6), name="flatten")
    nb.fc(3, name="classifier")
    return nb.graph()


ODD = {"bias": ["stem", "blocks.0.pointwise1", "blocks.0.depthwise"], "weights": {"blocks.0.pointwise1": [1, 4, 5]},
       "classifier": "full"}
NETS = {"mobilenet": (mobilenet_like, SPARSE, "new:4"), "odd": (odd_net, ODD, "keep")}


def _trainer(net: str, spec: str, rounding: str, fuse: bool = True) -> Trainer:
    make, scheme, head = NETS[net]
    g = make()
    parsed = scheme_spec(scheme, g) if spec == "sparse" else spec
    return Trainer(g, parsed, TrainOptions(head=head, rounding=rounding, fuse_blocks=fuse, seed=5))


def _samples(tr: Trainer, n: int, seed: int) -> list[tuple[np.ndarray, int]]:
    rng = np.random.default_rng(seed)
    shape = tr.program.graph[tr.program.graph.inputs[0].tensor].shape
    return [(rng.integers(-128, 128, shape).astype(np.int8), int(rng.integers(0, tr.num_classes))) for _ in range(n)]


def _ops(tr: Trainer) -> list[str]:
    return [n.op for n in tr.program.backward_nodes()]


def test_jump_ahead_equals_stepping():
    for state, n in ((1, 1), (0x9E3779B9, 7), (12345, 4096), (0xDEADBEEF, 10_007)):
        assert jump(state, n) == int(Xorshift32(state).draws(n)[-1])
    assert jump(77, 0) == 77


@pytest.mark.parametrize("spec,fused", [("bias-only", 2), ("sparse", 2), ("mobiletl:2", 2), ("full", 0)])
def test_pass_fuses_supported_blocks_only(spec, fused):
    """Trained depthwise weights (full) interrupt the chain; a trained pw2 weight (mobiletl) is updated after it."""
    tr = _trainer("mobilenet", spec, "stochastic")
    ops = _ops(tr)
    assert ops.count(BLOCK_GRAD) == fused
    assert _ops(_trainer("mobilenet", spec, "stochastic", fuse=False)).count(BLOCK_GRAD) == 0
    if fused:
        g = tr.program.graph
        expanded = {g[n.inputs[1]].shape[0] for n in tr.program.forward.nodes if n.name.endswith("pointwise1")}
        wide = [t for n in tr.program.backward_nodes() if n.op != BLOCK_GRAD for t in n.outputs
                if g[t].dtype == "float32" and g[t].shape[-1] in expanded]
        assert not wide, f"expanded-width gradients left: {wide}"
        assert "depthwise_conv2d_input_grad" not in ops and BIAS_ASSIGN in ops


@pytest.mark.parametrize("net,spec", [("mobilenet", "sparse"), ("mobilenet", "bias-only"), ("mobilenet", "mobiletl:2"),
                                      ("odd", "sparse")])
@pytest.mark.parametrize("rounding", ["stochastic", "nearest"])
def test_fused_equals_unfused_in_numpy(net, spec, rounding):
    fused, plain = _trainer(net, spec, rounding), _trainer(net, spec, rounding, fuse=False)
    assert _ops(fused).count(BLOCK_GRAD) >= 1
    for x, y in _samples(fused, 4, seed=2):
        assert fused.train_step(x, y, 0.08) == plain.train_step(x, y, 0.08)
    a, b = fused.params(), plain.params()
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].tobytes() == b[k].tobytes(), k
    assert ("tte:rng" in a) == (rounding == "stochastic")


def test_trace_reports_the_fused_parameters_gradients():
    """Trainer.trace_step gives the same parameter gradients with and without fusion (checked against torch in
    tests/test_gradients.py)."""
    fused, plain = _trainer("mobilenet", "sparse", "nearest"), _trainer("mobilenet", "sparse", "nearest", False)
    x, y = _samples(fused, 1, seed=6)[0]
    a, b = fused.trace_step(x, y), plain.trace_step(x, y)
    assert a.loss == b.loss and a.grads.keys() == b.grads.keys() and len(a.grads) == 8
    for k in a.grads:
        assert a.grads[k].tobytes() == b.grads[k].tobytes(), k


def _compiled(tr_net: str, spec: str, rounding: str, folder: Path, target: str = "host") -> Path:
    make, scheme, head = NETS[tr_net]
    update = spec
    if spec == "sparse":
        path = folder / "scheme.json"
        path.write_text(json.dumps(scheme))
        update = f"sparse:{path}"
    compiled = build(make(), "m", target=target, train=TrainConfig(update, head, rounding, seed=5))
    out = write_output(folder / "out", compiled.files)
    assert "tte_block_grad_s8_f32(" in (out / "m.c").read_text()
    return out


def _reference_blob(model: host.HostModel, tr: Trainer) -> bytes:
    """The reference's parameters in the C params blob layout (a split weight: its trained columns only)."""
    ref, parts = tr.params(), []
    for p in model.train_info["params"]:
        t = p["tensor"]
        v = ref[t] if p["columns"] is None else ref[t.removesuffix(":sram")][..., p["columns"]]
        parts.append(np.ascontiguousarray(v).tobytes())
    return b"".join(parts)


@pytest.mark.parametrize("net,spec,rounding", [("mobilenet", "sparse", "stochastic"), ("odd", "sparse", "nearest"),
                                               ("mobilenet", "bias-only", "stochastic"),
                                               ("mobilenet", "mobiletl:2", "stochastic")])
def test_host_c_equals_the_reference(net, spec, rounding, tmp_path):
    model = host.load(_compiled(net, spec, rounding, tmp_path), fresh=True)
    tr = _trainer(net, spec, rounding)
    for x, y in _samples(tr, 5, seed=3):
        assert model.train_step(x, y, 0.08) == tr.train_step(x, y, 0.08)
    assert model.params_get() == _reference_blob(model, tr)


@pytest.mark.qemu
@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None,
                    reason="needs arm-none-eabi-gcc and qemu-system-arm (make toolchain)")
def test_qemu_equals_the_host(tmp_path):
    from tte.targets.harness import train_emulator

    out = _compiled("mobilenet", "sparse", "stochastic", tmp_path, target="cortex-m7")
    tr = _trainer("mobilenet", "sparse", "stochastic")
    samples = _samples(tr, 4, seed=4)
    np.savez(tmp_path / "train.npz", x=np.stack([x[0] for x, _ in samples]), y=np.array([y for _, y in samples]))
    run = train_emulator(out, tmp_path / "train.npz", 4, lr=0.08)
    model = host.load(out, fresh=True)
    losses = [model.train_step(x, y, 0.08) for x, y in samples]
    assert run.summary["losses"] == losses and run.params == model.params_get()


@pytest.mark.skipif(not (MODELS / "mbv2-w0.35-int8.onnx").is_file(), reason="needs ../shared/models")
def test_fusion_lowers_the_backward_peak_of_a_paper_model():
    from codegen.train_layout import plan_layout
    from tte.compile import load, train_program

    g = load(MODELS / "mbv2-w0.35-int8.onnx")
    config = TrainConfig(f"sparse:{MODELS / 'paper_schemes.json'}#mbv2-w0.35/99kb", "new:10")
    peaks = []
    for fuse in (True, False):
        program = train_program(g, config)
        if not fuse:
            from tte.train import build_training_graph

            program = build_training_graph(program.forward, program.spec, TrainOptions(head="new:10",
                                                                                       fuse_blocks=False))
        plan = plan_layout(program, "m").planned.plan
        peaks.append(max(plan.live_bytes()[program.num_forward:]))
    assert peaks[0] < 0.5 * peaks[1], peaks
