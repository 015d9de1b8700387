"""Every op case of the catalogue against tflite-micro: the numpy reference must agree bit for bit.

The cases come from `tte.ops.OPS[op].cases()`; each is written as a .tflite file by tte.testing.tflite_writer
and run in tflite-micro on several random int8 inputs. Cases the writer cannot express (a plain `lut` with no
TFLite source op) are skipped with the reason.
"""

from __future__ import annotations

import numpy as np
import pytest

from tte import reference
from tte.errors import UnsupportedError
from tte.ops import OPS
from tte.ops.cases import random_inputs
from tte.testing.tflite_writer import write_tflite
from tte.testing.tflm import run_graph

SEEDS = (0, 1, 2, 3)


def _cases() -> list:
    params = []
    for op in sorted(OPS):
        for case in OPS[op].cases():
            params.append(pytest.param(case, id=f"{op}/{case.name}"))
    return params


@pytest.mark.parametrize("case", _cases())
def test_reference_matches_tflite_micro(case) -> None:
    try:
        model = write_tflite(case)
    except UnsupportedError as e:
        pytest.skip(f"not expressible in TFLite: {e}")
    for seed in SEEDS:
        x = random_inputs(case, seed)
        want = run_graph(case, x, model=model)
        got = reference.run(case, x)
        for io in case.outputs:
            diff = np.flatnonzero(got[io.tensor] != want[io.tensor])
            assert diff.size == 0, (
                f"{case.name} seed {seed}: {diff.size}/{got[io.tensor].size} outputs differ, first at flat index "
                f"{diff[0]}: reference {got[io.tensor].flat[diff[0]]} tflite-micro {want[io.tensor].flat[diff[0]]}")


def test_extreme_inputs_match() -> None:
    """All -128 and all 127 inputs hit the saturation paths that random inputs rarely reach."""
    for op in ("conv2d", "depthwise_conv2d", "fully_connected", "add", "mean", "avg_pool2d"):
        case = OPS[op].cases()[0]
        for v in (-128, 127):
            x = {io.tensor: np.full(case[io.tensor].shape, v, np.int8) for io in case.inputs}
            want = run_graph(case, x)
            got = reference.run(case, x)
            for io in case.outputs:
                np.testing.assert_array_equal(got[io.tensor], want[io.tensor], err_msg=f"{op} all {v}")


@pytest.mark.parametrize("kind, s_in, zp_in, out_q", [
    ("logistic", 0.05, 3, (1 / 256, -128)),
    ("logistic", 0.2, -40, (1 / 256, -128)),
    ("tanh", 0.03, 0, (1 / 128, 0)),
    ("tanh", 0.1, 25, (1 / 128, 0)),
    ("hard_swish", 0.04, -10, (0.03, -60)),
    ("hard_swish", 0.1, 5, (0.05, -20)),
])
def test_activation_tables_match_tflite_micro(kind: str, s_in: float, zp_in: int, out_q: tuple) -> None:
    """A lut node with a source_op is written as that TFLite op: its table equals TFLM on all 256 inputs."""
    from tte.ir import Graph, IOSpec
    from tte.ops.activations import lut_node
    from tte.ops.cases import activation

    x, y = activation("x", (1, 256), s_in, zp_in), activation("y", (1, 256), *out_q)
    g = Graph(kind, {"x": x, "y": y}, (lut_node(kind, kind, x, y),), (IOSpec("x", x.shape, is_float=False),),
              (IOSpec("y", y.shape, is_float=False),))
    every = np.arange(-128, 128, dtype=np.int8)[None]
    np.testing.assert_array_equal(reference.run(g, every)["y"], run_graph(g, every)["y"])
