"""Damaged ONNX files (truncated, bit-flipped) either load or raise a TteError; never another exception."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import tte.frontend
from tte.errors import TteError
from tte.ir import Graph
from tte.testing import onnx_models as om

SOURCES = [("inverted_residual", "qdq"), ("inverted_residual", "qop"), ("activations", "qdq"),
           ("pad_flatten", "qop")]


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("onnx_fuzz_sources")
    return {f"{n}_{f}": om.quantized_model(n, f, folder).read_bytes() for n, f in SOURCES}


def _load(data: bytes, path: Path) -> str:
    """'ok', or the TteError subclass raised; anything else propagates and fails the test."""
    path.write_bytes(data)
    try:
        graph = tte.frontend.load(path)
    except TteError as e:
        assert str(e), "a TteError needs a message"
        return type(e).__name__
    assert isinstance(graph, Graph)
    graph.validate()
    return "ok"


@pytest.mark.parametrize("source", [f"{n}_{f}" for n, f in SOURCES])
def test_truncated(sources: dict[str, bytes], source: str, tmp_path: Path) -> None:
    data = sources[source]
    rng = np.random.default_rng(1)
    cuts = sorted({0, 1, 4, 8, 16, len(data) - 1, *rng.integers(1, len(data), 60).tolist()})
    outcomes = [_load(data[:n], tmp_path / "cut.onnx") for n in cuts]
    assert outcomes.count("ok") < len(outcomes), "truncation never detected"


@pytest.mark.parametrize("source", [f"{n}_{f}" for n, f in SOURCES])
def test_bit_flips(sources: dict[str, bytes], source: str, tmp_path: Path) -> None:
    data = sources[source]
    rng = np.random.default_rng(2)
    outcomes = []
    for _ in range(150):
        buf = bytearray(data)
        for pos in rng.integers(0, len(buf), int(rng.integers(1, 4))):
            buf[pos] ^= 1 << int(rng.integers(0, 8))
        outcomes.append(_load(bytes(buf), tmp_path / "flip.onnx"))
    assert "ok" in outcomes  # most flips land in weights, which load fine
