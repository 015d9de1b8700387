"""`tte compile --update ...`: the generated train step (host build through cffi) against the numpy training
reference (tte.train.Trainer), the parameter save/restore API, the memory plan of a train step, the report and
the budget and spec errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from train_helpers import mobilenet_like

from tte import host
from tte.cli import main as tte_main
from tte.compile import TrainConfig, build, write_output
from tte.errors import TteError
from tte.train import Trainer, TrainOptions, memory_summary

REPO = Path(__file__).resolve().parents[1]
DEMO_MODEL = REPO / "models" / "demo_mnist_int8.onnx"
# Partial channels of a 1x1 conv, a depthwise (a channel list) and the projection of block 0.
SCHEME = {"bias": ["blocks.0.pointwise2", "blocks.1.pointwise1", "blocks.1.depthwise"],
          "weights": {"blocks.1.pointwise1": 0.25, "blocks.1.depthwise": [5, 2, 9], "blocks.0.pointwise2": 0.5},
          "classifier": "full"}
CONFIGS = [  # (update, head, rounding)
    ("last:2", "keep", "stochastic"),
    ("bias-only", "keep", "stochastic"),
    ("sparse", "keep", "stochastic"),
    ("mobiletl:1", "new:4", "stochastic"),
    ("sparse", "fp32", "nearest"),
]


@pytest.fixture(scope="module")
def graph():
    return mobilenet_like()


@pytest.fixture(scope="module")
def scheme(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("scheme") / "scheme.json"
    path.write_text(json.dumps(SCHEME))
    return f"sparse:{path}"


def _spec(update: str, scheme: str) -> str:
    return scheme if update == "sparse" else update


def _compile(graph, tmp_path: Path, config: TrainConfig, **kw):
    compiled = build(graph, "m", train=config, **kw)
    out = write_output(tmp_path / "out", compiled.files)
    return compiled, host.load(out, fresh=True)


def _samples(model: host.HostModel, n: int, seed: int) -> list[tuple[np.ndarray, int]]:
    rng = np.random.default_rng(seed)
    return [(rng.integers(-128, 128, model.inputs[0].shape).astype(np.int8), int(rng.integers(0, model.classes)))
            for _ in range(n)]


def _reference_view(model: host.HostModel, trainer: Trainer) -> dict[str, np.ndarray]:
    """The reference's parameters as the C model keeps them (a split weight: its trained columns only)."""
    ref = trainer.params()
    out = {}
    for p in model.train_info["params"]:
        value = ref[p["tensor"]] if p["columns"] is None else ref[p["tensor"].removesuffix(":sram")][..., p["columns"]]
        out[p["tensor"]] = value.view(np.uint32) if p["kind"] == "rng" else value
    return out


@pytest.mark.parametrize("update,head,rounding", CONFIGS, ids=[f"{u}-{h}-{r}" for u, h, r in CONFIGS])
def test_c_train_step_equals_the_reference(graph, scheme, tmp_path, update, head, rounding):
    spec = _spec(update, scheme)
    _, model = _compile(graph, tmp_path, TrainConfig(spec, head, rounding))
    trainer = Trainer(graph, spec, TrainOptions(head=head, rounding=rounding))
    start = model.params_get()
    got, want = [], []
    for x, y in _samples(model, 20, seed=1):
        got.append(model.train_step(x, y, 0.05))
        want.append(trainer.train_step(x, y, 0.05))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    params, ref = model.params(), _reference_view(model, trainer)
    total = sum(v.size for v in params.values())
    off = sum(int(np.sum(params[k] != ref[k])) for k in params)
    worst = max(int(np.abs(params[k].astype(np.int64) - ref[k].astype(np.int64)).max())
                for k in params if params[k].dtype.kind in "iu" and k != "tte:rng")
    assert off <= 0.001 * total and worst <= 1, f"{off} of {total} parameter values differ (max {worst} LSB)"
    assert model.params_get()[:-4] != start[:-4]  # training changed the parameters (not only the PRNG state)
    for x, _ in _samples(model, 3, seed=2):  # inference sees the trained parameters
        np.testing.assert_array_equal(model.infer_float(x).reshape(-1), trainer.infer(x).reshape(-1))


