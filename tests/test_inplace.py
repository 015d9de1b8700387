"""In-place depthwise convolution (runtime_c/src/depthwise_inplace.c, tte/passes/inplace.py): the kernels
bit-exact with the numpy reference (and so with the out-of-place kernels) on the host and in QEMU, the planner's
ties and scratch buffers, and whole train steps that use them."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import tte
import tte.train  # noqa: F401  (registers the training ops)
from tte import ops, reference
from tte.cli import main as tte_main
from tte.ir import Graph, IOSpec, Node, QParams, Tensor
from tte.passes import inplace, memory_plan
from tte.passes.memory_plan import Buffer, plan, plan_graph
from tte.passes.train_plan import plan_train_step
from tte.testing import train_cases as T
from tte.testing.inplace_harness import generate, run_c
from tte.testing.kernel_cases import extreme_inputs, random_case

DW = "depthwise_conv2d"


def _forward_graphs(n: int = 40) -> list[Graph]:
    """Depthwise cases the in-place kernels take (multiplier 1, batch 1): odd sizes, strides 1 and 2, pads up to
    k - 1 (an output larger than its input too), kernels 1x1 to 7x7."""
    graphs = [T.renamed(g, f"/c{i}") for i, g in enumerate(ops.get(DW).cases())]
    graphs += [random_case(DW, i, seed=77) for i in range(n)]
    return [g for g in graphs if inplace.depthwise_inplace_ok(g.nodes[0], g)]


def _assert_same(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for k in want:
        assert got[k].tobytes() == want[k].tobytes(), k


def _count(code: str, fn: str) -> int:
    return code.count(f"{fn}(")


def test_forward_in_place_equals_the_reference():
    graphs = _forward_graphs()
    assert len(graphs) >= 20 and any(g.nodes[0].attrs["stride"] == (2, 2) for g in graphs)
    merged = T.merge("dw", graphs)
    for feeds in (T.random_feeds(merged, 5), extreme_inputs(merged, 6)):
        for dsp in (False, True):  # the portable path and the (emulated) DSP one
            got, src = run_c(merged, feeds, dsp)
            _assert_same(got, reference.run(merged, feeds))
    assert _count(src.code, "tte_depthwise_conv2d_inplace_s8") == len(graphs)


def test_mask_in_place_equals_the_reference():
    """The mask variant, with whole and split (flash + SRAM) weights."""
    graphs = _forward_graphs(24)
    cases = [T.mask_case(g) for g in graphs]
    cases += [T.mask_case(T.renamed(g, "/split"), split=0.4, seed=i) for i, g in enumerate(graphs)]
    c_graph, ref_graph = T.merge("m", [c for c, _ in cases]), T.merge("m", [r for _, r in cases])
    for feeds in (T.random_feeds(c_graph, 1), extreme_inputs(c_graph, 2)):
        for dsp in (False, True):
            got, src = run_c(c_graph, feeds, dsp)
            _assert_same(got, reference.run(ref_graph, feeds))
    assert _count(src.code, "tte_depthwise_conv2d_mask_inplace_s8") == len(cases)


def test_input_gradient_in_place_equals_the_reference():
    """fp32 sums in the out-of-place kernel's order: bit-exact, strided layers (a larger input gradient) too."""
    graphs = _forward_graphs(30)
    cases = [T.input_grad_case(g) for g in graphs]
    cases += [T.input_grad_case(T.renamed(g, "/split"), 0.5, i) for i, g in enumerate(graphs)]
    c_graph, ref_graph = T.merge("g", [c for c, _ in cases]), T.merge("g", [r for _, r in cases])
    feeds = T.random_feeds(c_graph, 3)
    got, src = run_c(c_graph, feeds)
    _assert_same(got, reference.run(ref_graph, feeds))
    assert _count(src.code, "tte_depthwise_conv2d_grad_input_inplace_s8_f32") == len(cases)


@pytest.mark.qemu
@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None,
                    reason="needs arm-none-eabi-gcc and qemu-system-arm")
