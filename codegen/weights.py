"""C text for constant arrays: deterministic, compact, exact (integers as written, floats round-tripping)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

CTYPES = {"int8": "int8_t", "uint8": "uint8_t", "int16": "int16_t", "int32": "int32_t", "float32": "float"}
NUMPY_OF_CTYPE = {"int8_t": np.int8, "uint8_t": np.uint8, "int16_t": np.int16, "int32_t": np.int32,
                  "uint32_t": np.uint32, "int64_t": np.int64, "float": np.float32}
PER_LINE = {1: 24, 2: 16, 4: 12, 8: 8}


@dataclass(frozen=True)
class CArray:
    """A constant array as it will be defined in `<name>_weights.c`."""

    symbol: str
    ctype: str
    values: np.ndarray  # 1-D, already in the C type's numpy dtype
    comment: str = ""

    @property
    def nbytes(self) -> int:
        return int(self.values.nbytes)


def make_array(symbol: str, ctype: str, values: Sequence | np.ndarray, comment: str = "") -> CArray:
    """A `CArray` with values checked to fit `ctype` (a bug in the caller, not a user error, if they do not)."""
    if ctype not in NUMPY_OF_CTYPE:
        raise ValueError(f"{symbol}: unsupported C type {ctype}")
    dtype = np.dtype(NUMPY_OF_CTYPE[ctype])
    raw = np.asarray(values).ravel()
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if raw.size and (raw.min() < info.min or raw.max() > info.max):
            raise ValueError(f"{symbol}: values out of range for {ctype}")
    return CArray(symbol, ctype, raw.astype(dtype), comment)


def _literal_int(v: int, ctype: str) -> str:
    # -2147483648 is not an int literal in C (it is the negation of a long); write it so no compiler warns.
    if ctype == "int32_t" and v == -(2**31):
        return "(-2147483647 - 1)"
    if ctype == "int64_t" and v == -(2**63):
        return "(-9223372036854775807LL - 1)"
    return str(v) + ("u" if ctype == "uint32_t" else "")


def _literal_float(v: float) -> str:
    if not np.isfinite(v):
        raise ValueError(f"non-finite float constant {v}")
    text = f"{v:.9g}"  # 9 significant digits round-trip every float32
    if "e" not in text and "." not in text:
        text += ".0"
    return text + "f"


def literals(arr: CArray) -> list[str]:
    """The array's values as C literals."""
    if arr.ctype == "float":
        return [_literal_float(float(v)) for v in arr.values.tolist()]
    return [_literal_int(int(v), arr.ctype) for v in arr.values.tolist()]


def definition(arr: CArray, const: bool = True) -> str:
    """`const <ctype> <symbol>[N] = { ... };` with a fixed number of values per line (without `const`: a
    mutable array, initialised data in SRAM, for trainable parameters)."""
    per_line = PER_LINE[arr.values.dtype.itemsize]
    items = literals(arr)
    rows = [", ".join(items[i:i + per_line]) for i in range(0, len(items), per_line)]
    body = ",\n    ".join(rows)
    head = f"/* {arr.comment} */\n" if arr.comment else ""
    n = max(len(items), 1)
    if not items:
        body = "0"  # C forbids empty initializers; a zero-length array is never read
    qualifier = "const " if const else ""
    return f"{head}{qualifier}{arr.ctype} {arr.symbol}[{n}] = {{\n    {body}\n}};\n"


def declaration(arr: CArray, const: bool = True) -> str:
    qualifier = "const " if const else ""
    return f"extern {qualifier}{arr.ctype} {arr.symbol}[{max(arr.values.size, 1)}];"
