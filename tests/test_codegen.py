"""The C emitter: every op case compiled through the full emitter == the numpy reference, bit for bit; several
models in one binary; deterministic output; symbols under the model's prefix."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from codegen.weights import definition, make_array
from tte import host, ops
from tte.compile import build, compile_graph
from tte.errors import TteError
from tte.ir import Graph
from tte.ops import cases as C
from tte.reference import run


def _have_op_table() -> bool:
    try:
        from codegen import ops as table
    except ImportError:
        return False
    return hasattr(table, "emit")


needs_ops = pytest.mark.skipif(not _have_op_table(), reason="codegen.ops (the op -> C table) is not there yet")
CASES = [(f"{op}-{g.name}", g) for op, d in sorted(ops.OPS.items()) for g in d.cases()]


def _feed(graph: Graph, seed: int) -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
    inputs = C.random_inputs(graph, seed)
    return inputs, [inputs[io.tensor] for io in graph.inputs]


@needs_ops
@pytest.mark.parametrize("case", [g for _, g in CASES], ids=[i for i, _ in CASES])
def test_op_case_c_equals_reference(case: Graph, tmp_path: Path):
    compile_graph(case, tmp_path / "out", name="m")
    model = host.load(tmp_path / "out")
    for seed in range(3):
        inputs, args = _feed(case, seed)
        expect = run(case, inputs)
        got = model.infer(*args)
        got = got if isinstance(got, tuple) else (got,)
        for io, y in zip(case.outputs, got, strict=True):
            np.testing.assert_array_equal(y, expect[io.tensor], err_msg=f"{case.name} seed {seed}")


def _cc() -> str:
    return shutil.which("cc") or pytest.skip("no host C compiler")


@needs_ops
def test_all_cases_link_into_one_library(tmp_path: Path):
    """Every op case compiled under its own prefix, all linked together with one copy of the runtime."""
    import cffi

    sources, runtime, sigs = [], {}, []
    for i, (_, g) in enumerate(CASES):
        out = tmp_path / f"m{i}"
        compile_graph(g, out, name=f"m{i}")
        sources += [out / f"m{i}.c", out / f"m{i}_weights.c"]
        runtime.update({p.name: p for p in (out / "runtime_c/src").glob("*.c")})
        sigs.append((out / "model.json").read_text())
    include = tmp_path / "m0/runtime_c/include"
    lib = tmp_path / "liball.so"
    cmd = [_cc(), "-std=c99", "-O1", "-Wall", "-Wextra", "-Werror", "-fPIC", "-shared", f"-I{include}", "-o",
           str(lib), *map(str, sources), *map(str, sorted(runtime.values()))]
    subprocess.run(cmd, check=True, capture_output=True)
    ffi = cffi.FFI()
    import json

    metas = [json.loads(s) for s in sigs]
    ffi.cdef("\n".join(m["signature"] + ";" for m in metas))
    so = ffi.dlopen(str(lib))
    for (_, g), meta in zip(CASES, metas, strict=True):
        inputs, args = _feed(g, 7)
        outs = [np.zeros(g[io.tensor].shape, np.int8) for io in g.outputs]
        status = getattr(so, meta["entry"])(*[ffi.from_buffer("int8_t[]", a) for a in args],
                                            *[ffi.from_buffer("int8_t[]", o) for o in outs])
        assert status == 0
        expect = run(g, inputs)
        for io, y in zip(g.outputs, outs, strict=True):
            np.testing.assert_array_equal(y, expect[io.tensor], err_msg=g.name)


MAIN_C = """
#include <stdio.h>
#include "conv.h"
#include "fc.h"
static const int8_t conv_in[CONV_INPUT_SIZE] = {%s};
static const int8_t fc_in[FC_INPUT_SIZE] = {%s};
int main(void) {
    static int8_t a[CONV_OUTPUT_SIZE], b[FC_OUTPUT_SIZE];
    if (conv_infer(conv_in, a) != 0 || fc_infer(fc_in, b) != 0) return 1;
    if (CONV_INPUT_DIM3 != %d || FC_OUTPUT_DIM1 != %d || CONV_INPUT_ZERO_POINT != %d) return 3;
    fwrite(a, 1, sizeof a, stdout);
    fwrite(b, 1, sizeof b, stdout);
    return 0;
}
"""


@needs_ops
def test_two_models_in_one_executable(tmp_path: Path):
    conv = ops.get("conv2d").cases()[1]
    fc = ops.get("fully_connected").cases()[1]
    sources, runtime = [], {}
    for name, g in (("conv", conv), ("fc", fc)):
        compile_graph(g, tmp_path / name, name=name)
        sources += [tmp_path / name / f"{name}.c", tmp_path / name / f"{name}_weights.c"]
        runtime.update({p.name: p for p in (tmp_path / name / "runtime_c/src").glob("*.c")})
    (xc,), (xf,) = _feed(conv, 1)[1], _feed(fc, 2)[1]
    x_zp = conv[conv.inputs[0].tensor].quant.zp
    main = MAIN_C % (", ".join(map(str, xc.ravel())), ", ".join(map(str, xf.ravel())), xc.shape[3],
                     fc[fc.outputs[0].tensor].shape[1], x_zp)
    (tmp_path / "main.c").write_text(main)
    exe = tmp_path / "both"
    cmd = [_cc(), "-std=c99", "-O1", "-Wall", "-Wextra", "-Werror", f"-I{tmp_path / 'conv'}", f"-I{tmp_path / 'fc'}",
           f"-I{tmp_path / 'conv/runtime_c/include'}", "-o", str(exe), str(tmp_path / "main.c"),
           *map(str, sources), *map(str, sorted(runtime.values()))]
    subprocess.run(cmd, check=True, capture_output=True)
    raw = np.frombuffer(subprocess.run([str(exe)], check=True, capture_output=True).stdout, np.int8)
    ya = run(conv, xc)[conv.outputs[0].tensor].ravel()
    yb = run(fc, xf)[fc.outputs[0].tensor].ravel()
    np.testing.assert_array_equal(raw, np.concatenate([ya, yb]))


@needs_ops
def test_output_is_deterministic_and_prefixed(tmp_path: Path):
    g = ops.get("conv2d").cases()[0]
    first = build(g, "net").files
    assert first == build(g, "net").files
    assert set(first) >= {"net.h", "net.c", "net_weights.c", "Makefile", "report.json", "plan.txt", "ir.txt"}
    compile_graph(g, tmp_path / "out", name="net")
    obj = tmp_path / "net.o"
    for src in ("net.c", "net_weights.c"):
        subprocess.run([_cc(), "-std=c99", "-c", "-I", str(tmp_path / "out/runtime_c/include"), "-o", str(obj),
                        str(tmp_path / "out" / src)], check=True)
        nm = subprocess.run(["nm", "--defined-only", "-g", str(obj)], check=True, capture_output=True, text=True)
        symbols = [line.split()[-1] for line in nm.stdout.splitlines() if line.strip()]
        assert symbols and all(s.startswith("net_") for s in symbols), symbols


@needs_ops
def test_reshape_of_the_input_to_the_output_is_a_copy(tmp_path: Path):
    g = ops.get("reshape").cases()[0]
    compiled = build(g, "r")
    assert compiled.report["arena_bytes"] == 32  # the 24-byte input, aligned; the output is the caller's
    compile_graph(g, tmp_path / "o", name="r")
    x = C.random_inputs(g, 3)[g.inputs[0].tensor]
    np.testing.assert_array_equal(host.load(tmp_path / "o").infer(x), x.reshape(1, 24))


@needs_ops
def test_input_written_in_place_needs_no_copy(tmp_path: Path):
    """The caller may write the input straight into the arena (`<name>_input_buffer`) and pass that pointer."""
    import cffi

    g = ops.get("conv2d").cases()[1]
    compile_graph(g, tmp_path / "o", name="net")
    lib_path = host.build_library(tmp_path / "o")
    ffi = cffi.FFI()
    ffi.cdef("int8_t *net_input_buffer(int index); int net_infer(const int8_t *input, int8_t *output);")
    lib = ffi.dlopen(str(lib_path))
    x = C.random_inputs(g, 5)[g.inputs[0].tensor]
    slot = lib.net_input_buffer(0)
    assert lib.net_input_buffer(1) == ffi.NULL
    ffi.memmove(slot, x.tobytes(), x.size)
    y = np.zeros(g[g.outputs[0].tensor].shape, np.int8)
    assert lib.net_infer(slot, ffi.from_buffer("int8_t[]", y)) == 0
    np.testing.assert_array_equal(y, run(g, x)[g.outputs[0].tensor])


def test_bad_model_name_is_a_user_error():
    with pytest.raises(TteError, match="not a C identifier"):
        build(ops.get("conv2d").cases()[0], "3d-net")


def test_const_array_literals_are_exact():
    arr = make_array("m_b", "int32_t", np.array([-(2**31), 2**31 - 1, 0, -5]))
    text = definition(arr)
    assert "(-2147483647 - 1), 2147483647, 0, -5" in text
    f = definition(make_array("m_s", "float", np.array([0.1, 1.0, 3e-7], np.float32)))
    assert "0.100000001f, 1.0f, 3.00000011e-07f" in f
    with pytest.raises(ValueError):
        make_array("m_w", "int8_t", np.array([200]))