def test_in_place_kernels_on_cortex_m7(tmp_path):
    """The three in-place kernels in QEMU (Cortex-M7, DSP and FPU) against the reference, byte for byte."""
    from codegen.ops import RUNTIME_DIR
    from tte.targets import build, run_qemu, write_project
    from tte.testing.kernel_firmware import main_source

    graphs = _forward_graphs(12)
    masks = [T.mask_case(T.renamed(g, "/m"), 0.4 * (i % 2), i) for i, g in enumerate(graphs)]
    grads = [T.input_grad_case(T.renamed(g, "/g"), 0.5 * (i % 2), i) for i, g in enumerate(graphs)]
    forward = T.merge("fw", graphs)
    cases = [(forward, forward)] + [(T.merge(n, [c for c, _ in cs]), T.merge(n, [r for _, r in cs]))
                                    for n, cs in (("mk", masks), ("gr", grads))]
    folder = tmp_path / "cases"
    folder.mkdir()
    paths, buffers, inputs = [], [], []
    for k, (c_graph, _) in enumerate(cases):
        src = generate(c_graph, prefix=f"g{k}_")
        assert "_inplace_" in src.code
        paths.append(folder / f"case_{k}.c")
        paths[-1].write_text(src.code)
        buffers.append(src.buffers)
        inputs.append([T.random_feeds(c_graph, 10 + k)])
    # expected outputs from the reference graphs (a split weight's whole-weight twin), same inputs and outputs
    (folder / "main.c").write_text(main_source([r for _, r in cases], inputs, buffers))
    fw = build(write_project(tmp_path / "fw", "cortex-m7", [RUNTIME_DIR, *paths, folder / "main.c"],
                             stack_bytes=8192))
    run = run_qemu(fw.elf, timeout=120, board="cortex-m7")
    assert run.status == 0, f"{run.message}\n{run.output[-2000:]}"


# --- the planner ----------------------------------------------------------------------------------------------------


def _chain(stride: int, read_later: bool = False) -> Graph:
    """conv1x1 (8 -> 16 channels) -> depthwise 3x3 (stride) -> conv1x1 (16 -> 8) [-> conv1x1 reading the
    depthwise input again]."""
    rng = np.random.default_rng(1)
    c, h, o = 16, 10, (10 - 1) // stride + 1
    t: dict[str, Tensor] = {}

    def act(name: str, shape: tuple) -> str:
        t[name] = Tensor(name, shape, "int8", QParams(np.array([0.05]), np.array([3])))
        return name

    def weight(name: str, shape: tuple, axis: int) -> str:
        n = shape[axis]
        q = QParams(np.full(n, 0.01), np.zeros(n, np.int64), axis)
        t[name] = Tensor(name, shape, "int8", q, rng.integers(-5, 5, shape).astype(np.int8))
        return name

    conv = dict(stride=(1, 1), pad=(0, 0, 0, 0), act=(-128, 127))
    nodes = [Node("conv2d", "pw1", (act("x", (1, h, h, 8)), weight("w1", (c, 1, 1, 8), 0)),
                  (act("e", (1, h, h, c)),), conv),
             Node(DW, "dw", ("e", weight("wd", (1, 3, 3, c), 3)), (act("d", (1, o, o, c)),),
                  dict(stride=(stride, stride), pad=(1, 1, 1, 1), act=(-128, 127), multiplier=1)),
             Node("conv2d", "pw2", ("d", weight("w2", (8, 1, 1, c), 0)), (act("y", (1, o, o, 8)),), conv)]
    outs = ["y"]
    if read_later:
        nodes.append(Node("conv2d", "pw3", ("e", "w2"), (act("z", (1, h, h, 8)),), conv))
        outs.append("z")
    return Graph("chain", t, tuple(nodes), (IOSpec("x", (1, h, h, 8)),),
                 tuple(IOSpec(n, t[n].shape) for n in outs))


