"""The op catalogue: every IR op is defined once, in its own module, and registered here.

An op module registers an `OpDef` with its numpy reference (bit-exact TFLite Micro integer math), its MAC count
and its test cases. The C kernel binding lives in `codegen/ops/` (op -> C table, one module per op family) and
the kernels in `runtime_c/src/<op>.c`.

IR conventions (all ops): activations int8 NHWC; weights int8 symmetric per output channel; biases int32 with
scale s_in * s_w[c]; every `act` attribute is the integer clamp `(act_min, act_max)` applied to the output.

| op                 | inputs          | attributes                                                       |
|--------------------|-----------------|------------------------------------------------------------------|
| conv2d             | x, w[O,KH,KW,I], b[O] | stride (sh, sw), pad (top, left, bottom, right), act        |
| depthwise_conv2d   | x, w[1,KH,KW,C*M], b[C*M] | stride, pad, multiplier M, act                          |
| fully_connected    | x[1,..], w[O,I], b[O] | act (weights per-tensor or per-channel)                   |
| add                | a, b (same shape) | act                                                              |
| avg_pool2d         | x               | kernel (kh, kw), stride, pad, act (s_in == s_out, zp_in == zp_out) |
| mean               | x               | axes (spatial), keepdims                                         |
| pad                | x               | pads ((before, after) per axis), pads with the zero point        |
| reshape            | x               | (output shape is the output tensor's); a no-op on the bytes      |
| transpose          | x               | perm                                                             |
| lut                | x               | table: 256 int8 values (index x + 128), source_op (optional)     |
| softmax            | x               | beta (float); over the last axis; output q(1/256, -128)          |
| requantize         | x               | (int8 -> int8 with new scale/zero point)                         |
| max_pool2d         | x               | kernel, stride, pad, act (s_in == s_out, zp_in == zp_out)        |
| mul                | a, b (broadcast) | act                                                             |
| sub                | a, b (broadcast) | act                                                             |
| add_broadcast      | a, b (broadcast, shapes differ) | act                                              |
| concat             | x0, x1, ...     | axis (inputs share the output quantization)                      |
| slice              | x               | begin, size, strides (per axis)                                  |
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from tte.ir import Graph, Node

Reference = Callable[[Node, Graph, Sequence[np.ndarray]], list[np.ndarray]]


@dataclass(frozen=True)
class OpDef:
    name: str
    reference: Reference
    macs: Callable[[Node, Graph], int] = lambda node, graph: 0
    # Small IR graphs that exercise the op (used by the oracle and kernel tests).
    cases: Callable[[], list[Graph]] = field(default=lambda: [])
    # True when the output may share the input's bytes (reshape): the planner aliases them.
    inplace_alias: bool = False


OPS: dict[str, OpDef] = {}


def register(op: OpDef) -> OpDef:
    if op.name in OPS:
        raise ValueError(f"op {op.name} registered twice")
    OPS[op.name] = op
    return op


def get(name: str) -> OpDef:
    return OPS[name]


def _load_all() -> None:
    # Import for the side effect of registration; the list is the catalogue.
    from tte.ops import (  # noqa: F401
        add,
        binary,
        concat_slice,
        conv2d,
        fully_connected,
        lut,
        max_pool,
        pool,
        requantize,
        shape_ops,
        softmax,
    )


_load_all()
