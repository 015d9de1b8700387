"""Row-stripe execution of the first layers (tte/passes/stripes.py, codegen/stripes.py): chosen only when the
plain plan is over the SRAM budget, bit-exact with the layer-by-layer reference, in inference and training."""

from __future__ import annotations

import numpy as np
import pytest
from train_helpers import NetBuilder

from tte import host
from tte.compile import TrainConfig, build, write_output
from tte.passes.normalize import normalize
from tte.passes.stripes import STAGE_OP, input_rows, schedule, stage_node, stripe_chain, with_stage
from tte.reference import run
from tte.train import Trainer, TrainOptions


def odd_net():
    """Odd, non-square sizes; stride 2 with padding; a 5x5 depthwise with padding 2; a 1x1 expansion."""
    nb = NetBuilder("odd_net", np.random.default_rng(7).uniform(-1, 1, (16, 23, 17, 3)), 7)
    nb.conv(8, 3, 2, name="first_conv")
    nb.depthwise(5, 1, name="dw5")
    nb.conv(24, 1, name="expand")
    nb.depthwise(3, 2, name="dw_s2")
    nb.conv(6, 1, act="none", name="project")
    nb.mean(keepdims=True, name="pool")
    nb.reshape((1, 6), name="flatten")
    nb.fc(4, name="classifier")
    return nb.graph()


@pytest.fixture(scope="module")
def graph():
    return normalize(odd_net())


def test_schedule_covers_every_output_row_with_the_rows_it_reads(graph):
    chain = stripe_chain(graph)
    assert [n.name for n in chain] == ["first_conv", "dw5", "expand", "dw_s2", "project"]
    node, scratch = stage_node(graph, chain, 2)
    sub = node.attrs["stage"].graph
    stripes = schedule(sub, 2)
    out_h = graph["project:out"].shape[1]
    assert [s[-1].out_rows for s in stripes] == [(r, min(r + 2, out_h)) for r in range(0, out_h, 2)]
    for stripe in stripes:
        for prev, call in zip(stripe, stripe[1:], strict=False):
            assert prev.out_rows == call.in_rows == input_rows(call.node, sub, call.out_rows)
    assert len(scratch) == 2 and all(t.dtype == "int8" for t in scratch.values())


def test_inference_over_budget_runs_in_stripes_bit_exact(graph, tmp_path):
    plain = build(graph, "m").report
    compiled = build(graph, "m", budget=plain["peak_sram_bytes"] - 1)
    report = compiled.report
    assert report["peak_sram_bytes"] < plain["peak_sram_bytes"]
    assert report["layers"][0]["op"] == STAGE_OP and report["macs_forward"] > plain["macs_forward"]
    model = host.load(write_output(tmp_path / "out", compiled.files), fresh=True)
    rng = np.random.default_rng(0)
    for _ in range(4):
        x = rng.integers(-128, 128, model.inputs[0].shape).astype(np.int8)
        want = run(graph, x)[graph.outputs[0].tensor]
        np.testing.assert_array_equal(model.infer(x), want)


@pytest.mark.parametrize("update,head", [("last:2", "keep"), ("last:1", "new:3")])
def test_train_step_over_budget_runs_in_stripes_bit_exact(graph, tmp_path, update, head):
    config = TrainConfig(update, head)
    plain = build(graph, "m", train=config).report
    compiled = build(graph, "m", budget=plain["peak_sram_bytes"] - 1, train=config)
    code = compiled.model.train
    assert code.program.graph.nodes[0].op == STAGE_OP and compiled.report["arena_bytes"] < plain["arena_bytes"]
    assert "stripe 1/" in compiled.files["m.c"] and STAGE_OP in compiled.files["plan.txt"]
    model = host.load(write_output(tmp_path / "out", compiled.files), fresh=True)
    trainer = Trainer(graph, update, TrainOptions(head=head))
    rng = np.random.default_rng(1)
    for _ in range(8):
        x = rng.integers(-128, 128, model.inputs[0].shape).astype(np.int8)
        y = int(rng.integers(0, model.classes))
        assert model.train_step(x, y, 0.1) == np.float32(trainer.train_step(x, y, 0.1))
    np.testing.assert_array_equal(model.infer_float(x).reshape(-1), trainer.infer(x).reshape(-1))


@pytest.mark.parametrize("length,rows", [(5, 1), (2, 4), (4, 16)])
def test_any_stage_length_and_stripe_height_is_bit_exact(graph, tmp_path, length, rows):
    node, scratch = stage_node(graph, stripe_chain(graph)[:length], rows)
    staged = with_stage(graph, node, scratch)
    model = host.load(write_output(tmp_path / "out", build(staged, "m").files), fresh=True)
    rng = np.random.default_rng(length)
    for _ in range(3):
        x = rng.integers(-128, 128, model.inputs[0].shape).astype(np.int8)
        np.testing.assert_array_equal(model.infer(x), run(graph, x)[graph.outputs[0].tensor])
