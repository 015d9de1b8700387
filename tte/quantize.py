"""`tte quantize`: a float ONNX model + calibration inputs (.npz) -> an int8 ONNX model, by onnxruntime.

tte never quantizes by hand: this is a thin wrapper over `onnxruntime.quantization` (pre-processing, which
folds BatchNorm, then `quantize_static` with int8 activations and symmetric int8 weights, per channel).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from tte.errors import TteError


def _model_inputs(model: Path) -> list[tuple[str, list]]:
    import onnx

    try:
        proto = onnx.load(str(model), load_external_data=False)
    except Exception as e:  # onnx raises DecodeError and others for a file that is not a model
        raise TteError(f"{model}: not an ONNX model ({type(e).__name__})", hint="give a float .onnx model") from None
    inits = {i.name for i in proto.graph.initializer}
    return [(i.name, [d.dim_value or None for d in i.type.tensor_type.shape.dim])
            for i in proto.graph.input if i.name not in inits]


def calibration_batches(npz: Path, inputs: list[tuple[str, list]]) -> list[dict[str, np.ndarray]]:
    """One feed dict per calibration sample. The .npz arrays are named like the inputs (or one array for one
    input); an array of the input's rank holds samples along its batch axis, one of rank + 1 along a new first
    axis."""
    try:
        data = dict(np.load(npz))
    except (OSError, ValueError) as e:
        raise TteError(f"{npz}: cannot read calibration data ({e})", hint="save it with numpy.savez") from None
    names = [n for n, _ in inputs]
    if len(names) == 1 and len(data) == 1:
        data = {names[0]: next(iter(data.values()))}
    missing = [n for n in names if n not in data]
    if missing:
        raise TteError(f"{npz}: no calibration array for input(s) {', '.join(missing)}",
                       hint=f"name the arrays {', '.join(names)}")
    ranks = dict(inputs)
    samples = {}
    for n in names:
        a = np.asarray(data[n], dtype=np.float32)
        if a.ndim == len(ranks[n]) + 1:
            samples[n] = list(a)
        elif a.ndim == len(ranks[n]):
            samples[n] = [a[i:i + 1] for i in range(len(a))]
        else:
            raise TteError(f"{npz}: array '{n}' has shape {list(a.shape)}, the model input rank is {len(ranks[n])}",
                           hint="stack samples along a first axis")
    count = min(len(s) for s in samples.values())
    if count == 0:
        raise TteError(f"{npz}: calibration data has no samples")
    return [{n: samples[n][i] for n in names} for i in range(count)]


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over a list of feed dicts."""

    def __init__(self, batches: list[dict[str, np.ndarray]]) -> None:
        self._batches = batches
        self._it: Iterator[dict[str, np.ndarray]] = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self._batches)


def quantize(model: str | os.PathLike, calib: str | os.PathLike, output: str | os.PathLike, fmt: str = "qdq",
             per_channel: bool = True) -> Path:
    """Quantize `model` with the calibration inputs in `calib`; writes and returns `output`."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model, calib, output = Path(model), Path(calib), Path(output)
    for path in (model, calib):
        if not path.is_file():
            raise TteError(f"{path}: no such file")
    batches = calibration_batches(calib, _model_inputs(model))
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(model), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared), str(output), _Reader(batches),
            quant_format=QuantFormat.QDQ if fmt == "qdq" else QuantFormat.QOperator,
            per_channel=per_channel, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
        )
    return output