def test_params_get_set_round_trip(graph, scheme, tmp_path):
    _, model = _compile(graph, tmp_path, TrainConfig(scheme))
    samples = _samples(model, 6, seed=3)
    probe = samples[0][0]
    start, start_out = model.params_get(), model.infer(probe)
    assert len(start) == model.train_info["params_bytes"]
    first = [model.train_step(x, y, 0.1) for x, y in samples]
    trained = model.params_get()
    assert trained != start
    model.params_set(start)
    assert model.params_get() == start and np.array_equal(model.infer(probe), start_out)
    again = [model.train_step(x, y, 0.1) for x, y in samples]  # the PRNG state was restored too
    assert again == first and model.params_get() == trained
    with pytest.raises(TteError, match="bytes of parameters"):
        model.params_set(start[:-1])
    fn = model._lib.m_train_step  # the C entry point itself: a bad label changes nothing
    assert fn(model._ffi.from_buffer("int8_t[]", probe), model.classes, 0.1) == -1.0
    assert fn(model._ffi.from_buffer("int8_t[]", probe), -1, 0.1) == -1.0 and model.params_get() == trained
    # Chunks of 7 bytes (windows across the arrays' borders) read and write the same blob.
    assert b"".join(model.params_read(k, 7) for k in range(0, len(trained), 7)) == trained
    for k in range(0, len(start), 7):
        model.params_write(k, start[k:k + 7])
    assert model.params_get() == start


def test_seed_changes_only_the_rounding(graph, tmp_path):
    _, model = _compile(graph, tmp_path, TrainConfig("last:2"))
    samples = _samples(model, 5, seed=4)
    start = model.params_get()
    a = [model.train_step(x, y, 0.1) for x, y in samples]
    blob_a = model.params_get()
    model.params_set(start)
    model.seed(1)  # the default seed: the same run
    assert [model.train_step(x, y, 0.1) for x, y in samples] == a and model.params_get() == blob_a
    model.params_set(start)
    model.seed(12345)
    [model.train_step(x, y, 0.1) for x, y in samples]
    assert model.params_get()[:-4] != blob_a[:-4]


