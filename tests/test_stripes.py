"""Row-stripe execution of the first layers (tte/passes/stripes.py, codegen/stripes.py): chosen only when the
plain plan is over the SRAM budget, bit-exact with the layer-by-layer reference, in inference and training."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from train_helpers import NetBuilder, host_and_emulator

from tte import host, ops
from tte.cli import main as tte_main
from tte.compile import TrainConfig, build, write_output
from tte.passes.normalize import normalize
from tte.passes.stripe_schedule import call_graph, data_inputs, line_buffers, row_bytes, scratch_slots
from tte.passes.stripes import (
    STAGE_OP,
    input_rows,
    output_offset,
    schedule,
    stage_cuts,
    stage_macs,
    stage_node,
    stripe_chain,
    stripe_mode,
    with_stage,
)
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


def residual_net():
    """Two residual blocks (the add keeps its input's rows in a third slot), odd sizes, a 5x5 depthwise."""
    nb = NetBuilder("residual_net", np.random.default_rng(5).uniform(-1, 1, (16, 61, 13, 3)), 5)
    nb.conv(8, 3, 2, name="first_conv")
    for i, (expand, k) in enumerate(((2, 3), (3, 5))):
        skip = nb.x
        nb.conv(8 * expand, 1, name=f"b{i}.expand")
        nb.depthwise(k, 1, name=f"b{i}.dw")
        nb.conv(8, 1, act="none", name=f"b{i}.project")
        nb.add(skip, name=f"b{i}.residual")
    nb.depthwise(3, 2, name="dw_s2")
    nb.conv(6, 1, act="none", name="project")
    nb.mean(keepdims=True, name="pool")
    nb.reshape((1, 6), name="flatten")
    nb.fc(4, name="classifier")
    return nb.graph()


@pytest.fixture(scope="module")
def graph():
    return normalize(odd_net())


@pytest.fixture(scope="module")
def resnet():
    return normalize(residual_net())


def test_residual_blocks_are_striped_whole(resnet):
    """A stage may end after a block's add, never inside a block (the block input is still read there)."""
    chain = stripe_chain(resnet)
    assert [n.name for n in chain][-3:] == ["b1.residual", "dw_s2", "project"]
    assert stage_cuts(resnet, chain) == [1, 5, 9, 10, 11]
    node, scratch = stage_node(resnet, chain[:9], 2)
    slot_of, _ = scratch_slots(node.attrs["stage"].graph, 2)
    assert len(scratch) == 3 and slot_of["first_conv:out"] != slot_of["b0.project:out"]


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


def test_inference_under_one_stage_runs_two_stages_bit_exact(resnet, tmp_path):
    """The residual net's inference needs 5,796 bytes with one stage, 4,500 with two: under 5,000 two stages run
    in a row, the second's input nested in the first's, bit-exact."""
    compiled = build(resnet, "m", budget=5000)
    assert compiled.report["peak_sram_bytes"] <= 5000
    assert [n["name"] for n in compiled.report["layers"] if n["op"] == STAGE_OP] == [
        "stage[first_conv .. b0.residual]", "stage[b1.expand .. project]"]
    assert len(compiled.model.plan.nested) == 2
    model = host.load(write_output(tmp_path / "out", compiled.files), fresh=True)
    rng = np.random.default_rng(3)
    for _ in range(3):
        x = rng.integers(-128, 128, model.inputs[0].shape).astype(np.int8)
        np.testing.assert_array_equal(model.infer(x), run(resnet, x)[resnet.outputs[0].tensor])


TWO_STAGES = 7000  # bytes: the residual net's train step needs 7,936 with one stage, 6,640 with two


@pytest.mark.parametrize("net,update,head,budget", [("odd", "last:2", "keep", None), ("odd", "last:1", "new:3", None),
                                                    ("res", "last:1", "new:3", None),
                                                    ("res", "last:1", "new:3", TWO_STAGES)])
def test_train_step_over_budget_runs_in_stripes_bit_exact(graph, resnet, tmp_path, net, update, head, budget):
    """Just over the plain plan: one stage; under what one stage can reach: two in a row."""
    graph = graph if net == "odd" else resnet
    config = TrainConfig(update, head)
    plain = build(graph, "m", train=config).report
    compiled = build(graph, "m", budget=budget or plain["peak_sram_bytes"] - 1, train=config)
    code = compiled.model.train
    assert code.program.graph.nodes[0].op == STAGE_OP and compiled.report["arena_bytes"] < plain["arena_bytes"]
    assert "stripe 1/" in compiled.files["m.c"] and STAGE_OP in compiled.files["plan.txt"]
    if net == "res":  # stripes through the residual blocks
        assert _stages(code.program.graph) == (["stage[first_conv .. b1.residual]"] if budget is None else
                                               ["stage[first_conv .. b0.residual]", "stage[b1.expand .. project]"])
        assert compiled.report["peak_sram_bytes"] <= (budget or plain["peak_sram_bytes"])
    model = host.load(write_output(tmp_path / "out", compiled.files), fresh=True)
    trainer = Trainer(graph, update, TrainOptions(head=head))
    rng = np.random.default_rng(1)
    for _ in range(8):
        x = rng.integers(-128, 128, model.inputs[0].shape).astype(np.int8)
        y = int(rng.integers(0, model.classes))
        assert model.train_step(x, y, 0.1) == np.float32(trainer.train_step(x, y, 0.1))
    np.testing.assert_array_equal(model.infer_float(x).reshape(-1), trainer.infer(x).reshape(-1))


def _stages(graph) -> list[str]:
    return [n.name for n in graph.nodes if n.op == STAGE_OP]


def _overwrites_before_read(node, offset: int) -> list[tuple[int, int]]:
    """Run the stripe schedule over the bytes of the stage input with the output at `offset` inside them:
    (stripe, layer) of every read of an input byte that an output row had already overwritten."""
    sub = node.attrs["stage"].graph
    (x, y) = sub.inputs[0].tensor, sub.outputs[0].tensor
    rx, ry = (sub[t].shape[2] * sub[t].shape[3] for t in (x, y))
    base = sub[y].nbytes  # byte 0 of the input; the output may start below it
    clobbered = np.zeros(base + offset + sub[y].nbytes + sub[x].nbytes, bool)
    bad = []
    for k, stripe in enumerate(schedule(sub, *stripe_mode(node))):
        for i, call in enumerate(stripe):
            if i == len(stripe) - 1:  # a one-layer call may write before it has read all its rows: first
                at = base + offset
                clobbered[at + call.out_rows[0] * ry:at + call.out_rows[1] * ry] = True
            if x in data_inputs(call.node) and clobbered[base + call.in_rows[0] * rx:base + call.in_rows[1] * rx].any():
                bad.append((k, i))
    return bad


@pytest.mark.parametrize("rows,rolling", [(1, False), (2, False), (4, False), (16, False), (1, True), (2, True)])
@pytest.mark.parametrize("net,length", [("odd", 1), ("odd", 2), ("odd", 3), ("odd", 5), ("res", 5), ("res", 11)])
def test_output_offset_never_overwrites_input_rows_still_read(graph, resnet, net, length, rows, rolling):
    """The offset is checked by a byte-level run of the schedule; a one-layer stage reads stripe k's first
    input row in the call that writes its output, so its output cannot start at the input's first byte."""
    g = graph if net == "odd" else resnet
    node, _ = stage_node(g, stripe_chain(g)[:length], rows, rolling)
    offset = output_offset(node)
    if length == 1:
        assert _overwrites_before_read(node, 0)
    if offset is None:  # one stripe of one layer reads all its input while it writes: nothing to share
        assert length == 1 and len(schedule(node.attrs["stage"].graph, rows, rolling)) == 1
        return
    assert offset <= 0 and offset % 16 == 0
    assert _overwrites_before_read(node, offset) == []
    assert _overwrites_before_read(node, offset + 16) != [] or offset == 0  # the highest aligned offset


@pytest.mark.parametrize("net,length,rows,rolling", [
    ("odd", 5, 1, False), ("odd", 2, 4, False), ("odd", 4, 16, False), ("odd", 3, 2, False), ("res", 5, 1, False),
    ("res", 9, 2, False), ("res", 11, 4, False), ("odd", 5, 1, True), ("odd", 4, 2, True), ("res", 9, 1, True),
    ("res", 11, 2, True)])
def test_any_stage_length_and_stripe_height_is_bit_exact(graph, resnet, tmp_path, net, length, rows, rolling):
    """Bit-exact on the host, the stage output nested in its input's consumed rows wherever the schedule allows."""
    graph = graph if net == "odd" else resnet
    node, scratch = stage_node(graph, stripe_chain(graph)[:length], rows, rolling)
    staged = with_stage(graph, node, scratch)
    compiled = build(staged, "m")
    x, y, p = node.inputs[0], node.outputs[0], compiled.model.plan
    assert p.nested == ((x, y, output_offset(node)),) and p.offset(y) == p.offset(x) + p.nested[0][2]
    assert "written over the rows of" in compiled.files["plan.txt"]
    model = host.load(write_output(tmp_path / "out", compiled.files), fresh=True)
    rng = np.random.default_rng(length)
    for _ in range(3):
        x = rng.integers(-128, 128, model.inputs[0].shape).astype(np.int8)
        np.testing.assert_array_equal(model.infer(x), run(graph, x)[graph.outputs[0].tensor])


@pytest.mark.qemu
@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None,
                    reason="needs arm-none-eabi-gcc and qemu-system-arm")
