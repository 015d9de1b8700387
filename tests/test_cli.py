"""The `tte` command line: compile / report / quantize, and user mistakes as one `tte: error:` line + status 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import flatbuffers
import numpy as np
import pytest

from tte import cli, ops
from tte.frontend.tflite_schema import fb
from tte.testing.models import small_cnn
from tte.testing.tflite_writer import write_tflite


def _have(module: str, attr: str) -> bool:
    try:
        mod = __import__(module, fromlist=[attr])
    except ImportError:
        return False
    return hasattr(mod, attr)


needs_tflite = pytest.mark.skipif(not _have("tte.frontend", "load"), reason="tte.frontend.load is not there yet")
needs_c = pytest.mark.skipif(not _have("codegen.ops", "emit"), reason="codegen.ops is not there yet")


@pytest.fixture(scope="module")
def tflite_model(tmp_path_factory) -> Path:
    """A small CNN as .tflite (float in and out, int8 inside)."""
    path = tmp_path_factory.mktemp("models") / "cnn.tflite"
    path.write_bytes(write_tflite(small_cnn(float_io=True)))
    return path


def _fails_with_one_line(argv: list[str], capsys, match: str) -> str:
    status = cli.main(argv)
    err = capsys.readouterr().err
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tte: error: "), err
    assert match in lines[0], lines[0]
    assert "Traceback" not in err
    return lines[0]


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_missing_file(tmp_path: Path, capsys):
    _fails_with_one_line(["compile", str(tmp_path / "nope.onnx"), "-o", str(tmp_path / "out")], capsys,
                         "no such model file")
    assert _leftovers(tmp_path) == []


@needs_tflite
@pytest.mark.parametrize("suffix", [".tflite", ".onnx", ".bin"])
def test_garbage_file(tmp_path: Path, capsys, suffix: str):
    bad = tmp_path / f"garbage{suffix}"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    _fails_with_one_line(["compile", str(bad), "-o", str(tmp_path / "out")], capsys, "garbage")
    assert _leftovers(tmp_path) == [bad.name]


@needs_tflite
def test_truncated_model(tmp_path: Path, capsys, tflite_model: Path):
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(tflite_model.read_bytes()[: tflite_model.stat().st_size // 2])
    _fails_with_one_line(["compile", str(cut), "-o", str(tmp_path / "out")], capsys, "cut.tflite")
    assert _leftovers(tmp_path) == ["cut.tflite"]


def _with_unsupported_op(model: bytes) -> bytes:
    """The model with its (only) operator's code changed to a builtin tte does not support."""
    m = fb.ModelT.InitFromObj(fb.Model.GetRootAs(model, 0))
    m.operatorCodes[m.subgraphs[0].operators[0].opcodeIndex].builtinCode = fb.BuiltinOperator.SQUARED_DIFFERENCE
    m.operatorCodes[m.subgraphs[0].operators[0].opcodeIndex].deprecatedBuiltinCode = (
        fb.BuiltinOperator.SQUARED_DIFFERENCE)
    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


@needs_tflite
def test_unsupported_op(tmp_path: Path, capsys, tflite_model: Path):
    bad = tmp_path / "odd.tflite"
    bad.write_bytes(_with_unsupported_op(tflite_model.read_bytes()))
    _fails_with_one_line(["compile", str(bad), "-o", str(tmp_path / "out")], capsys, "SQUARED_DIFFERENCE")
    assert _leftovers(tmp_path) == ["odd.tflite"]


@needs_tflite
@needs_c
def test_budget_exceeded(tmp_path: Path, capsys, tflite_model: Path):
    line = _fails_with_one_line(["compile", str(tflite_model), "-o", str(tmp_path / "out"), "--budget", "1KB"],
                                capsys, "over the budget of 1,024")
    assert "largest live tensors" in line
    assert _leftovers(tmp_path) == []


def test_bad_budget_and_name(tmp_path: Path, capsys, tflite_model: Path):
    _fails_with_one_line(["compile", str(tflite_model), "-o", str(tmp_path / "o"), "--budget", "lots"], capsys,
                         "not a size")
    _fails_with_one_line(["report", str(tmp_path / "nothing")], capsys, "no report.json")


@needs_tflite
@needs_c
def test_compile_report_and_recompile(tmp_path: Path, capsys, tflite_model: Path):
    out = tmp_path / "out"
    assert cli.main(["compile", str(tflite_model), "-o", str(out), "--name", "conv", "--budget", "256KB"]) == 0
    first = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert {"conv.h", "conv.c", "conv_weights.c", "Makefile", "report.json", "plan.txt", "ir.txt"} <= set(first)
    rep = json.loads(first["report.json"])
    assert rep["arena_bytes"] > 0 and rep["flash_bytes"] > rep["const_bytes"] > 0
    graph = small_cnn()
    assert rep["macs_forward"] == sum(ops.get(n.op).macs(n, graph) for n in graph.nodes) > 0
    assert [row["name"] for row in rep["layers"]] == [n.name for n in graph.nodes]
    # A second compile replaces the folder with byte-identical files.
    assert cli.main(["compile", str(tflite_model), "-o", str(out), "--name", "conv"]) == 0
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == first
    assert _leftovers(tmp_path) == ["out"]
    capsys.readouterr()
    assert cli.main(["report", str(out)]) == 0
    text = capsys.readouterr().out
    assert "arena (activations, input)" in text and "flash" in text
    assert (out / "memory.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_refuses_to_replace_a_foreign_folder(tmp_path: Path, capsys, tflite_model: Path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "precious.txt").write_text("keep me")
    if not _have("tte.frontend", "load") or not _have("codegen.ops", "emit"):
        pytest.skip("needs the frontend and the op table")
    _fails_with_one_line(["compile", str(tflite_model), "-o", str(home)], capsys, "not a tte output folder")
    assert (home / "precious.txt").read_text() == "keep me"


def test_console_script_prints_no_traceback(tmp_path: Path):
    proc = subprocess.run([sys.executable, "-m", "tte.cli", "compile", str(tmp_path / "x.tflite"), "-o",
                           str(tmp_path / "o")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith("tte: error: ") and proc.stderr.count("\n") == 1
    assert proc.stdout == ""


def test_quantize_writes_an_int8_model(tmp_path: Path, capsys):
    import onnx

    from tte.testing.onnx_models import float_model

    float_path = float_model("classifier", tmp_path)
    calib = tmp_path / "calib.npz"
    np.savez(calib, input=np.random.default_rng(0).uniform(-1, 1, (8, 1, 4, 10, 10)).astype(np.float32))
    out = tmp_path / "q.onnx"
    assert cli.main(["quantize", str(float_path), "--calib", str(calib), "-o", str(out)]) == 0
    ops_used = {n.op_type for n in onnx.load(out).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops_used
    if _have("tte.frontend", "load") and _have("codegen.ops", "emit"):  # and the int8 model compiles and runs
        from tte import host
        from tte.testing.onnx_models import ort_session

        assert cli.main(["compile", str(out), "-o", str(tmp_path / "c")]) == 0
        x = np.random.default_rng(1).uniform(-1, 1, (1, 4, 10, 10)).astype(np.float32)
        model = host.load(tmp_path / "c")
        got = model.infer_float(x)
        want = ort_session(float_path).run(None, {"input": x})[0]  # the float model
        assert got.shape == want.shape == (1, 5)
        assert np.abs(got - want).max() < 0.15 * np.abs(want).max() + 4 * model.outputs[0].scale
    _fails_with_one_line(["quantize", str(float_path), "--calib", str(tmp_path / "none.npz"), "-o", str(out)], capsys,
                         "no such file")
