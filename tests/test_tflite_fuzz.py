"""Damaged .tflite files: truncated, bit-flipped and byte-smashed copies of a valid model must either fail with a
TteError (one clear line) or load into a graph the reference interpreter runs. Any other exception is a bug.

Only tte runs the damaged models: tflite-micro is never fed corrupt data (it may crash the process).
"""

from __future__ import annotations

import numpy as np
import pytest

from tte import reference
from tte.errors import TteError
from tte.frontend.tflite import load
from tte.ops.cases import random_inputs
from tte.testing.models import Block, mobilenetv2, op_zoo
from tte.testing.tflite_writer import write_tflite


def _mini_mobilenet() -> bytes:
    # Small, so that structure (tables, vectors, shapes, scales) is a large share of the bytes; it has PAD,
    # CONV_2D, DEPTHWISE_CONV_2D, ADD, MEAN, FULLY_CONNECTED and float QUANTIZE / DEQUANTIZE boundaries.
    g = mobilenetv2(input_hw=(8, 8), stem=4, blocks=(Block(2, 4, 3, 1), Block(2, 6, 3, 2)), last=8, classes=3,
                    float_io=True, seed=3)
    return write_tflite(g)


@pytest.fixture(scope="module", params=["mini_mobilenet", "op_zoo"])
def model(request) -> bytes:
    # op_zoo adds PADV2, AVERAGE_POOL_2D, HARD_SWISH, LOGISTIC, TANH, TRANSPOSE, RESHAPE, QUANTIZE, SOFTMAX.
    return _mini_mobilenet() if request.param == "mini_mobilenet" else write_tflite(op_zoo())


def _variants(data: bytes, seed: int) -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(seed)
    out = [(f"truncated to {n}", data[:n]) for n in sorted(set(rng.integers(0, len(data), 60).tolist()))]
    for _ in range(220):
        pos, bit = int(rng.integers(len(data))), int(rng.integers(8))
        b = bytearray(data)
        b[pos] ^= 1 << bit
        out.append((f"bit {bit} flipped at {pos}", bytes(b)))
    for _ in range(60):
        b = bytearray(data)
        pos = rng.integers(len(data), size=4)
        for p in pos:
            b[p] = int(rng.integers(256))
        out.append((f"bytes smashed at {pos.tolist()}", bytes(b)))
    return out


def test_damaged_models_fail_cleanly_or_run(model: bytes) -> None:
    load(model)  # the intact model loads
    outcomes = {"error": 0, "runs": 0}
    for what, data in _variants(model, seed=len(model)):
        try:
            g = load(data)
        except TteError as e:
            assert "\n" not in str(e), what
            outcomes["error"] += 1
            continue
        except Exception as e:  # noqa: BLE001 - the point of the test
            pytest.fail(f"{what}: load raised {type(e).__name__}: {e}")
        try:
            reference.run(g, random_inputs(g, 0))
        except Exception as e:  # noqa: BLE001
            pytest.fail(f"{what}: the loaded graph fails in the reference: {type(e).__name__}: {e}")
        outcomes["runs"] += 1
    # Both paths are exercised: many damaged files are refused, flips in weight data load and run.
    assert outcomes["error"] >= 60 and outcomes["runs"] >= 60, outcomes
