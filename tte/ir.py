"""The tte intermediate representation: a small, typed, immutable int8 graph in NHWC layout.

A `Graph` is a topologically ordered tuple of `Node`s over named `Tensor`s. Constant tensors (weights, biases)
carry their data; activations carry only shape, dtype and quantization. Every node keeps the name it had in the
source model: it travels into error messages and the comments of the generated C.

The op catalogue (attributes each op carries) is documented in `tte/ops/__init__.py`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

import numpy as np

DTYPES = {"int8": np.int8, "int32": np.int32, "float32": np.float32, "uint8": np.uint8, "int16": np.int16}
ITEMSIZE = {name: np.dtype(t).itemsize for name, t in DTYPES.items()}


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.array(a, copy=True)
    a.flags.writeable = False
    return a


@dataclass(frozen=True, eq=False)
class QParams:
    """Affine quantization real = scale * (q - zero_point), per tensor (axis None) or per channel along `axis`."""

    scale: np.ndarray  # float32, shape (1,) or (C,)
    zero_point: np.ndarray  # int64, same shape as scale
    axis: int | None = None

    def __post_init__(self) -> None:
        s = np.atleast_1d(np.asarray(self.scale, dtype=np.float32))
        z = np.atleast_1d(np.asarray(self.zero_point, dtype=np.int64))
        if z.size == 1 and s.size > 1:
            z = np.full(s.shape, int(z[0]), dtype=np.int64)
        object.__setattr__(self, "scale", _frozen(s))
        object.__setattr__(self, "zero_point", _frozen(z))
        if s.size == 1:
            object.__setattr__(self, "axis", None)

    @property
    def per_channel(self) -> bool:
        return self.axis is not None

    @property
    def s(self) -> float:
        """The per-tensor scale (only for per-tensor quantization)."""
        assert not self.per_channel, "per-channel QParams has no single scale"
        return float(self.scale[0])

    @property
    def zp(self) -> int:
        """The per-tensor zero point (per-channel weights are symmetric: the first one stands for all)."""
        return int(self.zero_point[0])

    def __repr__(self) -> str:
        if self.per_channel:
            return f"q(axis={self.axis}, scale[{self.scale.size}] {self.scale.min():.3g}..{self.scale.max():.3g})"
        return f"q({self.s:.6g}, {self.zp})"


@dataclass(frozen=True, eq=False)
class Tensor:
    """A named tensor. `data` is set for constants (weights, biases, tables) and None for activations."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    quant: QParams | None = None
    data: np.ndarray | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        if self.dtype not in DTYPES:
            raise ValueError(f"tensor {self.name}: unknown dtype {self.dtype}")
        if self.data is not None:
            d = np.asarray(self.data, dtype=DTYPES[self.dtype])
            if d.shape != self.shape:
                raise ValueError(f"tensor {self.name}: data shape {d.shape} != {self.shape}")
            object.__setattr__(self, "data", _frozen(d))

    @property
    def is_const(self) -> bool:
        return self.data is not None

    @property
    def size(self) -> int:
        return math.prod(self.shape)  # Python ints: no numpy call (planners ask thousands of times per plan)

    @property
    def nbytes(self) -> int:
        return self.size * ITEMSIZE[self.dtype]


@dataclass(frozen=True, eq=False)
class Node:
    """One operation. `name` is the source model's node name; `attrs` are op specific (see tte/ops)."""

    op: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        object.__setattr__(self, "attrs", MappingProxyType(dict(self.attrs)))

    def with_attrs(self, **changes: Any) -> Node:
        return replace(self, attrs={**self.attrs, **changes})


@dataclass(frozen=True, eq=False)
class IOSpec:
    """How a graph input or output looks from outside: float quantization and the source layout.

    The graph itself is int8 NHWC; `layout` says how the user's float arrays are laid out ("NCHW" for ONNX
    image models, "NHWC" for TFLite) and `shape` is the user-facing shape.
    """

    tensor: str
    shape: tuple[int, ...]
    layout: str = "NHWC"
    is_float: bool = True


@dataclass(frozen=True, eq=False)
class Graph:
    name: str
    tensors: Mapping[str, Tensor]
    nodes: tuple[Node, ...]
    inputs: tuple[IOSpec, ...]
    outputs: tuple[IOSpec, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "tensors", MappingProxyType(dict(self.tensors)))
        object.__setattr__(self, "nodes", tuple(self.nodes))
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))

    def __getitem__(self, name: str) -> Tensor:
        return self.tensors[name]

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def producer(self, tensor: str) -> Node | None:
        for n in self.nodes:
            if tensor in n.outputs:
                return n
        return None

    def consumers(self, tensor: str) -> list[Node]:
        return [n for n in self.nodes if tensor in n.inputs]

    def with_nodes(self, nodes: Iterable[Node], tensors: Mapping[str, Tensor] | None = None) -> Graph:
        """A copy with new nodes (and tensors); tensors no node or IO uses any more are dropped."""
        nodes = tuple(nodes)
        all_tensors = dict(self.tensors if tensors is None else tensors)
        used = {t for n in nodes for t in (*n.inputs, *n.outputs) if t}
        used |= {io.tensor for io in (*self.inputs, *self.outputs)}
        return replace(self, nodes=nodes, tensors={k: v for k, v in all_tensors.items() if k in used})

    def validate(self) -> None:
        """Check that tensors exist and nodes are in topological order (a bug, not a user error, if not)."""
        known = {io.tensor for io in self.inputs}
        tensors = self.tensors
        for n in self.nodes:
            for t in n.inputs:
                if t and t not in known and (t not in tensors or not tensors[t].is_const):  # constants: known
                    raise ValueError(f"node {n.name} ({n.op}): input {t} is not computed before it")
            known.update(n.outputs)
        for io in self.outputs:
            if io.tensor not in known:
                raise ValueError(f"graph output {io.tensor} is never computed")

    def dump(self) -> str:
        """The graph as text (`ir.txt`): one line per node with shapes and quantization."""
        lines = [f"graph {self.name}"]
        for io in self.inputs:
            t = self[io.tensor]
            lines.append(f"  input  {t.name} {t.dtype}{list(t.shape)} {t.quant} (user {io.layout} {list(io.shape)})")
        for n in self.nodes:
            ins = ", ".join(_describe(self, t) for t in n.inputs if t)
            outs = ", ".join(_describe(self, t) for t in n.outputs)
            attrs = " ".join(f"{k}={_short(v)}" for k, v in sorted(n.attrs.items()))
            lines.append(f"  {n.op:<18} {n.name!r}: {ins} -> {outs} {attrs}".rstrip())
        for io in self.outputs:
            t = self[io.tensor]
            lines.append(f"  output {t.name} {t.dtype}{list(t.shape)} {t.quant}")
        return "\n".join(lines) + "\n"


def _describe(g: Graph, name: str) -> str:
    t = g[name]
    kind = "const " if t.is_const else ""
    return f"{kind}{name}:{t.dtype}{list(t.shape)}"


def _short(v: Any) -> str:
    if isinstance(v, np.ndarray) or (isinstance(v, (tuple, list)) and len(v) > 8):
        return f"<{len(v)} values>"
    return str(v)
