"""Training in the Cortex-M firmware: `tte run --emulator` trains a compiled model in QEMU and gives the same
losses and trained parameters as `tte simulate` (the host build of the same C), bit for bit, on cortex-m4 and
cortex-m7; accuracy improves; instruction counts repeat exactly. The harness itself (sample order, wrapping,
learning rates, seed, parameter dump, errors) is checked first on a stand-in model with trivial arithmetic
(targets/selftest/fake_model.c)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tte import host as tte_host
from tte.cli import main as tte_main
from tte.errors import TteError
from tte.targets import write_firmware
from tte.targets.harness import run_emulator, train_emulator

REPO = Path(__file__).resolve().parents[1]
FAKE = REPO / "targets" / "selftest"
DEMO_MODEL = REPO / "models" / "demo_mnist_int8.onnx"
DEMO_SPEC = REPO / "models" / "demo_update.yaml"
STEPS = 60

pytestmark = [
    pytest.mark.qemu,
    pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None,
                       reason="needs arm-none-eabi-gcc and qemu-system-arm (make toolchain)"),
]


# --- the harness, on a stand-in model ----------------------------------------------------------------------------

def _fake_project(folder: Path, board: str) -> Path:
    """A firmware project around fake_model.c, with the model.json `tte compile` would write."""
    folder.mkdir(parents=True)
    for name in ("fake_model.c", "fake_model.h"):
        (folder / name.replace("fake_model", "fake")).write_text(
            (FAKE / name).read_text().replace("fake_model.h", "fake.h"))
    io = {"tensor": "x", "shape": [1, 8], "dtype": "int8", "scale": 1.0, "zero_point": 0, "user_shape": [1, 8],
          "layout": "NC"}
    meta = {"name": "fake", "sources": ["fake.c"], "inputs": [io],
            "outputs": [dict(io, tensor="y", shape=[1, 4], user_shape=[1, 4])]}
    (folder / "model.json").write_text(json.dumps(meta))
    write_firmware(folder, board, "fake", ["fake.c"])
    return folder


def _fake_replica(x: np.ndarray, y: np.ndarray, lrs: np.ndarray, seed: int) -> tuple[list[float], bytes]:
    """What fake_model.c computes for the steps (see fake_model.h): the losses and the parameter bytes."""
    bias, chain, losses = np.zeros(4, np.int64), seed, []
    for k, lr in enumerate(lrs):
        xi, label = x[k % len(x)], int(y[k % len(x)])
        chain = (chain * 31 + int(xi.view(np.uint8).astype(np.int64).sum()) + label) % 2**32
        bias[label] = np.clip(bias[label] + int(np.float32(lr) * np.float32(4.0)), -128, 127)
        losses.append(float(np.float32(chain % 1000) * np.float32(0.001)))
    return losses, bias.astype(np.int8).tobytes() + int(chain).to_bytes(4, "little")


@pytest.fixture(scope="module")
def fake(tmp_path_factory) -> tuple[Path, Path, Path, np.ndarray, np.ndarray]:
    tmp = tmp_path_factory.mktemp("fake")
    rng = np.random.default_rng(3)
    x, y = rng.integers(-128, 128, (7, 8)).astype(np.int8), rng.integers(0, 4, 7)
    np.savez(tmp / "train.npz", x=x, y=y)
    np.savez(tmp / "eval.npz", x=x[:5], y=x[:5, :4].argmax(axis=1))  # bias 0: every prediction right
    return _fake_project(tmp / "m4", "cortex-m4"), tmp / "train.npz", tmp / "eval.npz", x, y


def test_harness_steps_through_samples_in_order_and_wraps(fake):
    out, train, evaluation, x, y = fake
    lrs = np.linspace(2.0, 9.0, 17, dtype=np.float32)  # one per step; 17 steps wrap twice over 7 samples
    run = train_emulator(out, train, 17, eval_data=evaluation, lr=lrs, seed=12345)
    losses, params = _fake_replica(x, y, lrs, 12345)
    assert run.summary["losses"] == losses and run.params == params
    assert run.summary["params_sha256"] == __import__("hashlib").sha256(params).hexdigest()
    s = run.summary
    assert (s["steps"], s["train_samples"], s["eval_samples"], s["acc_before"]) == (17, 7, 5, 1.0)
    bias = np.frombuffer(params[:4], np.int8).astype(np.int64)
    predictions = np.clip(x[:5, :4].astype(np.int64) + bias, -128, 127).argmax(axis=1)
    assert s["acc_after"] == np.mean(predictions == x[:5, :4].argmax(axis=1)) < 1.0  # the biases moved
    assert 0 < s["instructions_per_train_step_min"] <= s["instructions_per_train_step"] <= s[
        "instructions_per_train_step_max"]
    assert s["instructions_per_inference"] > 0 and 0 < s["stack_peak_bytes"] < s["stack_size_bytes"]
    assert s["harness_bytes"] == 4 + 8  # one output buffer and the parameter dump: no input copy
    assert s["sram_measured_bytes"] == s["elf_data"] + s["elf_bss"] + s["stack_peak_bytes"]


def test_harness_without_eval_seed_or_dump(fake):
    out, train, _, x, y = fake
    run = train_emulator(out, train, 3, lr=1.0, params_dump=False)
    losses, _ = _fake_replica(x, y, np.ones(3, np.float32), 0)  # the model's own initial state: chain 0
    s = run.summary
    assert s["losses"] == losses and run.params is None and s["params_sha256"] is None
    # No eval set: accuracy on the train samples, as `tte simulate` measures it.
    assert s["eval_samples"] == len(y) and s["acc_before"] == np.mean(x[:, :4].argmax(axis=1) == y)
    assert s["harness_bytes"] == 4


def test_harness_bad_input_is_a_user_error(fake, tmp_path):
    out, train, _, x, _ = fake
    np.savez(tmp_path / "nolabels.npz", x=x)
    with pytest.raises(TteError, match="has no labels"):
        train_emulator(out, tmp_path / "nolabels.npz", 2)
    np.savez(tmp_path / "badlabels.npz", x=x, y=np.full(len(x), 9))
    with pytest.raises(TteError, match=r"labels must lie in 0\.\.3"):
        train_emulator(out, tmp_path / "badlabels.npz", 2)
    with pytest.raises(TteError, match="2 learning rates for 3 steps"):
        train_emulator(out, train, 3, lr=[0.1, 0.2])
    with pytest.raises(TteError, match="training in QEMU failed: the firmware did not finish within"):
        train_emulator(out, train, 3, timeout=0.001)


def test_run_command_trains_and_prints_json_last(fake, capsys):
    out, train, evaluation, x, y = fake
    args = ["run", str(out), "--emulator", "--data", str(train), "--eval", str(evaluation), "--steps", "9",
            "--lr", "0.5", "--seed", "99"]
    assert tte_main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    losses, params = _fake_replica(x, y, np.full(9, 0.5, np.float32), 99)
    assert summary["losses"] == losses and summary["steps"] == 9
    report = json.loads((out / "report.json").read_text()) if (out / "report.json").exists() else None
    assert report is None  # a hand-made project has no report.json to update


# --- a real model: the demo's sparse update, host == QEMU ----------------------------------------------------------

def _last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> tuple[Path, Path]:
    """60 train and 50 eval digits (5-9, relabelled 0-4) of the demo task, interleaved by class."""
    from tte.data import new_task_split, write_npz

    tmp = tmp_path_factory.mktemp("digits")
    train, test = new_task_split(train_per_class=12, test_per_class=10)
    return write_npz(tmp / "train.npz", train), write_npz(tmp / "eval.npz", test)


def _compile_for_training(out: Path, board: str, capsys) -> None:
    if not DEMO_MODEL.is_file():
        pytest.skip("models/demo_mnist_int8.onnx is missing (python models/make_demo_model.py)")
    args = ["compile", str(DEMO_MODEL), "--target", board, "--update", f"sparse:{DEMO_SPEC}", "--head", "new:5",
            "-o", str(out)]
    try:
        status = tte_main(args)
    except SystemExit:  # argparse: an option this tte does not know yet
        pytest.skip("tte compile does not take --update/--head yet")
    assert status == 0, capsys.readouterr().err


@pytest.mark.parametrize("board", ["cortex-m4", "cortex-m7"])
def test_training_in_qemu_equals_the_host(board, digits, tmp_path, capsys):
    train, evaluation = digits
    out = tmp_path / "out"
    _compile_for_training(out, board, capsys)
    data = ["--data", str(train), "--eval", str(evaluation), "--steps", str(STEPS)]
    capsys.readouterr()
    assert tte_main(["simulate", str(out), *data]) == 0
    host = _last_json(capsys.readouterr().out)
    assert tte_main(["run", str(out), "--emulator", *data]) == 0
    device = _last_json(capsys.readouterr().out)
    assert device["target"] == board and device["steps"] == host["steps"] == STEPS
    assert device["losses"] == host["losses"]  # float32 losses, bit for bit
    assert (device["loss_first"], device["loss_last"]) == (host["loss_first"], host["loss_last"])
    assert device["params_sha256"] == host["params_sha256"]
    assert (device["acc_before"], device["acc_after"]) == (host["acc_before"], host["acc_after"])
    assert device["acc_after"] > device["acc_before"] + 0.1
    assert np.mean(device["losses"][-10:]) < np.mean(device["losses"][:10])
    assert device["instructions_per_train_step"] > device["instructions_per_inference"] > 10_000
    assert device["sram_measured_bytes"] <= 256 * 1024
    report = json.loads((out / "report.json").read_text())
    assert report["params_sha256"] == device["params_sha256"]
    assert report["instructions_per_train_step"] == device["instructions_per_train_step"]
    # Inference firmware of the same model (fp32 head: float32 outputs) == the host build, bit for bit.
    x = np.load(evaluation)["x"][:3]
    fresh = tte_host.load(out, fresh=True)
    expected = np.stack([np.asarray(fresh.infer(x[i:i + 1])) for i in range(3)])
    outputs = run_emulator(out, evaluation, steps=3).outputs[0]
    assert outputs.dtype == np.float32 and outputs.tobytes() == expected.astype(np.float32).tobytes()
    # The same firmware on the same samples counts the same instructions (SysTick under -icount shift=0).
    again = train_emulator(out, train, 5, eval_data=evaluation).summary
    twice = train_emulator(out, train, 5, eval_data=evaluation).summary
    keys = ("instructions_per_train_step", "instructions_per_train_step_first", "instructions_per_inference",
            "stack_peak_bytes", "params_sha256")
    assert {k: again[k] for k in keys} == {k: twice[k] for k in keys}