@pytest.mark.parametrize("stride", [1, 2])
def test_plan_ties_a_dying_depthwise_input_to_its_output(stride, monkeypatch):
    monkeypatch.setattr(inplace, "MAX_TRIES", 0)  # every candidate in place
    g = _chain(stride)
    p, q = plan_graph(g, external=("y",)), plan_graph(g, external=("y",), inplace=False)
    scratch = inplace.scratch_name(g.nodes[1])
    assert p.offset("e") == p.offset("d") and ("e", "d") in p.tied
    sizes = {b.name: b for b in p.buffers}
    pad_plane = (12 * 12 if stride == 1 else 11 * 11) + 4  # the plane with its padding (and 4 spare bytes)
    assert sizes[scratch].size == pad_plane and (sizes[scratch].first, sizes[scratch].last) == (1, 1)
    assert (sizes["e"].first, sizes["e"].last, sizes["d"].first) == (0, 1, 2)  # the larger one keeps the step
    assert p.live_bytes()[1] == 1600 + pad_plane and q.live_bytes()[1] == 1600 + 1600 // stride**2
    assert p.arena_bytes == 2400 and q.arena_bytes == max(2400, 1600 + 1600 // stride**2)  # step 0: x + e
    assert "tte_depthwise_conv2d_inplace_s8" in _emitted(g, p)
    assert "d -> computed in place over e" in p.to_text()


def test_ties_only_where_they_lower_the_arena():
    """Stride 1: out of place the depthwise step would need 3200 B > the 2400 B of step 0, so it runs in place;
    stride 2 (2000 B) and any node under an arena paid anyway (`target`) run out of place, the faster kernel."""
    assert plan_graph(_chain(1), external=("y",)).tied == (("e", "d"),)
    assert plan_graph(_chain(2), external=("y",)).tied == ()
    p = plan_graph(_chain(1), external=("y",), target=4000)
    assert p.tied == () and p.arena_bytes <= 4000


def test_no_tie_when_the_input_is_read_later():
    p = plan_graph(_chain(1, read_later=True), external=("y", "z"))
    assert p.offset("e") != p.offset("d") and not p.tied
    assert not any(b.name.endswith(inplace.SCRATCH_SUFFIX) for b in p.buffers)


def _emitted(g: Graph, p) -> str:
    from codegen.emit import Pointers, emit_nodes

    codes, _, _ = emit_nodes(g, Pointers(g, "m", p, {"y": "y"}))
    return "\n".join(line for c in codes for line in c.lines)


def test_train_plan_ties_the_input_gradient_and_a_larger_gradient_keeps_the_step(monkeypatch):
    """dacc [1, 5, 5, 16] -> input gradient of a stride-2 depthwise [1, 10, 10, 16]: the larger dx owns the step."""
    monkeypatch.setattr(inplace, "MAX_TRIES", 0)
    g = _chain(2)
    d = g.nodes[1]
    t = dict(g.tensors)
    t["dd"] = Tensor("dd", (1, 5, 5, 16), "float32")
    t["de"] = Tensor("de", (1, 10, 10, 16), "float32")
    t["ds"] = Tensor("ds", (1, 10, 10, 16), "float32")
    nodes = (Node("mean_grad", "src", ("x",), ("dd",)),  # stands in for the gradient coming from above
             Node("mean_grad", "pad", ("x",), ("ds",)),
             Node("depthwise_conv2d_input_grad", "dw/input_grad", ("dd", "wd"), ("de",),
                  {k: d.attrs[k] for k in ("stride", "pad", "multiplier")}),
             Node("grad_add", "sum", ("de", "ds"), ("out",)))
    t["out"] = Tensor("out", (1, 10, 10, 16), "float32")
    g2 = Graph("grads", t, nodes, (IOSpec("x", (1, 10, 10, 8)),), (IOSpec("out", (1, 10, 10, 16)),))
    p = plan_train_step(g2, 1, set(), external={"out"})
    b = {x.name: x for x in p.buffers}
    assert ("dd", "de") in p.tied and p.offset("dd") == p.offset("de")
    assert (b["dd"].first, b["dd"].last, b["de"].first) == (0, 1, 2)
    assert p.kinds[inplace.scratch_name(nodes[2])] == "scratch" and b[inplace.scratch_name(nodes[2])].size == 100


def test_tied_groups_never_collide():
    rng = np.random.default_rng(9)
    bufs, tied = [], []
    for i in range(40):
        a = int(rng.integers(0, 30))
        bufs.append(Buffer(f"t{i}", int(rng.integers(1, 500)), a, a + int(rng.integers(0, 5))))
        if i % 4 == 3:  # the next buffer starts right after this one ends, at its offset
            b = bufs[-1]
            bufs.append(Buffer(f"u{i}", int(rng.integers(1, 900)), b.last + 1, b.last + 1 + int(rng.integers(0, 4))))
            tied.append((b.name, f"u{i}"))
    p = plan(bufs, 16, tied=tied)
    for x in p.buffers:
        for y in p.buffers:
            if x.name < y.name and x.overlaps(y) and x.size and y.size:
                ox, oy = p.offsets[x.name], p.offsets[y.name]
                assert ox + x.size <= oy or oy + y.size <= ox, (x, y)
    assert all(p.offsets[a] == p.offsets[b] for a, b in tied)


# --- whole train steps ------------------------------------------------------------------------------------------------


def test_train_steps_in_place_equal_out_of_place(tmp_path, monkeypatch):
    """A mobilenet-like model (depthwise layers trained and frozen, masks, input gradients): the build whose plan
    runs depthwise layers in place gives the out-of-place build's losses and parameters, bit for bit."""
    from train_helpers import mobilenet_like

    from tte import host
    from tte.compile import TrainConfig, build, write_output

    graph = mobilenet_like()
    config = TrainConfig("bias-only", "new:4", "stochastic")

    def run(name: str) -> tuple[list[float], bytes, str, int]:
        compiled = build(graph, "m", train=config)
        model = host.load(write_output(tmp_path / name, compiled.files), fresh=True)
        rng = np.random.default_rng(3)
        losses = [model.train_step(rng.integers(-128, 128, model.inputs[0].shape).astype(np.int8), k % 4, 0.05)
                  for k in range(4)]
        code = compiled.files["m.c"] + compiled.files["ir.txt"]
        return losses, bytes(model.params_get()), code, compiled.report["arena_bytes"]

    monkeypatch.setattr(inplace, "MAX_TRIES", 0)  # every candidate in place, needed or not
    losses, params, code, arena = run("inplace")
    monkeypatch.setattr(inplace, "depthwise_inplace_ok", lambda node, graph: False)
    memory_plan._PREPARED.clear()  # plans of graphs already seen were prepared with the in-place kernels
    losses0, params0, code0, arena0 = run("out_of_place")
    assert "tte_depthwise_conv2d_mask_inplace_s8(" in code and "_inplace_" not in code0
    if "depthwise_conv2d_input_grad" in code:  # unless a fused block backward took the input gradients
        assert "tte_depthwise_conv2d_grad_input_inplace_s8_f32(" in code
    assert losses == losses0 and params == params0
    assert arena <= arena0  # this small model peaks at a conv input gradient


@pytest.mark.qemu
@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None,
                    reason="needs arm-none-eabi-gcc and qemu-system-arm")
