"""HARD_SWISH / LOGISTIC / TANH tables and int8 SOFTMAX against tflite-micro, bit for bit; the C softmax kernel
against the numpy reference.

Tables are checked on all 256 int8 inputs for many input/output quantizations, including the corners where
TFLite's 16-bit HARD_SWISH arithmetic behaves oddly (a rounding shift of 16+ bits that gives +-1 instead of 0).
Softmax is checked on random rows of several lengths, input
scales and betas.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import tte
from tte import gemmlowp, reference
from tte.errors import UnsupportedError
from tte.ir import Graph, IOSpec, QParams, Tensor
from tte.ops import cases as C
from tte.ops.activations import hard_swish_params, hard_swish_table, logistic_table, lut_node, tanh_table
from tte.ops.softmax import _softmax_case, node_params, softmax_params, tflm_aborts
from tte.testing.tflm import run_graph

ALL_INT8 = np.arange(-128, 128, dtype=np.int8)[None]
FIXED_OUTPUT = {"logistic": (1.0 / 256.0, -128), "tanh": (1.0 / 128.0, 0)}


def _lut_graph(kind: str, s_in: float, zp_in: int, s_out: float, zp_out: int) -> Graph:
    x = C.activation("x", (1, 256), s_in, zp_in)
    y = C.activation("y", (1, 256), s_out, zp_out)
    node = lut_node(kind, f"{kind}_node", x, y)
    io = (IOSpec("x", x.shape, "NHWC", is_float=False),), (IOSpec("y", y.shape, "NHWC", is_float=False),)
    return Graph(kind, {"x": x, "y": y}, (node,), *io)


def _random_quants(kind: str, n: int, seed: int) -> list[tuple[float, int, float, int]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        s_in = float(np.exp(rng.uniform(np.log(1e-4), np.log(20.0))))
        zp_in = int(rng.integers(-128, 128))
        if kind in FIXED_OUTPUT:
            s_out, zp_out = FIXED_OUTPUT[kind]
        else:  # HARD_SWISH needs s_in < 128 * s_out
            s_out, zp_out = (
                float(s_in * np.exp(rng.uniform(np.log(1 / 100), np.log(8.0)))),
                int(rng.integers(-128, 128)),
            )
        out.append((s_in, zp_in, s_out, zp_out))
    return out


# (s_in, zp_in, s_out, zp_out) corners of HARD_SWISH: output exponents <= -16 (the int16 RoundingDivideByPOT
# gives +-1 for 0), negative and large reluish exponents, outputs saturating at both ends.
HARD_SWISH_CORNERS = [
    (0.001, 0, 0.6, 0),
    (0.0001, 0, 0.5, 0),
    (0.02, -128, 100.0, -128),
    (0.05, 0, 0.0004, 100),
    (1.0, 0, 0.0079, 120),
    (50.0, 0, 0.4, -128),
    (0.003, 5, 0.003, 5),
]
SATURATING_CORNERS = [(1e-5, 0), (3e-4, -128), (0.0059, 127), (1.0, 0), (16.0, -3), (100.0, 127)]


def _cases() -> list:
    params = []
    for kind in ("hard_swish", "logistic", "tanh"):
        quants = _random_quants(kind, 25, seed=len(kind))
        corners = (
            HARD_SWISH_CORNERS if kind == "hard_swish" else [(s, z, *FIXED_OUTPUT[kind]) for s, z in SATURATING_CORNERS]
        )
        params += [pytest.param(kind, q, id=f"{kind}-{q[0]:.3g}-{q[1]}-{q[2]:.3g}-{q[3]}") for q in quants + corners]
    return params


@pytest.mark.parametrize(("kind", "quant"), _cases())
def test_table_matches_tflite_micro(kind: str, quant: tuple[float, int, float, int]) -> None:
    g = _lut_graph(kind, *quant)
    want = run_graph(g, ALL_INT8)["y"]
    got = reference.run(g, ALL_INT8)["y"]
    diff = np.flatnonzero(got != want)
    assert diff.size == 0, (
        f"{diff.size} of 256 differ, first x={diff[0] - 128}: {got.flat[diff[0]]} vs {want.flat[diff[0]]}"
    )


def test_hard_swish_corners_really_are_corners() -> None:
    """The corner cases above exercise what they claim (so the oracle test covers those code paths)."""
    p = hard_swish_params(QParams(0.001, 0), QParams(0.6, 0))
    assert p["output_multiplier_exponent"] <= -16
    table = np.array(hard_swish_table(QParams(0.001, 0), QParams(0.6, 0)))
    assert set(table.tolist()) == {-1, 1}  # the real values are all ~0: the +-1 is TFLite's int16 shift quirk
    saturated = np.array(hard_swish_table(QParams(0.05, 0), QParams(0.0004, 100)))
    assert saturated.min() == -128 and saturated.max() == 127
    assert hard_swish_params(QParams(0.0001, 0), QParams(0.5, 0))["reluish_multiplier_exponent"] < 0
    assert hard_swish_params(QParams(50.0, 0), QParams(0.4, -128))["reluish_multiplier_exponent"] > 10


def test_tables_follow_the_real_functions() -> None:
    """Away from TFLite's quirks the tables are the functions they stand for, within one output step."""
    x = (np.arange(-128, 128) - 3) * 0.05
    logistic = (np.array(logistic_table(QParams(0.05, 3), QParams(1 / 256, -128))) + 128) / 256
    tanh = np.array(tanh_table(QParams(0.05, 3), QParams(1 / 128, 0))) / 128
    hswish = (np.array(hard_swish_table(QParams(0.05, 3), QParams(0.04, -20))) + 20) * 0.04
    assert np.abs(logistic - np.minimum(1 / (1 + np.exp(-x)), 127 / 256 + 0.5)).max() <= 1 / 256
    assert np.abs(tanh - np.clip(np.tanh(x), -1, 127 / 128)).max() <= 1 / 128
    assert np.abs(hswish - np.clip(x * np.clip(x + 3, 0, 6) / 6, -108 * 0.04, 147 * 0.04)).max() <= 0.04