def test_residual_stage_trains_in_qemu_as_on_the_host(resnet, tmp_path, capsys):
    """Stripes through residual blocks in two rolling stages, each output nested in its input: two train steps in
    QEMU (Cortex-M7) give the host build's losses and parameters."""
    config = TrainConfig("last:1", "new:3")
    compiled = build(resnet, "m", "cortex-m7", budget=TWO_STAGES + 1024, train=config)  # + the M7's larger stack
    stages = [n for n in compiled.model.train.program.graph.nodes if n.op == STAGE_OP]
    assert [stripe_mode(n) for n in stages] == [(1, True), (1, True)]  # rolling: rows kept, moved down in QEMU
    assert "tte_rows_shift_s8(" in compiled.files["m.c"] and "written over the rows of" in compiled.files["plan.txt"]
    assert [r["stripes"] for r in compiled.report["layers"] if r["op"] == STAGE_OP] == [
        "1 row per stripe, rolling"] * 2
    out = write_output(tmp_path / "m", compiled.files)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.uniform(-1, 1, (2, *resnet.inputs[0].shape[1:])).astype(np.float32),
             y=np.array([1, 2]))
    data = ["--data", str(tmp_path / "d.npz"), "--steps", "2"]
    on_host, on_device = host_and_emulator(out, data, capsys)
    assert on_device["losses"] == on_host["losses"] and on_device["params_sha256"] == on_host["params_sha256"]


SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "models"


@pytest.mark.qemu
@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None
                    or not SHARED.is_dir(), reason="needs arm-none-eabi-gcc, qemu-system-arm and ../shared/models")
def test_paper_model_three_stages_train_in_qemu_as_on_the_host(tmp_path, capsys):
    """proxyless-w0.3 with its 98kb scheme at 140 KB: three rolling stages in a row (bench/paper.py's case); two
    train steps in QEMU give the host build's losses and parameters."""
    scheme = json.loads((SHARED / "paper_schemes.json").read_text())["proxyless-w0.3"]["98kb"]
    (tmp_path / "s.json").write_text(json.dumps(scheme))
    out = tmp_path / "m"
    assert tte_main(["compile", str(SHARED / "proxyless-w0.3-int8.onnx"), "-o", str(out), "--update",
                     f"sparse:{tmp_path / 's.json'}", "--head", "new:10", "--target", "cortex-m7",
                     "--budget", "140KB"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert [r["stripes"] for r in report["layers"] if r["op"] == STAGE_OP] == ["1 row per stripe, rolling"] * 3
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.uniform(-1, 1, (2, 3, 128, 128)).astype(np.float32), y=np.array([1, 2]))
    data = ["--data", str(tmp_path / "d.npz"), "--steps", "2"]
    on_host, on_device = host_and_emulator(out, data, capsys)
    assert on_device["losses"] == on_host["losses"] and on_device["params_sha256"] == on_host["params_sha256"]


@pytest.mark.parametrize("net,length,rows,rolling", [("odd", 5, 1, False), ("odd", 3, 4, False), ("res", 11, 2, False),
                                                     ("res", 9, 16, False), ("odd", 5, 1, True), ("res", 11, 2, True)])
def test_stage_macs_count_every_stripe_call(graph, resnet, net, length, rows, rolling):
    """MACs per output row times the rows of each call == the MACs of every call's own sub-tensor node; rolling
    stripes compute every row once: the layers' own MACs."""
    g = graph if net == "odd" else resnet
    node, _ = stage_node(g, stripe_chain(g)[:length], rows, rolling)
    sub = node.attrs["stage"].graph
    calls = [call_graph(c, sub) for stripe in schedule(sub, rows, rolling) for c in stripe]
    macs = stage_macs(sub, rows, rolling)
    assert macs == sum(ops.get(one.op).macs(one, cg) for one, cg in calls)
    layers = sum(ops.get(n.op).macs(n, sub) for n in sub.nodes)
    assert macs == layers if rolling else macs > layers


@pytest.mark.parametrize("rows", [1, 2, 3])
@pytest.mark.parametrize("net,length", [("odd", 5), ("odd", 3), ("res", 9), ("res", 11)])
def test_rolling_slots_hold_every_row_a_call_reads(graph, resnet, net, length, rows):
    """A byte-level run of a rolling schedule over the scratch slots: each byte is labelled with the (tensor, row)
    written there; shifts move labels down; every read finds the rows it asks for, and no write leaves its slot."""
    g = graph if net == "odd" else resnet
    node, scratch = stage_node(g, stripe_chain(g)[:length], rows, rolling=True)
    sub = node.attrs["stage"].graph
    slot_of, sizes = scratch_slots(sub, rows, rolling=True)
    lines = line_buffers(sub, rows, rolling=True)
    assert lines.kept and sizes == [t.nbytes for t in scratch.values()]
    ids = {t: i for i, t in enumerate(slot_of)}
    slots = [np.full(n, -1, np.int64) for n in sizes]

    def span(t: str, first: int, last: int, k: int) -> tuple[np.ndarray, slice]:
        rb = row_bytes(sub, t)
        at = (first - lines.base[k][t]) * rb
        assert 0 <= at and at + (last - first) * rb <= sizes[slot_of[t]], (t, k)
        return slots[slot_of[t]], slice(at, at + (last - first) * rb)

    def labels(t: str, first: int, last: int) -> np.ndarray:
        return np.repeat([ids[t] * 10_000 + r for r in range(first, last)], row_bytes(sub, t))

    for k, stripe in enumerate(lines.calls):
        for t, drop, keep in lines.shifts[k]:
            buf, rb = slots[slot_of[t]], row_bytes(sub, t)
            buf[:keep * rb] = buf[drop * rb:(drop + keep) * rb].copy()
        for call in stripe:
            for t in data_inputs(call.node):
                if t in slot_of:
                    buf, where = span(t, *call.in_rows, k)
                    np.testing.assert_array_equal(buf[where], labels(t, *call.in_rows))
            t = call.node.outputs[0]
            if t in slot_of:
                buf, where = span(t, *call.out_rows, k)
                buf[where] = labels(t, *call.out_rows)


@pytest.mark.parametrize("net", ["odd", "res"])
def test_stage_options_keep_only_those_no_other_beats(graph, resnet, net, monkeypatch):
    """Of the stripe options of each stage (recomputing heights and rolling), those another option beats on both
    MACs and bytes at the stage are dropped; the fewest MACs (a rolling one) and the fewest bytes stay."""
    from tte.passes import stripes

    g = graph if net == "odd" else resnet
    kept = stripes.stage_choices(g)
    monkeypatch.setattr(stripes, "_undominated", lambda options: options)
    stripes._OPTIONS.clear()
    every = stripes.stage_choices(g)
    stripes._OPTIONS.clear()
    assert len(kept) < len(every)
    for stage in {c[0].node.name for c in every}:
        alls = [c[0] for c in every if c[0].node.name == stage]
        left = [c[0] for c in kept if c[0].node.name == stage]
        assert min(o.macs for o in left) == min(o.macs for o in alls)
        assert min(o.floor for o in left) == min(o.floor for o in alls)
        assert any(stripe_mode(o.node)[1] for o in left if o.macs == min(o.macs for o in alls))
        for o in left:
            assert not any(p.macs <= o.macs and p.floor <= o.floor and (p.macs, p.floor) != (o.macs, o.floor)
                           for p in alls)