def test_plan_holds_masks_saved_channels_and_gradients(graph, scheme):
    compiled = build(graph, "m", train=TrainConfig(scheme))
    code, report = compiled.model.train, compiled.report
    tg, plan = code.program, code.plan
    kinds = {b.name: (plan.kinds[b.name], b.size) for b in plan.buffers}
    for layer, mask in tg.masks.items():
        assert kinds[mask] == ("mask", (tg.graph[tg.graph.producer(mask).outputs[0]].size + 7) // 8), layer
    saved = {layer: t for layer, t in tg.saved.items() if t.endswith(":saved")}
    assert set(saved) == {"blocks.0.pointwise2", "blocks.1.pointwise1", "blocks.1.depthwise"}
    for layer, t in saved.items():
        x = tg.graph[tg.graph.node(layer).inputs[0]]
        channels = len(tg.spec.layer(layer).channels)
        assert kinds[t] == ("saved", x.size // x.shape[-1] * channels), layer
    assert any(kind == "gradient" for kind, _ in kinds.values())
    text = compiled.files["plan.txt"]
    assert "by kind:" in text and " mask " in text and " saved " in text and "m_params_get order" in text
    # Only the trained channels of a partially trained weight are in SRAM; the whole weight stays const.
    weights_c = compiled.files["m_weights.c"]
    assert "\nint8_t m_blocks_1_pointwise1_w_sram[" in weights_c
    assert "const int8_t m_blocks_1_pointwise1_w[" in weights_c
    assert report["saved_activation_bytes"] == sum(s for k, s in kinds.values() if k == "saved")
    assert report["mask_bytes"] == sum(s for k, s in kinds.values() if k == "mask")


def test_report_of_a_train_build(graph, scheme):
    compiled = build(graph, "m", train=TrainConfig(scheme, "new:3"))
    report, summary = compiled.report, memory_summary(compiled.model.train.program)
    assert report["update"] == scheme and report["head"] == "new:3" and report["optimizer_state_bytes"] == 0
    assert report["trainable_param_bytes"] == summary["trainable_param_bytes"]
    assert report["trained_params"] == summary["trained_params"] > 0
    assert report["macs_backward"] == summary["macs_backward"] > 0 and report["macs_forward"] > 0
    assert report["peak_sram_bytes"] == (report["arena_bytes"] + report["trainable_param_bytes"] + report["io_bytes"]
                                         + report["other_static_bytes"] + report["stack_bytes_estimate"])
    rows = {r["name"]: r for r in report["layers"]}
    assert rows["blocks.1.pointwise1"]["trained"] == "bias+weight[2/8 ch]"
    assert rows["blocks.1.pointwise1"]["trained_param_bytes"] == 24 * 2 + 4 * 24
    assert rows["first_conv"]["trained"] == "none" and rows["first_conv"]["macs_backward"] == 0
    assert rows["classifier"]["trained"] == "bias+weight" and rows["classifier"]["macs_backward"] > 0


def test_budget_failure_names_the_peak_and_suggests_a_smaller_update(graph):
    config = TrainConfig("full")
    need = build(graph, "m", train=config).report["peak_sram_bytes"]
    with pytest.raises(TteError) as err:
        build(graph, "m", budget=need - 1, train=config)
    text = str(err.value)
    assert f"needs {need:,} bytes of SRAM" in text and f"budget of {need - 1:,}" in text
    assert "largest live tensors at the peak, node" in text and "largest trainable arrays" in text
    assert "smaller update spec" in text and "last:1" in text and "new:N" in text
    assert build(graph, "m", budget=need, train=config).report["peak_sram_bytes"] == need


def test_same_inputs_same_files(graph, scheme):
    a = build(graph, "m", train=TrainConfig(scheme, "new:3")).files
    b = build(graph, "m", train=TrainConfig(scheme, "new:3")).files
    assert a == b


# --- the command line ----------------------------------------------------------------------------------------------

needs_demo = pytest.mark.skipif(not DEMO_MODEL.is_file(), reason="models/demo_mnist_int8.onnx is missing")


@needs_demo
def test_cli_compile_with_update_writes_the_train_api(tmp_path, capsys):
    out = tmp_path / "out"
    args = ["compile", str(DEMO_MODEL), "--update", "mobiletl:1", "--head", "new:5", "--rounding", "nearest",
            "--seed", "7", "-o", str(out)]
    assert tte_main(args) == 0
    assert "trained parameters" in capsys.readouterr().out
    header = (out / "demo_mnist_int8.h").read_text()
    for decl in ("float demo_mnist_int8_train_step(const int8_t *x, int32_t label, float lr);",
                 "void demo_mnist_int8_params_get(uint8_t *dst);",
                 "void demo_mnist_int8_params_set(const uint8_t *src);",
                 "void demo_mnist_int8_seed(uint32_t seed);", "#define DEMO_MNIST_INT8_PARAMS_BYTES",
                 "int demo_mnist_int8_infer(const int8_t *input, float *output);"):
        assert decl in header
    report = json.loads((out / "report.json").read_text())
    assert (report["update"], report["head"], report["rounding"], report["seed"]) == ("mobiletl:1", "new:5",
                                                                                      "nearest", 7)
    assert report["other_static_bytes"] == 0  # rounding to nearest: no PRNG state


@needs_demo
@pytest.mark.parametrize("args,message", [
    (["--update", "nosuch:3"], "unknown --update 'nosuch:3'"),
    (["--update", "sparse:{scheme}"], "no layer named 'blocks.9.pointwise1' in the model"),
    (["--head", "new:5"], "--head only apply to a train step"),
    (["--update", "last:1", "--head", "new:x"], "--head new:N: 'x' is not a positive integer"),
    (["--update", "full", "--budget", "20KB"], "over the budget of 20,480"),
])
def test_cli_train_errors_exit_2_with_one_line(tmp_path, capsys, args, message):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"bias": ["blocks.9.pointwise1"]}))
    args = [a.format(scheme=bad) for a in args]
    assert tte_main(["compile", str(DEMO_MODEL), "-o", str(tmp_path / "out"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()
