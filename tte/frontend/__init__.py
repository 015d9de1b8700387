"""Frontends: an int8 model file (ONNX or TFLite) -> IR graph.

    graph = tte.frontend.load("mbv2-w0.35-int8.onnx")    # graph.name == "mbv2_w0_35_int8"

The format is recognised from the content, not the file name: a TFLite flatbuffer carries the identifier
b"TFL3" at bytes 4..8; anything else is read as ONNX.
"""

from __future__ import annotations

import re
from pathlib import Path

from tte.errors import ModelFormatError
from tte.ir import Graph

TFLITE_IDENTIFIER = b"TFL3"


def c_identifier(text: str) -> str:
    """`text` made a C identifier: other characters become '_', a leading digit gets an 'm_' prefix."""
    name = re.sub(r"[^0-9A-Za-z_]", "_", text) or "model"
    return f"m_{name}" if name[0].isdigit() else name


def load(path: str | Path, name: str | None = None) -> Graph:
    """Read an int8 ONNX or TFLite model; the graph name defaults to the file stem as a C identifier."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            head = f.read(8)
    except OSError as e:
        raise ModelFormatError(f"cannot read {path}: {e.strerror or e}", hint="check the model path") from None
    name = c_identifier(name or path.stem)
    if head[4:8] == TFLITE_IDENTIFIER:
        from tte.frontend import tflite

        return tflite.load(path, name=name)
    from tte.frontend import onnx as onnx_frontend

    return onnx_frontend.load(path, name=name)
