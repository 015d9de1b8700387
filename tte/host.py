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
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tte.errors import TteError
from tte.ir import DTYPES
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
    dtype: str = "int8"  # an fp32 classifier head's output is float32

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> IOInfo:
        return cls(d["tensor"], tuple(d["shape"]), float(d["scale"]), int(d["zero_point"]),
                   tuple(d["user_shape"]), d["layout"], d.get("dtype", "int8"))

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
        """Dequantize an int8 NHWC output (a float32 one is real already) and give it the user's layout and shape."""
        y = np.asarray(q, np.float32) if self.dtype == "float32" else dequantize(q, self.scale, self.zero_point)
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
    includes = [f"-I{i}" for i in meta["include"]]
    runtime = [s for s in meta["sources"] if s.startswith("runtime_c/")]
    objects = [str(_runtime_object(out, src, [cc, *meta["cflags"], *includes])) for src in runtime]
    model_sources = [s for s in meta["sources"] if s not in runtime]
    _run([cc, *meta["cflags"], "-shared", *includes, "-o", str(tmp.relative_to(out)), *model_sources, *objects],
         out)
    os.replace(tmp, lib)
    return lib


def _run(cmd: list[str], cwd: Path) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        # Generated code that does not compile is a bug in tte, not a user mistake.
        raise RuntimeError(f"host build in {cwd} failed:\n{' '.join(cmd)}\n{proc.stderr}")


def cache_dir() -> Path:
    """Where compiled runtime objects are shared between builds ($TTE_CACHE_DIR, else a folder in the temp dir)."""
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(os.environ.get("TTE_CACHE_DIR") or Path(tempfile.gettempdir()) / f"tte-host-cache-{uid}")


def _runtime_object(out: Path, src: str, cmd: list[str]) -> Path:
    """The object of one runtime source, compiled once per (compiler, flags, source, headers) and then reused:
    the runtime is the same in every output folder, only the model's own files change."""
    h = hashlib.sha256(json.dumps(cmd).encode())
    h.update((out / src).read_bytes())
    for header in sorted((out / "runtime_c/include").glob("*.h")):
        h.update(header.name.encode() + header.read_bytes())
    obj = cache_dir() / f"{Path(src).stem}-{h.hexdigest()[:20]}.o"
    if not obj.exists():
        obj.parent.mkdir(parents=True, exist_ok=True)
        tmp = obj.with_suffix(f".tmp{os.getpid()}.o")
        _run([*cmd, "-c", src, "-o", str(tmp)], out)
        os.replace(tmp, obj)
    return obj


def read_meta(out: Path) -> dict[str, Any]:
    path = out / "model.json"
    if not path.is_file():
        raise TteError(f"{out}: no model.json", hint="run `tte compile MODEL -o OUT` first")
    return json.loads(path.read_text())


