"""The op -> C table: for each IR op, the C call(s) of its runtime kernel.

Each op family has a module here (conv.py, fc.py, ...) whose functions register themselves with
`@emitter("<op>")`; every module of this package is imported on first use, so adding an op means adding a
module, never editing a switch. An emitter returns a `CCall`: C statements (one call per node, in a block with
the call's static const parameter structs), the per-node constant arrays it needs (multipliers, shifts,
tables: emitted by the caller as `static const`), and the runtime sources (paths relative to `runtime_c/`) that
define the kernel.

Emitters receive `ref(tensor) -> C expression` of a tensor's data pointer (arena slot, weight array or NULL for
an absent optional input) and `const_name(suffix) -> C symbol` unique to the node; the caller owns both.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tte.errors import UnsupportedError
from tte.ir import Graph, Node

RUNTIME_DIR = Path(__file__).resolve().parents[2] / "runtime_c"
INCLUDE_DIR = RUNTIME_DIR / "include"


@dataclass(frozen=True)
class ConstArray:
    """A per-node constant emitted as `static const <ctype> <name>[] = {values};`."""

    name: str
    ctype: str
    values: np.ndarray


@dataclass(frozen=True)
class CCall:
    """The C for one node: statements, the constants they reference and the runtime sources they need."""

    lines: list[str]
    consts: list[ConstArray] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)


Ref = Callable[[str], str]
ConstName = Callable[[str], str]
Emitter = Callable[[Node, Graph, Ref, ConstName], CCall]

EMITTERS: dict[str, Emitter] = {}


def emitter(op: str) -> Callable[[Emitter], Emitter]:
    """Register the decorated function as the C emitter of IR op `op`."""

    def register(fn: Emitter) -> Emitter:
        if op in EMITTERS:
            raise ValueError(f"C emitter for op {op} registered twice")
        EMITTERS[op] = fn
        return fn

    return register


_loaded = False


def load_all() -> dict[str, Emitter]:
    """Import every module of this package (each registers its emitters) and return the table."""
    global _loaded
    if not _loaded:
        _loaded = True
        for info in pkgutil.iter_modules(__path__):
            importlib.import_module(f"{__name__}.{info.name}")
    return EMITTERS


def emit(node: Node, graph: Graph, ref: Ref, const_name: ConstName) -> CCall:
    """The C call of `node`; raises UnsupportedError for an op without a C kernel."""
    table = load_all()
    fn = table.get(node.op)
    if fn is None:
        raise UnsupportedError(
            "no C kernel for this op", node=node.name, op=node.op, hint=f"supported: {', '.join(sorted(table))}"
        )
    return fn(node, graph, ref, const_name)
