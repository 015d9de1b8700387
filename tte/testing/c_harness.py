"""Run a small IR graph through the C runtime kernels on the host, for kernel tests.

`run_c(graph, inputs)` emits one C function that calls each node's kernel (through `codegen.ops`) on static
buffers, builds it with the host `cc` into a shared library, loads it with cffi's ABI mode and returns the
graph outputs like `tte.reference.run` does. Runtime sources are compiled once into objects; objects and
libraries are cached in a temp folder under a hash of everything that goes into them, so repeated test runs
only load. This is not the model emitter (no memory plan: every tensor has its own buffer; reshape outputs
alias their inputs).

`dsp=True` builds with -DTTE_DSP_EMULATE: the kernels' Cortex-M DSP paths with portable C instructions.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from cffi import FFI

from codegen.ops import INCLUDE_DIR, RUNTIME_DIR, ConstArray, emit
from codegen.ops.train_update import inplace_outputs
from tte import ops
from tte.ir import DTYPES, Graph

CC = os.environ.get("CC", "cc")
CFLAGS = ("-O2", "-std=c99", "-ffp-contract=off", "-fPIC", "-Wall", "-Wextra", "-Werror")
CTYPES = {"int8": "int8_t", "int32": "int32_t", "float32": "float", "uint8": "uint8_t", "int16": "int16_t"}
CACHE_DIR = Path(tempfile.gettempdir()) / f"tte_c_harness_{os.getuid() if hasattr(os, 'getuid') else 0}"

_FFI = FFI()
_FFI.cdef("void *tte_harness_buffer(int index); void tte_harness_run(void);")
_LIBS: dict[Path, object] = {}


@dataclass(frozen=True)
class HarnessSource:
    """The generated C of a graph: the code, the buffer index of each tensor and the runtime sources needed."""

    code: str
    buffers: dict[str, int]
    sources: tuple[str, ...]


def _c_array(name: str, ctype: str, values: np.ndarray, const: bool = True) -> str:
    flat = np.asarray(values).reshape(-1)
    if ctype == "int32_t":  # -2^31 is not an int literal in C
        body = ", ".join("(-2147483647 - 1)" if int(v) == -(2**31) else str(int(v)) for v in flat)
    else:
        body = ", ".join(str(v) for v in flat.tolist())
    return f"static {'const ' if const else ''}{ctype} {name}[{max(flat.size, 1)}] = {{{body or '0'}}};"


def _buffers(graph: Graph, inplace_state: bool = False) -> dict[str, int]:
    """A buffer index per non-constant tensor; reshape outputs share their input's buffer. With `inplace_state`,
    the tensors a train step updates in place (`codegen.ops.train_update.inplace_outputs`) share one buffer
    with the state they update, and constant state gets a (mutable) buffer too."""
    index: dict[str, int] = {}
    for io in graph.inputs:
        index[io.tensor] = len(set(index.values()))
    for node in graph.nodes:
        pairs = dict((o, i) for i, o in inplace_outputs(node)) if inplace_state else {}
        for src in pairs.values():
            if src not in index:
                index[src] = max(index.values(), default=-1) + 1
        for out in node.outputs:
            if out in pairs:
                index[out] = index[pairs[out]]
            elif ops.get(node.op).inplace_alias:
                index[out] = index[node.inputs[0]]
            else:
                index[out] = max(index.values(), default=-1) + 1
    return index


def generate(graph: Graph, prefix: str = "tte_harness_", inplace_state: bool = False) -> HarnessSource:
    """The C source of `graph`: weight arrays, per-node constants, one static buffer per tensor, and the
    functions `<prefix>buffer(index)` (a tensor's buffer) and `<prefix>run()`. With `inplace_state` a train
    step's state tensors live in mutable buffers that its updates change in place (see `_buffers`)."""
    buffers = _buffers(graph, inplace_state)
    weights = {name: f"w{i}" for i, name in
               enumerate(n for n, t in graph.tensors.items() if t.is_const and n not in buffers)}
    initial = {buffers[n]: t for n, t in graph.tensors.items() if t.is_const and n in buffers}
    sizes: dict[int, tuple[str, int]] = {}
    for name, i in buffers.items():
        t = graph[name]
        ctype, size = sizes.get(i, (CTYPES[t.dtype], 0))
        sizes[i] = (ctype, max(size, t.size))

    def ref(tensor: str) -> str:
        return weights[tensor] if tensor in weights else f"b{buffers[tensor]}"

    consts: list[ConstArray] = []
    body: list[str] = []
    sources: list[str] = []
    for k, node in enumerate(graph.nodes):
        call = emit(node, graph, ref, lambda suffix, k=k: f"n{k}_{suffix}")
        consts += call.consts
        body += [f"    /* {node.op} '{node.name}' */", *(f"    {line}" for line in call.lines)]
        sources += [s for s in call.sources if s not in sources]
    lines = ["#include <stddef.h>", "#include <stdint.h>", '#include "tte_runtime.h"', ""]
    lines += [_c_array(weights[n], CTYPES[t.dtype], t.data) for n, t in graph.tensors.items() if n in weights]
    lines += [_c_array(c.name, c.ctype, c.values) for c in consts]
    lines += [_c_array(f"b{i}", ctype, initial[i].data, const=False) if i in initial else
              f"static {ctype} b{i}[{max(size, 1)}];" for i, (ctype, size) in sorted(sizes.items())]
    lines += [f"static void *const buffers[{max(len(sizes), 1)}] = {{{', '.join(f'b{i}' for i in sorted(sizes))}}};"]
    lines += [f"void *{prefix}buffer(int index);", f"void {prefix}run(void);", ""]
    lines += [f"void *{prefix}buffer(int index)", "{", "    return buffers[index];", "}", ""]
    lines += [f"void {prefix}run(void)", "{", *body, "}", ""]
    return HarnessSource("\n".join(lines), buffers, tuple(sources))


def _hash(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(len(p).to_bytes(8, "little"))
        h.update(p)
    return h.hexdigest()[:24]


def _compile(args: list[str], target: Path) -> None:
    """Run cc writing `target` atomically (tests run in parallel processes)."""
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    proc = subprocess.run([CC, *args, "-o", str(tmp)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"cc failed ({' '.join(args)}):\n{proc.stderr}")
    os.replace(tmp, target)


def _headers_digest() -> bytes:
    return b"".join(p.name.encode() + p.read_bytes() for p in sorted(INCLUDE_DIR.glob("*.h")))


def _object(source: str, flags: tuple[str, ...], headers: bytes) -> Path:
    path = RUNTIME_DIR / source
    key = _hash(path.read_bytes(), headers, " ".join((CC, *flags)).encode())
    obj = CACHE_DIR / f"{path.stem}-{key}.o"
    if not obj.exists():
        _compile([*flags, f"-I{INCLUDE_DIR}", "-c", str(path)], obj)
    return obj


def build(graph: Graph, dsp: bool = False, inplace_state: bool = False) -> tuple[Path, HarnessSource]:
    """Build (or find in the cache) the shared library of `graph`."""
    src = generate(graph, inplace_state=inplace_state)
    flags = CFLAGS + (("-DTTE_DSP_EMULATE",) if dsp else ())
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    headers = _headers_digest()
    objects = [_object(s, flags, headers) for s in src.sources]
    key = _hash(src.code.encode(), headers, " ".join((CC, *flags)).encode(), *(o.name.encode() for o in objects))
    lib = CACHE_DIR / f"graph-{key}.so"
    if not lib.exists():
        c_file = CACHE_DIR / f"graph-{key}.c"
        c_file.write_text(src.code)
        _compile([*flags, f"-I{INCLUDE_DIR}", "-shared", str(c_file), *map(str, objects)], lib)
    return lib, src


def load_snippet(code: str, cdef: str, dsp: bool = False) -> object:
    """Compile a C snippet (which may include the runtime headers) into a cached library; its functions as
    declared in `cdef`, for C-level unit tests of inline helpers."""
    flags = CFLAGS + (("-DTTE_DSP_EMULATE",) if dsp else ())
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    key = _hash(code.encode(), _headers_digest(), " ".join((CC, *flags)).encode())
    lib = CACHE_DIR / f"snippet-{key}.so"
    if not lib.exists():
        c_file = CACHE_DIR / f"snippet-{key}.c"
        c_file.write_text(code)
        _compile([*flags, f"-I{INCLUDE_DIR}", "-shared", str(c_file)], lib)
    ffi = FFI()
    ffi.cdef(cdef)
    return ffi.dlopen(str(lib))


def run_c(graph: Graph, inputs: Mapping[str, np.ndarray] | np.ndarray, dsp: bool = False) -> dict[str, np.ndarray]:
    """Execute `graph` with the C kernels; inputs and outputs as in `tte.reference.run`."""
    if not isinstance(inputs, Mapping):
        inputs = {graph.inputs[0].tensor: inputs}
    path, src = build(graph, dsp)
    if path not in _LIBS:
        _LIBS[path] = _FFI.dlopen(str(path))
    lib = _LIBS[path]
    for io in graph.inputs:
        t = graph[io.tensor]
        x = np.ascontiguousarray(inputs[io.tensor], dtype=DTYPES[t.dtype])
        if x.shape != t.shape:
            raise ValueError(f"input {io.tensor}: expected shape {t.shape}, got {x.shape}")
        _FFI.memmove(lib.tte_harness_buffer(src.buffers[io.tensor]), x.tobytes(), x.nbytes)
    lib.tte_harness_run()
    outputs = {}
    for io in graph.outputs:
        t = graph[io.tensor]
        raw = _FFI.buffer(lib.tte_harness_buffer(src.buffers[io.tensor]), t.nbytes)
        outputs[io.tensor] = np.frombuffer(bytes(raw), dtype=DTYPES[t.dtype]).reshape(t.shape).copy()
    return outputs


class CProgram:
    """A graph built into a host library whose state persists between runs: a train step with its state tensors
    updated in place (`inplace_state`), as the generated firmware keeps them in SRAM.

    The library is shared by every CProgram of the same graph in the process; the constructor (and `reset`)
    puts the state tensors back to their values in the graph.
    """

    def __init__(self, graph: Graph, inplace_state: bool = True, dsp: bool = False) -> None:
        self.graph = graph
        path, self.source = build(graph, dsp, inplace_state)
        if path not in _LIBS:
            _LIBS[path] = _FFI.dlopen(str(path))
        self._lib = _LIBS[path]
        self.reset()

    def reset(self) -> None:
        for name, t in self.graph.tensors.items():
            if t.is_const and name in self.source.buffers:
                self.write(name, t.data)

    def write(self, tensor: str, value: np.ndarray) -> None:
        t = self.graph[tensor]
        x = np.ascontiguousarray(value, dtype=DTYPES[t.dtype])
        if x.size != t.size:
            raise ValueError(f"{tensor}: expected {t.size} values, got {x.size}")
        _FFI.memmove(self._lib.tte_harness_buffer(self.source.buffers[tensor]), x.tobytes(), x.nbytes)

    def read(self, tensor: str) -> np.ndarray:
        t = self.graph[tensor]
        raw = _FFI.buffer(self._lib.tte_harness_buffer(self.source.buffers[tensor]), t.nbytes)
        return np.frombuffer(bytes(raw), dtype=DTYPES[t.dtype]).reshape(t.shape).copy()

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One run: writes the graph inputs, runs, returns the graph outputs."""
        for io in self.graph.inputs:
            self.write(io.tensor, inputs[io.tensor])
        self._lib.tte_harness_run()
        return {io.tensor: self.read(io.tensor) for io in self.graph.outputs}


def assert_matches_reference(graph: Graph, inputs: list[Mapping[str, np.ndarray]], dsp: bool = False) -> None:
    """The C build of `graph` gives the numpy reference's outputs, every value, for every input set."""
    from tte import reference

    for i, x in enumerate(inputs):
        want = reference.run(graph, x)
        got = run_c(graph, x, dsp=dsp)
        for name, expect in want.items():
            diff = np.count_nonzero(got[name] != expect)
            assert diff == 0, f"{graph.name} input #{i}: {diff} of {expect.size} values differ from the reference"