class HostModel:
    """A compiled model loaded into this process. Not thread safe: the C model has one static arena.

    A model compiled with --update also trains: `train_step`, `params_get`/`params_set`/`params_sha256`, `seed`.
    The parameters live in the loaded library: loading the same build again in one process gives the same
    library, with its current parameters.
    """

    def __init__(self, out: Path, meta: dict[str, Any], library: Path) -> None:
        import cffi

        self.out, self.name, self.library = out, meta["name"], library
        self.inputs = tuple(IOInfo.from_json(d) for d in meta["inputs"])
        self.outputs = tuple(IOInfo.from_json(d) for d in meta["outputs"])
        self.train_info: dict[str, Any] | None = meta.get("train")
        self._ffi = cffi.FFI()
        self._ffi.cdef(meta["signature"] + ";")
        if self.train_info is not None:
            self._ffi.cdef("\n".join(f"{c};" for c in self.train_info["cdefs"]))
        self._lib = self._ffi.dlopen(str(library))
        self._entry = getattr(self._lib, meta["entry"])

    def infer(self, *xs: Any) -> np.ndarray | tuple[np.ndarray, ...]:
        """Run the C model: one array per input (float in the user's layout, or int8 NHWC); int8 NHWC out."""
        if len(xs) != len(self.inputs):
            raise TteError(f"model {self.name} takes {len(self.inputs)} input(s), got {len(xs)}")
        ins = [io.to_int8(x) for io, x in zip(self.inputs, xs, strict=True)]
        outs = [np.zeros(io.shape, np.float32 if io.dtype == "float32" else np.int8) for io in self.outputs]
        args = [self._ffi.from_buffer("int8_t[]", a) for a in ins]
        args += [self._ffi.from_buffer("float[]" if a.dtype == np.float32 else "int8_t[]", a, require_writable=True)
                 for a in outs]
        status = self._entry(*args)
        if status != 0:
            raise RuntimeError(f"{self.name}_infer returned {status}")
        return outs[0] if len(outs) == 1 else tuple(outs)

    # --- training (a model compiled with --update) ---------------------------------------------------------

    @property
    def trainable(self) -> bool:
        return self.train_info is not None

    def _train(self) -> dict[str, Any]:
        if self.train_info is None:
            raise TteError(f"model {self.name} was compiled without a train step",
                           hint="compile it with --update (e.g. --update last:1)")
        return self.train_info

    @property
    def classes(self) -> int:
        return int(self._train()["classes"])

    def train_step(self, x: Any, y: int, lr: float) -> float:
        """One SGD step of the C train step on one sample (float in the user's layout, or int8 NHWC) with
        integer label y; returns the loss before the update (float32 value)."""
        info = self._train()
        label = int(y)
        if not 0 <= label < info["classes"]:
            raise TteError(f"label {y} is outside 0..{info['classes'] - 1}",
                           hint="labels index the classifier outputs (see --head new:N)")
        q = self.inputs[0].to_int8(x)
        fn = getattr(self._lib, info["entry"])
        return float(np.float32(fn(self._ffi.from_buffer("int8_t[]", q), label, float(np.float32(lr)))))

    def params_get(self) -> bytes:
        """The trainable parameters and PRNG state as `<name>_params_get` writes them (model.json: layout)."""
        info = self._train()
        buf = self._ffi.new("uint8_t[]", int(info["params_bytes"]))
        getattr(self._lib, f"{self.name}_params_get")(buf)
        return bytes(self._ffi.buffer(buf))

    def params_set(self, blob: bytes) -> None:
        """Restore parameters saved with `params_get` (of a model compiled with the same update)."""
        info = self._train()
        if len(blob) != info["params_bytes"]:
            raise TteError(f"{len(blob)} bytes of parameters, model {self.name} has {info['params_bytes']}",
                           hint="restore parameters saved from the same compiled model")
        getattr(self._lib, f"{self.name}_params_set")(self._ffi.from_buffer("uint8_t[]", bytes(blob)))

    def params_read(self, offset: int, count: int) -> bytes:
        """Bytes [offset, offset + count) of the parameter blob (`<name>_params_read`, clipped at its end)."""
        total = int(self._train()["params_bytes"])
        n = max(0, min(count, total - offset))
        buf = self._ffi.new("uint8_t[]", max(n, 1))
        getattr(self._lib, f"{self.name}_params_read")(offset, buf, n)
        return bytes(self._ffi.buffer(buf, n))

    def params_write(self, offset: int, chunk: bytes) -> None:
        """Overwrite bytes of the parameter blob from `offset` (`<name>_params_write`)."""
        if offset < 0 or offset + len(chunk) > int(self._train()["params_bytes"]):
            raise TteError(f"bytes {offset}..{offset + len(chunk)} are outside the parameters")
        getattr(self._lib, f"{self.name}_params_write")(offset, self._ffi.from_buffer("uint8_t[]", bytes(chunk)),
                                                        len(chunk))

    def params_sha256(self) -> str:
        return hashlib.sha256(self.params_get()).hexdigest()

    def params(self) -> dict[str, np.ndarray]:
        """The parameter blob split into arrays by state tensor name (model.json `train.params`)."""
        blob = self.params_get()
        out = {}
        for p in self._train()["params"]:
            dtype = "<u4" if p["kind"] == "rng" else np.dtype(DTYPES[p["dtype"]]).newbyteorder("=")
            raw = blob[p["offset"]:p["offset"] + p["bytes"]]
            out[p["tensor"]] = np.frombuffer(raw, dtype).reshape(p["shape"]).copy()
        return out

    def seed(self, seed: int) -> None:
        """Set the stochastic rounding's PRNG state (`<name>_seed`)."""
        self._train()
        getattr(self._lib, f"{self.name}_seed")(int(seed) & 0xFFFFFFFF)

    def infer_float(self, *xs: Any) -> np.ndarray | tuple[np.ndarray, ...]:
        """Like `infer`, with the outputs dequantized to float32 in the user's layout and shape."""
        outs = self.infer(*xs)
        outs = outs if isinstance(outs, tuple) else (outs,)
        floats = tuple(io.to_user_float(q) for io, q in zip(self.outputs, outs, strict=True))
        return floats[0] if len(floats) == 1 else floats


def load(out: str | os.PathLike, fresh: bool = False) -> HostModel:
    """Build (or reuse) OUT's host library and load it.

    A process that loads one library twice gets one copy of its static data (the trained parameters, the
    arena). `fresh=True` loads a private copy instead, whose parameters start from the compiled values.
    """
    out = Path(out).resolve()
    library = build_library(out)
    if not fresh:
        return HostModel(out, read_meta(out), library)
    global _fresh_count
    _fresh_count += 1
    private = library.with_name(f".{library.stem}-{os.getpid()}-{_fresh_count}.so")
    shutil.copyfile(library, private)
    try:
        return HostModel(out, read_meta(out), private)
    finally:
        private.unlink()  # the loaded copy stays mapped


_fresh_count = 0