def test_gemmlowp_functions_are_accurate() -> None:
    a = np.linspace(-15.9, 0, 2001)
    raw = np.round(a * 2**26).astype(np.int64)
    exp = gemmlowp.exp_on_negative_values(raw, 5) / 2**31
    assert np.abs(exp - np.exp(raw / 2**26)).max() < 1e-6
    b = np.linspace(-7.9, 7.9, 1001)
    raw4 = np.round(b * 2**27).astype(np.int64)
    assert np.abs(gemmlowp.logistic(raw4, 4) / 2**31 - 1 / (1 + np.exp(-raw4 / 2**27))).max() < 1e-6
    assert np.abs(gemmlowp.tanh(raw4, 4) / 2**31 - np.tanh(raw4 / 2**27)).max() < 1e-6


def test_lut_node() -> None:
    x, y = C.activation("a", (1, 4), 0.1, 0), C.activation("b", (1, 4), 1 / 128, 0)
    node = lut_node("tanh", "act", x, y)
    assert (node.op, node.inputs, node.outputs, node.attrs["source_op"]) == ("lut", ("a",), ("b",), "tanh")
    assert node.attrs["table"] == tanh_table(x.quant, y.quant) and len(node.attrs["table"]) == 256


@pytest.mark.parametrize(
    ("kind", "s_out", "zp_out", "needle"),
    [
        ("logistic", 1 / 128, -128, "1/256"),
        ("tanh", 1 / 128, -128, "zero point 0"),
        ("hard_swish", 0.001, 0, "128x"),
        ("gelu", 0.1, 0, "no int8 table"),
    ],
)
def test_unsupported_quantization_is_a_user_error(kind: str, s_out: float, zp_out: int, needle: str) -> None:
    x, y = C.activation("a", (1, 4), 0.2, 0), C.activation("b", (1, 4), s_out, zp_out)
    with pytest.raises(UnsupportedError) as e:
        lut_node(kind, "my_act", x, y)
    msg = str(e.value)
    assert "my_act" in msg and "\n" not in msg and needle in msg, msg


# SOFTMAX


def _softmax_graphs() -> list[tuple[Graph, np.ndarray]]:
    rng = np.random.default_rng(7)
    out = []
    for i, depth in enumerate((1, 2, 5, 10, 16, 33, 100, 255, 1000)):
        for j, (s_in, beta) in enumerate(((0.1, 1.0), (0.004, 1.0), (0.5, 1.0), (0.03, 2.5), (1.7, 0.3))):
            rows = 1 + (i + j) % 3
            g = _softmax_case(f"softmax_{depth}_{j}", (rows, depth), s_in, int(rng.integers(-20, 20)), beta)
            wide = rng.integers(-128, 128, (rows, depth))
            narrow = np.clip(np.round(rng.normal(rng.integers(-80, 80), rng.uniform(1, 25), (rows, depth))), -128, 127)
            out += [(g, wide.astype(np.int8)), (g, narrow.astype(np.int8))]
    return out


def test_softmax_matches_tflite_micro() -> None:
    compared = 0
    for g, x in _softmax_graphs():
        if tflm_aborts(x, node_params(g.nodes[0], g)):
            continue  # TFLM would abort the process (see test_tflm_softmax_abort_is_predicted)
        want = run_graph(g, x)[g.outputs[0].tensor]
        got = reference.run(g, x)[g.outputs[0].tensor]
        diff = np.flatnonzero(got != want)
        assert diff.size == 0, (
            f"{g.name}: {diff.size}/{x.size} differ, e.g. {got.flat[diff[0]]} vs {want.flat[diff[0]]}"
        )
        compared += x.size
    assert compared > 15000


