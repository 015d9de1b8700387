"""End to end on the host: model file -> `tte compile` -> `tte.host.load(...).infer` == the numpy reference,
bit for bit, for a MobileNetV2-style TFLite model, quantized ONNX models and the three shared paper models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import tte
from tte import host
from tte.compile import compile_model, load
from tte.passes.normalize import normalize
from tte.reference import run

SHARED = Path(tte.__file__).resolve().parents[1].parent / "shared" / "models"
PAPER_MODELS = ("mbv2-w0.35-int8", "proxyless-w0.3-int8", "mcunet-5fps-int8")


def _have(module: str, attr: str) -> bool:
    try:
        mod = __import__(module, fromlist=[attr])
    except ImportError:
        return False
    return hasattr(mod, attr)


pytestmark = pytest.mark.skipif(not (_have("codegen.ops", "emit") and _have("tte.frontend", "load")),
                                reason="needs the op -> C table and the frontends")


def _float_inputs(model: host.HostModel, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.uniform(-1.0, 1.0, io.user_shape).astype(np.float32) for io in model.inputs]


def _check_against_reference(path: Path, out: Path, seeds: range) -> dict:
    """Compile `path` into `out`, run the C on float inputs and compare with the reference on the same bytes."""
    report = compile_model(path, out)
    graph = normalize(load(path))
    model = host.load(out)
    for seed in seeds:
        xs = _float_inputs(model, seed)
        q = [io.to_int8(x) for io, x in zip(model.inputs, xs, strict=True)]
        expect = run(graph, {io.tensor: a for io, a in zip(graph.inputs, q, strict=True)})
        got = model.infer(*xs)
        got = got if isinstance(got, tuple) else (got,)
        for io, y in zip(graph.outputs, got, strict=True):
            np.testing.assert_array_equal(y, expect[io.tensor], err_msg=f"{path.name} seed {seed}")
        assert np.array_equal(model.infer(*q)[0] if len(got) > 1 else model.infer(*q), got[0])
    return report


@pytest.mark.parametrize("pad_mode", ["symmetric", "same"])
def test_mobilenet_v2_tflite(tmp_path: Path, pad_mode: str):
    from tte.testing.models import mobilenetv2
    from tte.testing.tflite_writer import write_tflite

    path = tmp_path / "mbv2.tflite"
    path.write_bytes(write_tflite(mobilenetv2(float_io=True, pad_mode=pad_mode)))
    report = _check_against_reference(path, tmp_path / "out", range(3))
    assert report["arena_bytes"] > 0 and report["macs_forward"] > 0
    assert (tmp_path / "out" / "plan.txt").read_text().startswith(f"arena {report['arena_bytes']} bytes")


def _onnx_models() -> list[str]:
    from tte.testing.onnx_models import MODELS

    return sorted(MODELS)


@pytest.mark.parametrize("fmt", ["qdq", "qop"])
@pytest.mark.parametrize("name", _onnx_models())
def test_quantized_onnx(tmp_path: Path, name: str, fmt: str):
    """Every small ONNX test model, quantized by onnxruntime in both formats: C == reference."""
    from tte.testing.onnx_models import quantized_model

    _check_against_reference(quantized_model(name, fmt, tmp_path), tmp_path / "out", range(3))


def _temple_photo() -> np.ndarray:
    """scikit-learn's temple photo, centre-cropped to 128x128, in [-1, 1], NCHW (the paper models' input)."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    im = Image.fromarray(load_sample_images().images[0])
    w, h = im.size
    s = min(w, h)
    im = im.crop(((w - s) // 2, (h - s) // 2, (w + s) // 2, (h + s) // 2)).resize((128, 128), Image.BILINEAR)
    return (np.asarray(im, np.float32) / 127.5 - 1.0).transpose(2, 0, 1)[None]


def _check_photo(name: str, model: host.HostModel) -> None:
    """On a real photo the C model agrees with onnxruntime within a few LSB and sees a church-like building."""
    from tte.testing.onnx_models import ort_session

    x = _temple_photo()
    got = model.infer_float(x).ravel()
    session = ort_session(SHARED / f"{name}.onnx")
    expect = session.run(None, {session.get_inputs()[0].name: x})[0].ravel()
    # ORT requantizes in float (1 LSB per layer at most); the differences compound a little over 50+ layers.
    lsb = np.abs(got - expect) / model.outputs[0].scale
    print(f"{name}: vs onnxruntime max {lsb.max():.0f} LSB, mean {lsb.mean():.2f} LSB")
    assert lsb.max() <= 8.5 and lsb.mean() < 1.5
    top5 = set(np.argsort(got)[::-1][:5].tolist())
    assert len(top5 & set(np.argsort(expect)[::-1][:5].tolist())) >= 3
    assert top5 & {437, 442, 497}, top5  # ImageNet beacon, bell cote, church


@pytest.mark.parametrize("name", PAPER_MODELS)
def test_paper_model(tmp_path: Path, name: str):
    """The shared paper models: C == reference on random inputs, sensible on a photo, and a full report."""
    from tte import report as report_mod

    path = SHARED / f"{name}.onnx"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    out = tmp_path / "out"
    report = _check_against_reference(path, out, range(2))
    _check_photo(name, host.load(out))
    graph = normalize(load(path))
    assert report["arena_bytes"] >= report["peak_live_bytes"] > 0
    # Every weight and bias once, plus (at most) a 32-bit multiplier and shift per output channel of each conv.
    weights = sum(t.nbytes for t in graph.tensors.values() if t.is_const)
    channels = sum(graph[n.inputs[2]].size for n in graph.nodes if n.op in ("conv2d", "depthwise_conv2d"))
    # ... plus the two 256-entry int32 input-stage tables of each add of >= LUT_MIN_SIZE elements (faster adds).
    from codegen.ops.eltwise import LUT_MIN_SIZE
    tables = sum(2 * 256 * 4 for n in graph.nodes if n.op == "add" and graph[n.outputs[0]].size >= LUT_MIN_SIZE)
    assert weights < report["const_bytes"] <= weights + 8 * channels + tables
    assert report["flash_bytes"] > report["const_bytes"]
    assert report["peak_sram_bytes"] > report["arena_bytes"] + report["io_bytes"]
    assert report["macs_forward"] > 10e6
    text = report_mod.summary(report_mod.read(out))
    assert f"{report['arena_bytes']:,} B" in text and f"{report['flash_bytes']:,} B" in text
    print(f"{name}: arena {report['arena_bytes']} B, flash {report['flash_bytes']} B, "
          f"peak SRAM {report['peak_sram_bytes']} B, MACs {report['macs_forward']}")