def test_paper_model_trains_in_place_in_qemu_as_on_the_host(tmp_path, capsys, monkeypatch):
    """mbv2-w0.35 with its 99kb scheme and a new head, every depthwise candidate in place (forward and input
    gradients; the plan alone would keep the faster kernels): two train steps in QEMU (Cortex-M7) give the host
    build's losses and parameters."""
    from train_helpers import host_and_emulator

    models = Path(tte.__file__).resolve().parents[1].parent / "shared" / "models"
    if not (models / "mbv2-w0.35-int8.onnx").is_file():
        pytest.skip(f"{models} is absent")
    monkeypatch.setattr(inplace, "MAX_TRIES", 0)
    out = tmp_path / "mbv2"
    assert tte_main(["compile", str(models / "mbv2-w0.35-int8.onnx"), "--target", "cortex-m7", "--update",
                     f"sparse:{models / 'paper_schemes.json'}#mbv2-w0.35/99kb", "--head", "new:10",
                     "-o", str(out)]) == 0
    code = (out / "mbv2_w0_35_int8.c").read_text()
    assert "tte_depthwise_conv2d_inplace_s8(" in code
    if "depthwise_conv2d_input_grad" in (out / "ir.txt").read_text():  # unless a fused block backward took them
        assert "tte_depthwise_conv2d_grad_input_inplace_s8_f32(" in code
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.uniform(-1, 1, (2, 3, 128, 128)).astype(np.float32), y=np.array([3, 7]))
    data = ["--data", str(tmp_path / "d.npz"), "--steps", "2"]
    host, device = host_and_emulator(out, data, capsys)
    assert device["losses"] == host["losses"] and device["params_sha256"] == host["params_sha256"]
