"""A MobileNetV3-style block (HardSwish, squeeze-and-excitation with Sigmoid and a broadcast Mul) and a DS-CNN
keyword-spotting net: the reference equals tflite-micro, the compiled C equals the reference, and they train
(gradients equal PyTorch's; a few steps lower the loss)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from op_nets import ds_cnn, mobilenet_v3_block
from test_op_grads import check

from tte import host
from tte.compile import compile_graph
from tte.ops.cases import random_inputs
from tte.reference import run
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
