"""A MobileNetV3-style block (HardSwish, squeeze-and-excitation with Sigmoid and a broadcast Mul) and a DS-CNN
keyword-spotting net: the reference equals tflite-micro, the compiled C equals the reference, and they train
(gradients equal PyTorch's; a few steps lower the loss), in the numpy reference, the host C and QEMU alike."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from op_nets import broadcast_add_net, ds_cnn, mobilenet_v3_block
from test_op_grads import check

from tte import host
from tte.compile import TrainConfig, compile_graph
from tte.ops.cases import random_inputs
from tte.reference import run
from tte.simulate import simulate
from tte.targets.harness import train_emulator
from tte.testing.tflm import run_graph
from tte.train import Trainer, TrainOptions

NETS = {"mbv3_block": mobilenet_v3_block, "ds_cnn": ds_cnn}


@pytest.mark.parametrize("net", sorted(NETS))
def test_reference_matches_tflite_micro_and_c(net: str, tmp_path: Path) -> None:
    graph, _ = NETS[net]()
    compile_graph(graph, tmp_path / net)
    model = host.load(tmp_path / net)
    for seed in range(3):
        x = random_inputs(graph, seed)
        want = run(graph, x)
        tflm = run_graph(graph, x)
        y = graph.outputs[0].tensor
        np.testing.assert_array_equal(want[y], tflm[y], err_msg=f"{net} seed {seed}: reference vs tflite-micro")
        got = model.infer(x[graph.inputs[0].tensor])
        np.testing.assert_array_equal(got.reshape(want[y].shape), want[y], err_msg=f"{net} seed {seed}: C")


@pytest.mark.parametrize("net", sorted(NETS))
def test_gradients_match_torch_and_loss_falls(net: str) -> None:
    graph, x = NETS[net]()
    tr = Trainer(graph, "full", TrainOptions(rounding="nearest"))
    errors = check(tr, x, label=1)
    assert len([k for k in errors if not k.startswith("d/")]) == sum(lu.bias + lu.weight for lu in tr.spec.layers)
    first = tr.train_step(x, 1, 0.05)
    for _ in range(8):
        last = tr.train_step(x, 1, 0.05)
    assert last < first


QEMU_STEPS = 4
HAS_ARM = shutil.which("arm-none-eabi-gcc") is not None and shutil.which("qemu-system-arm") is not None


@pytest.mark.qemu
@pytest.mark.skipif(not HAS_ARM, reason="needs arm-none-eabi-gcc and qemu-system-arm (make toolchain)")
@pytest.mark.parametrize("net", [*sorted(NETS), "bcast_add"])
def test_full_training_in_qemu_equals_host_and_reference(net: str, tmp_path: Path) -> None:
    """QEMU_STEPS `full` train steps on cortex-m4: QEMU == host C (losses and parameters, bit for bit) == the
    numpy training reference (losses)."""
    graph, x = {**NETS, "bcast_add": broadcast_add_net}[net]()
    out = tmp_path / net
    compile_graph(graph, out, target="cortex-m4", train=TrainConfig("full"))
    rng = np.random.default_rng(5)
    xs = np.stack([x[0], *rng.integers(-128, 128, (2, *x.shape[1:]), dtype=np.int8)])
    classes = int(np.prod(graph[graph.outputs[0].tensor].shape))
    ys = np.array([1, 0, classes - 1])
    np.savez(tmp_path / "train.npz", x=xs, y=ys)
    run = train_emulator(out, tmp_path / "train.npz", QEMU_STEPS, lr=0.05)
    on_host = simulate(out, tmp_path / "train.npz", steps=QEMU_STEPS, lr=0.05, progress=False)
    assert run.summary["params_sha256"] == on_host["params_sha256"]
    assert run.summary["losses"] == on_host["losses"]
    tr = Trainer(graph, "full", TrainOptions())
    want = [tr.train_step(xs[i % 3], int(ys[i % 3]), 0.05) for i in range(QEMU_STEPS)]
    np.testing.assert_array_equal(np.float32(on_host["losses"]), np.float32(want))
    assert len(set(on_host["losses"])) > 1  # the parameters changed between steps
