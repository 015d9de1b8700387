"""Partial-channel weights in flash + SRAM: the train step graph rewrite that the C kernels expect.

The numpy reference keeps a weight trained on some input channels as one state tensor `w` (the update writes
only `TrainingGraph.written_slices()[w]`). The paper's memory saving needs only those channels in SRAM.
`split_trained_weights(tg)` rewrites the train step for the C code:
- `w` stays a constant (the whole weight as compiled, for flash); a new state tensor `w:sram` holds the
  trained input channels, ascending, as its last axis (conv [O, KH, KW, T], fully connected [O, T], depthwise
  [1, KH, KW, T * multiplier]), initialised from `w`, with `w`'s quantization (depthwise: the columns' scales);
- the forward mask node and the input-gradient node of the layer get `w:sram` as an extra input
  (train_common.SRAM_INPUT: index 3 of `<op>_mask` (x, w, b or '', w:sram), index 2 of `<op>_input_grad`
  (dacc, w, w:sram)) and the attribute `sram_channels` (the trained input channels);
- the weight update reads and writes `w:sram` instead of `w` (its output `w:sram:new`), and the state pair
  (w, w:new) becomes (w:sram, w:sram:new).
The rewritten graph is for the C emitters only (the numpy references do not know the extra inputs): the values
of `w:sram` equal the reference's `w[..., channels]` after every step, and the rest of `w` never changes.
Whole weights (every channel trained) and the fp32 head are left as they are.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from codegen.ops.train_common import SRAM_CHANNELS, SRAM_INPUT
from tte.ir import Graph, IOSpec, Node, QParams, Tensor
from tte.train import TrainingGraph
from tte.train.block_grad import BLOCK_GRAD
from tte.train.update_ops import WEIGHT_UPDATE_OPS, written_channels

SRAM_SUFFIX = ":sram"


def split_trained_weights(tg: TrainingGraph) -> TrainingGraph:
    """The train step with every partially trained int8 weight split into flash (whole) + SRAM (trained part)."""
    g = tg.graph
    tensors = dict(g.tensors)
    renames: dict[str, str] = {}  # old update output -> new one
    state = dict(tg.state)
    nodes = list(g.nodes)
    for k, node in enumerate(g.nodes):
        if not _updates_weight(node):
            continue
        w = g[node.inputs[2]]
        cols = written_channels(node)
        if len(cols) == w.shape[-1]:
            continue
        sram = _sram_tensor(w, cols)
        new = Tensor(f"{sram.name}:new", sram.shape, sram.dtype, sram.quant)
        tensors[sram.name], tensors[new.name] = sram, new
        renames[node.outputs[0]] = new.name
        del state[w.name]
        state[sram.name] = new.name
        nodes[k] = replace(node, inputs=(*node.inputs[:2], sram.name, *node.inputs[3:]),
                           outputs=(new.name, *node.outputs[1:]))
        channels = tuple(int(c) for c in node.attrs["channels"])
        for j, other in enumerate(nodes):
            if other.op in SRAM_INPUT and w.name in other.inputs[1:2]:
                nodes[j] = _with_sram(other, sram.name, channels)
    outputs = tuple(IOSpec(renames[io.tensor], tensors[renames[io.tensor]].shape, io.layout, io.is_float)
                    if io.tensor in renames else io for io in g.outputs)
    graph = replace(g.with_nodes(nodes, tensors), outputs=outputs)
    graph.validate()
    return replace(tg, graph=graph, state=tuple(state.items()))


def _updates_weight(node: Node) -> bool:
    """A weight update, or a fused block backward whose pw1 weight trains (its input 2, as for the updates)."""
    return node.op in WEIGHT_UPDATE_OPS or (node.op == BLOCK_GRAD and bool(node.inputs[2]))


def _sram_tensor(w: Tensor, cols: np.ndarray) -> Tensor:
    data = np.ascontiguousarray(w.data[..., cols])
    q = w.quant
    if q is not None and q.per_channel and q.axis == len(w.shape) - 1:  # depthwise: scales per column
        q = QParams(q.scale[cols], q.zero_point[cols], q.axis)
    return Tensor(f"{w.name}{SRAM_SUFFIX}", data.shape, w.dtype, q, data)


def _with_sram(node: Node, sram: str, channels: tuple[int, ...]) -> Node:
    index = SRAM_INPUT[node.op]
    inputs = list(node.inputs) + [""] * max(0, index + 1 - len(node.inputs))
    inputs[index] = sram
    return replace(node, inputs=tuple(inputs), attrs={**node.attrs, SRAM_CHANNELS: channels})


def sram_view(graph: Graph, tensor: str) -> tuple[str, np.ndarray] | None:
    """For a split weight's SRAM tensor: (the whole weight's name, the last-axis columns it holds)."""
    if not tensor.endswith(SRAM_SUFFIX):
        return None
    whole = tensor[: -len(SRAM_SUFFIX)]
    for node in graph.nodes:
        if _updates_weight(node) and node.inputs[2] == tensor:
            return whole, written_channels(node)
    return None