def test_tflm_softmax_abort_is_predicted() -> None:
    """TFLM's int8 SOFTMAX aborts (TFLITE_CHECK on its output shift) when a row's sum of exps reaches 512:
    `tflm_aborts` predicts it and the reference returns -128 there. Run in a child process, since it aborts."""
    script = textwrap.dedent(
        """
        import sys, numpy as np
        from tte.ops.softmax import _softmax_case
        from tte.testing.tflm import run_graph
        n = int(sys.argv[1])
        g = _softmax_case("s", (1, n), 0.1, 0)
        print(int(run_graph(g, np.zeros((1, n), np.int8))["s_y"].max()))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(Path(tte.__file__).resolve().parents[1])}
    results = {}
    for n in (511, 512):
        g = _softmax_case("s", (1, n), 0.1, 0)
        x = np.zeros((1, n), np.int8)
        results[n] = (tflm_aborts(x, node_params(g.nodes[0], g)), reference.run(g, x)["s_y"].max())
        proc = subprocess.run(
            [sys.executable, "-c", script, str(n)], capture_output=True, text=True, timeout=120, env=env
        )
        if results[n][0]:
            assert proc.returncode == -signal.SIGABRT, (n, proc.returncode, proc.stderr[-500:])
        else:
            assert proc.returncode == 0, (n, proc.returncode, proc.stderr[-500:])
            assert int(proc.stdout.split()[-1]) == results[n][1]
    assert results[511][0] is False and results[512] == (True, -128)


def test_softmax_parameters() -> None:
    p = softmax_params(1.0, 0.1)
    assert p.input_left_shift == 23 and 2**30 <= p.input_multiplier < 2**31  # 0.1 * 2^26 = 0.8 * 2^23
    assert p.input_multiplier * 2.0 ** (p.input_left_shift - 31) == pytest.approx(float(np.float32(0.1)) * 2**26)
    assert p.diff_min == -int(np.floor(31 * 2**26 / 2**23)) == -248
    capped = softmax_params(1.0, 100.0)  # beta * s * 2^26 > 2^31 - 1: capped, only the row max survives
    assert capped.input_left_shift == 31 and capped.diff_min == 0
    with pytest.raises(UnsupportedError, match="too small"):
        softmax_params(1.0, 1e-9, node="sm")


def test_softmax_output_quantization_is_checked() -> None:
    g = _softmax_case("bad", (1, 10), 0.1, 0)
    y = g["bad_y"]
    bad = Graph(
        g.name,
        {**g.tensors, "bad_y": Tensor("bad_y", y.shape, "int8", QParams(1 / 255, -128))},
        g.nodes,
        g.inputs,
        g.outputs,
    )
    with pytest.raises(UnsupportedError, match="node 'bad'"):
        reference.run(bad, np.zeros((1, 10), np.int8))


# C kernels


def test_c_softmax_matches_reference() -> None:
    """tte_softmax_s8 == the numpy reference, bit for bit, also where TFLM would abort (rows of 512+ ties)."""
    from tte.testing.c_harness import run_c

    graphs = _softmax_graphs()
    ties = _softmax_case("softmax_ties", (2, 600), 0.01, 0)
    graphs.append((ties, np.stack([np.zeros(600), np.arange(600) % 7]).astype(np.int8)))
    assert tflm_aborts(graphs[-1][1], node_params(ties.nodes[0], ties))
    for g, x in graphs:
        got = run_c(g, x)[g.outputs[0].tensor]
        want = reference.run(g, x)[g.outputs[0].tensor]
        np.testing.assert_array_equal(got, want, err_msg=g.name)


def test_c_lut_runs_activation_tables() -> None:
    from tte.testing.c_harness import run_c

    for kind, quant in (("hard_swish", (0.05, 3, 0.04, -20)), ("logistic", (0.1, -7, 1 / 256, -128))):
        g = _lut_graph(kind, *quant)
        np.testing.assert_array_equal(run_c(g, ALL_INT8)["y"], reference.run(g, ALL_INT8)["y"], err_msg=kind)


def test_c_softmax_rejects_bad_output_quantization() -> None:
    from codegen.ops import emit

    g = _softmax_case("sm", (1, 10), 0.1, 0)
    y = g["sm_y"]
    bad = Graph(
        g.name, {**g.tensors, "sm_y": Tensor("sm_y", y.shape, "int8", QParams(0.01, 0))}, g.nodes, g.inputs, g.outputs
    )
    with pytest.raises(UnsupportedError, match="node 'sm' \\(softmax\\)"):
        emit(bad.nodes[0], bad, lambda t: t, lambda s: s)
