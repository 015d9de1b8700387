"""Helpers shared by the train step emitters (train_forward.py, train_backward.py, train_update.py).

Partial-channel weights, the emitter side (see train_split.py for the graph side): a node that reads a weight
split into flash + SRAM carries the SRAM tensor as an extra input (index `SRAM_INPUT[op]`) and the attribute
`sram_channels` (the trained input channels, ascending). Its kernel gets a `tte_weight_part` built here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from codegen.ops import ConstArray, ConstName, Ref
from tte.errors import UnsupportedError
from tte.ir import Graph, Node

# Where a node carries the SRAM part of a split weight (absent or '' when the weight is whole).
SRAM_INPUT = {"conv2d_mask": 3, "depthwise_conv2d_mask": 3, "fully_connected_mask": 3,
              "conv2d_input_grad": 2, "depthwise_conv2d_input_grad": 2, "fully_connected_input_grad": 2,
              "block_grad": 12}
SRAM_CHANNELS = "sram_channels"
MAX_CHANNEL = (1 << 15) - 1  # channel indices are int16 in the kernels


def float_literal(v: float) -> str:
    """A C99 hexadecimal float literal of the float32 value of v: exact whatever the compiler's decimal parsing."""
    f = float(np.float32(v))
    if not np.isfinite(f):
        raise ValueError(f"non-finite float constant {v}")
    return f"{f.hex()}f"


def float_array(const_name: ConstName, suffix: str, values: Sequence[float] | np.ndarray) -> ConstArray:
    return ConstArray(const_name(suffix), "float", np.asarray(values, np.float32).reshape(-1))


def channel_array(node: Node, const_name: ConstName, suffix: str, channels: Sequence[int]) -> ConstArray:
    values = np.asarray(channels, np.int64).reshape(-1)
    if values.size and (values.min() < -1 or values.max() > MAX_CHANNEL):
        raise UnsupportedError(f"channel index beyond {MAX_CHANNEL}", node=node.name, op=node.op,
                               hint="layers of up to 32767 channels are supported")
    return ConstArray(const_name(suffix), "int16_t", values.astype(np.int16))


def state_copy(ref: Ref, graph: Graph, src: str, dst: str) -> list[str]:
    """The copy of a state tensor into its new value's buffer, or nothing when they are the same memory (the
    pipeline aliases them, see train_update.inplace_outputs): updates then run in place on `dst`."""
    if ref(src) == ref(dst):
        return []
    return [f"tte_state_copy({graph[src].nbytes}, {ref(src)}, {ref(dst)});"]


def weight_part(node: Node, graph: Graph, ref: Ref, const_name: ConstName) -> tuple[list[str], str, list[ConstArray]]:
    """(declarations, C expression of the `const tte_weight_part *`, constants) of a node's weight: NULL when
    whole, else a part over the node's SRAM input with its `sram_channels`."""
    index = SRAM_INPUT[node.op]
    if len(node.inputs) <= index or not node.inputs[index]:
        return [], "NULL", []
    channels = tuple(int(c) for c in node.attrs[SRAM_CHANNELS])
    full = graph[node.inputs[1]]
    n_in = _weight_in_channels(node, full.shape)
    slot = np.full(n_in, -1, np.int64)
    slot[list(channels)] = np.arange(len(channels))
    consts = [channel_array(node, const_name, "channels", channels), channel_array(node, const_name, "slot", slot)]
    decl = (f"const tte_weight_part part = {{{ref(node.inputs[index])}, {consts[0].name}, {consts[1].name}, "
            f"{len(channels)}}};")
    return [decl], "&part", consts


def _weight_in_channels(node: Node, shape: tuple[int, ...]) -> int:
    if node.op.startswith("depthwise"):
        return shape[3] // int(node.attrs.get("multiplier", 1))
    return shape[-1]


def rng_ref(node: Node, ref: Ref, output: int = 1) -> str:
    """The `uint32_t *` of a node's updated PRNG state, or NULL for rounding to nearest."""
    if node.attrs.get("rounding") != "stochastic":
        return "NULL"
    return f"(uint32_t *)({ref(node.outputs[output])})"
