"""Run a compiled model on the host: build OUT's C into a shared library and call it through cffi (ABI mode).

The library is cached in OUT/build/ under a name that hashes the sources and flags, so it is rebuilt exactly
when they change (and a process never reuses a stale library: a new build has a new path).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tte.errors import TteError
from tte.quant import dequantize, quantize_float


@dataclass(frozen=True)
class IOInfo:
    """One input or output of the compiled model, as model.json describes it."""

    tensor: str
    shape: tuple[int, ...]  # the C buffer: int8 NHWC
    scale: float
    zero_point: int
    user_shape: tuple[int, ...]
    layout: str

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> IOInfo:
        return cls(d["tensor"], tuple(d["shape"]), float(d["scale"]), int(d["zero_point"]),
                   tuple(d["user_shape"]), d["layout"])

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def to_int8(self, x: Any) -> np.ndarray:
        """An int8 NHWC array as is, or a float array in the user's layout and shape, quantized."""
        x = np.asarray(x)
        if x.dtype == np.int8:
            if x.shape != self.shape:
                raise TteError(f"input '{self.tensor}': int8 data must be NHWC {list(self.shape)}, "
                               f"got {list(x.shape)}", hint="pass int8 NHWC data or float data in the model's layout")
            return np.ascontiguousarray(x)
        if x.dtype.kind not in "fiu":
            raise TteError(f"input '{self.tensor}': data of type {x.dtype} is not numeric")
        if x.shape != self.user_shape:
            raise TteError(f"input '{self.tensor}': float data must have shape {list(self.user_shape)} "
                           f"({self.layout}), got {list(x.shape)}", hint="reshape the data to the model's input")
        q = quantize_float(x.astype(np.float32), self.scale, self.zero_point)
        if self.layout == "NCHW" and q.ndim == 4:
            q = q.transpose(0, 2, 3, 1)
        return np.ascontiguousarray(q.reshape(self.shape))

    def to_user_float(self, q: np.ndarray) -> np.ndarray:
        """Dequantize an int8 NHWC output and give it the user's layout and shape."""
        y = dequantize(q, self.scale, self.zero_point)
        if self.layout == "NCHW" and y.ndim == 4:
            y = y.transpose(0, 3, 1, 2)
        return y.reshape(self.user_shape) if y.size == int(np.prod(self.user_shape)) else y


def _compiler() -> str:
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        raise TteError(f"no C compiler '{cc}' on PATH", hint="install gcc or set CC")
    return cc


def _build_key(out: Path, meta: dict[str, Any], cc: str) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([cc, meta["cflags"], meta["sources"]]).encode())
    files = [*meta["sources"], *sorted(str(p.relative_to(out)) for p in (out / "runtime_c/include").glob("*.h"))]
    for rel in [*files, f"{meta['name']}.h"]:
        h.update(rel.encode())
        h.update((out / rel).read_bytes())
    return h.hexdigest()[:16]


def build_library(out: str | os.PathLike) -> Path:
    """The host shared library of OUT, built with the host cc unless a build of the same sources exists."""
    out = Path(out)
    meta = read_meta(out)
    cc = _compiler()
    lib = out / "build" / f"lib{meta['name']}-{_build_key(out, meta, cc)}.so"
    if lib.exists():
        return lib
    lib.parent.mkdir(exist_ok=True)
    tmp = lib.with_suffix(f".tmp{os.getpid()}")
    cmd = [cc, *meta["cflags"], "-shared", *(f"-I{i}" for i in meta["include"]), "-o", str(tmp.relative_to(out)),
           *meta["sources"]]
    proc = subprocess.run(cmd, cwd=out, capture_output=True, text=True)
    if proc.returncode != 0:
        # Generated code that does not compile is a bug in tte, not a user mistake.
        raise RuntimeError(f"host build of {out} failed:\n{' '.join(cmd)}\n{proc.stderr}")
    os.replace(tmp, lib)
    return lib


def read_meta(out: Path) -> dict[str, Any]:
    path = out / "model.json"
    if not path.is_file():
        raise TteError(f"{out}: no model.json", hint="run `tte compile MODEL -o OUT` first")
    return json.loads(path.read_text())


class HostModel:
    """A compiled model loaded into this process. Not thread safe: the C model has one static arena."""

    def __init__(self, out: Path, meta: dict[str, Any], library: Path) -> None:
        import cffi

        self.out, self.name, self.library = out, meta["name"], library
        self.inputs = tuple(IOInfo.from_json(d) for d in meta["inputs"])
        self.outputs = tuple(IOInfo.from_json(d) for d in meta["outputs"])
        self._ffi = cffi.FFI()
        self._ffi.cdef(meta["signature"] + ";")
        self._lib = self._ffi.dlopen(str(library))
        self._entry = getattr(self._lib, meta["entry"])

    def infer(self, *xs: Any) -> np.ndarray | tuple[np.ndarray, ...]:
        """Run the C model: one array per input (float in the user's layout, or int8 NHWC); int8 NHWC out."""
        if len(xs) != len(self.inputs):
            raise TteError(f"model {self.name} takes {len(self.inputs)} input(s), got {len(xs)}")
        ins = [io.to_int8(x) for io, x in zip(self.inputs, xs, strict=True)]
        outs = [np.zeros(io.shape, np.int8) for io in self.outputs]
        args = [self._ffi.from_buffer("int8_t[]", a) for a in ins]
        args += [self._ffi.from_buffer("int8_t[]", a, require_writable=True) for a in outs]
        status = self._entry(*args)
        if status != 0:
            raise RuntimeError(f"{self.name}_infer returned {status}")
        return outs[0] if len(outs) == 1 else tuple(outs)

    def infer_float(self, *xs: Any) -> np.ndarray | tuple[np.ndarray, ...]:
        """Like `infer`, with the outputs dequantized to float32 in the user's layout and shape."""
        outs = self.infer(*xs)
        outs = outs if isinstance(outs, tuple) else (outs,)
        floats = tuple(io.to_user_float(q) for io, q in zip(self.outputs, outs, strict=True))
        return floats[0] if len(floats) == 1 else floats


def load(out: str | os.PathLike) -> HostModel:
    """Build (or reuse) OUT's host library and load it."""
    out = Path(out).resolve()
    return HostModel(out, read_meta(out), build_library(out))
