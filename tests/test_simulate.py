"""`tte simulate`: host training of a compiled model through the same C; the JSON summary it prints last."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tte import host
from tte.cli import main as tte_main
from tte.simulate import simulate

REPO = Path(__file__).resolve().parents[1]
DEMO_MODEL = REPO / "models" / "demo_mnist_int8.onnx"
DEMO_SPEC = REPO / "models" / "demo_update.yaml"
KEYS = {"losses", "acc_before", "acc_after", "params_sha256", "steps"}  # shared with `tte run --emulator`

pytestmark = pytest.mark.skipif(not DEMO_MODEL.is_file(), reason="models/demo_mnist_int8.onnx is missing")


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> tuple[Path, Path, Path]:
    """The demo's new task (digits 5-9 as classes 0-4, 25 train and 20 test each) and the compiled model."""
    from tte.data import new_task_split, write_npz

    tmp = tmp_path_factory.mktemp("sim")
    train, test = new_task_split(train_per_class=25, test_per_class=20)
    out = tmp / "out"
    args = ["compile", str(DEMO_MODEL), "--update", f"sparse:{DEMO_SPEC}", "--head", "new:5", "-o", str(out)]
    assert tte_main(args) == 0
    return out, write_npz(tmp / "train.npz", train), write_npz(tmp / "test.npz", test)


def _last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def test_simulate_learns_the_new_task_and_prints_json_last(task, capsys):
    out, train, test = task
    capsys.readouterr()
    args = ["simulate", str(out), "--data", str(train), "--eval", str(test), "--epochs", "2", "--lr", "0.02"]
    assert tte_main(args) == 0
    summary = _last_json(capsys.readouterr().out)
    assert KEYS <= set(summary) and summary["steps"] == 250 == len(summary["losses"])
    assert summary["acc_before"] <= 0.3  # a fresh zero head: every logit equal
    assert summary["acc_after"] > summary["acc_before"] + 0.4
    losses = summary["losses"]
    assert np.median(losses[-60:]) < 0.5 * np.median(losses[:60])  # batch-1 losses are noisy: medians
    # The losses are the C train step's, in file order: a direct host run gives the same floats and parameters.
    model = host.load(out, fresh=True)
    with np.load(train) as f:
        x, y = f["x"], f["y"]
    direct = [model.train_step(x[k:k + 1], int(y[k]), 0.02) for k in range(20)]
    assert direct == summary["losses"][:20]


def test_simulate_steps_wrap_around_and_repeat_exactly(task):
    out, train, test = task
    a = simulate(out, train, steps=130, lr=0.02, progress=False)  # 125 samples: wraps once
    b = simulate(out, train, steps=130, lr=0.02, progress=False)
    assert a == b and a["steps"] == 130 and a["eval_samples"] == a["train_samples"] == 125
    c = simulate(out, train, steps=130, lr=0.02, seed=99, progress=False)
    assert c["losses"][0] == a["losses"][0] and c["params_sha256"] != a["params_sha256"]


def test_simulate_errors_are_one_line(task, tmp_path, capsys):
    out, train, _ = task
    np.savez(tmp_path / "bad.npz", x=np.zeros((3, 1, 28, 28), np.float32), y=np.array([0, 1, 7]))
    assert tte_main(["simulate", str(out), "--data", str(tmp_path / "bad.npz"), "-q"]) == 2
    assert "labels must lie in 0..4" in capsys.readouterr().err
    infer_only = tmp_path / "infer"
    assert tte_main(["compile", str(DEMO_MODEL), "-o", str(infer_only)]) == 0
    assert tte_main(["simulate", str(infer_only), "--data", str(train), "-q"]) == 2
    assert "compiled without a train step" in capsys.readouterr().err
