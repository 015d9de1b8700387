"""A C harness for the in-place depthwise kernels (runtime_c/src/depthwise_inplace.c), for kernel tests.

Like `tte.testing.c_harness` (one static buffer per tensor, the kernels called through `codegen.ops`), except
that every depthwise node the in-place kernels can compute (`tte.passes.inplace.depthwise_inplace_ok`) writes
its output into its input's buffer, sized for the larger of the two, and gets a scratch buffer named
`scratch_name(node)`: what the memory plan arranges in a model, so the emitters pick the in-place variants.
`generate` gives the same `HarnessSource` as c_harness (`tte.testing.kernel_firmware.main_source` runs it in
QEMU); `run_c` builds and runs it on the host.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from cffi import FFI

from codegen.ops import INCLUDE_DIR, emit
from tte.ir import DTYPES, Graph
from tte.passes.inplace import depthwise_inplace_ok, scratch_bytes, scratch_name
from tte.testing import c_harness as H

_FFI = FFI()
_FFI.cdef("void *tte_harness_buffer(int index); void tte_harness_run(void);")
_LIBS: dict[str, object] = {}


def _buffers(graph: Graph) -> tuple[dict[str, int], dict[int, int]]:
    """(buffer index of every tensor and scratch, bytes of every buffer)."""
    index: dict[str, int] = {}
    size: dict[int, int] = {}

    def put(name: str, nbytes: int, shared: str | None = None) -> None:
        i = index[shared] if shared is not None else len(size)
        index[name] = i
        size[i] = max(size.get(i, 0), nbytes)

    for io in graph.inputs:
        put(io.tensor, graph[io.tensor].nbytes)
    for node in graph.nodes:
        inplace = depthwise_inplace_ok(node, graph)
        for k, out in enumerate(node.outputs):
            put(out, graph[out].nbytes, node.inputs[0] if inplace and k == 0 else None)
        if inplace:
            put(scratch_name(node), scratch_bytes(node, graph))
    return index, size


def generate(graph: Graph, prefix: str = "tte_harness_") -> H.HarnessSource:
    """The C source of `graph` (functions `<prefix>buffer(index)` and `<prefix>run()`, as c_harness)."""
    buffers, sizes = _buffers(graph)
    weights = {n: f"w{i}" for i, n in enumerate(n for n, t in graph.tensors.items() if t.is_const)}

    def ref(tensor: str) -> str:
        if tensor in weights:
            return weights[tensor]
        ctype = H.CTYPES[graph[tensor].dtype] if tensor in graph.tensors else "void"
        return f"(({ctype} *)b{buffers[tensor]})"

    consts, body, sources = [], [], []
    for k, node in enumerate(graph.nodes):
        call = emit(node, graph, ref, lambda suffix, k=k: f"n{k}_{suffix}")
        consts += call.consts
        body += [f"    /* {node.op} '{node.name}' */", *(f"    {line}" for line in call.lines)]
        sources += [s for s in call.sources if s not in sources]
    lines = ["#include <stddef.h>", "#include <stdint.h>", '#include "tte_runtime.h"', ""]
    lines += [H._c_array(weights[n], H.CTYPES[t.dtype], t.data) for n, t in graph.tensors.items() if n in weights]
    lines += [H._c_array(c.name, c.ctype, c.values) for c in consts]
    lines += [f"static uint32_t b{i}[{max(1, (n + 3) // 4)}];" for i, n in sorted(sizes.items())]
    lines += [f"static void *const buffers[{max(len(sizes), 1)}] = {{{', '.join(f'b{i}' for i in sorted(sizes))}}};"]
    lines += [f"void *{prefix}buffer(int index);", f"void {prefix}run(void);", ""]
    lines += [f"void *{prefix}buffer(int index)", "{", "    return buffers[index];", "}", ""]
    lines += [f"void {prefix}run(void)", "{", *body, "}", ""]
    return H.HarnessSource("\n".join(lines), buffers, tuple(sources))


def run_c(graph: Graph, inputs: Mapping[str, np.ndarray], dsp: bool = False
          ) -> tuple[dict[str, np.ndarray], H.HarnessSource]:
    """Build (cached) and run `graph` on the host; the graph outputs as `tte.reference.run` gives them, and the
    source (its `code` shows which kernels ran). `dsp`: the kernels' DSP paths, emulated (-DTTE_DSP_EMULATE)."""
    src = generate(graph)
    flags = H.CFLAGS + (("-DTTE_DSP_EMULATE",) if dsp else ())
    H.CACHE_DIR.mkdir(parents=True, exist_ok=True)
    headers = H._headers_digest()
    objects = [H._object(s, flags, headers) for s in src.sources]
    key = H._hash(src.code.encode(), headers, " ".join((H.CC, *flags)).encode(), *(o.name.encode() for o in objects))
    lib_path = H.CACHE_DIR / f"inplace-{key}.so"
    if not lib_path.exists():
        c_file = H.CACHE_DIR / f"inplace-{key}.c"
        c_file.write_text(src.code)
        H._compile([*flags, f"-I{INCLUDE_DIR}", "-shared", str(c_file), *map(str, objects)], lib_path)
    if str(lib_path) not in _LIBS:
        _LIBS[str(lib_path)] = _FFI.dlopen(str(lib_path))
    lib = _LIBS[str(lib_path)]
    for io in graph.inputs:
        x = np.ascontiguousarray(inputs[io.tensor], dtype=DTYPES[graph[io.tensor].dtype])
        _FFI.memmove(lib.tte_harness_buffer(src.buffers[io.tensor]), x.tobytes(), x.nbytes)
    lib.tte_harness_run()
    out = {}
    for io in graph.outputs:
        t = graph[io.tensor]
        raw = _FFI.buffer(lib.tte_harness_buffer(src.buffers[io.tensor]), t.nbytes)
        out[io.tensor] = np.frombuffer(bytes(raw), dtype=DTYPES[t.dtype]).reshape(t.shape).copy()
    return out, src
