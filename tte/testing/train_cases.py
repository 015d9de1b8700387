"""Graphs for the C kernel tests of the train step: single training ops built from the forward kernel cases,
merged into one graph per test so that one C build covers many cases.

Each builder turns a single-node forward graph (tte.ops cases, tte.testing.kernel_cases.random_case) into the
same node's training op and returns `(c_graph, ref_graph)`: the graph the C kernels run and the graph the numpy
reference runs. They differ only for split weights (codegen/ops/train_split.py), where the C graph reads a
const flash weight plus an SRAM part and the reference the equivalent whole weight.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from codegen.ops.train_common import SRAM_CHANNELS
from tte.ir import Graph, IOSpec, Node, QParams, Tensor
from tte.train.autodiff import LR, RNG
from tte.train.forward_ops import mask_bytes, mask_op
from tte.train.fp32 import seed_state
from tte.train.update_ops import update_factors

Case = tuple[Graph, Graph]
WEIGHT_OPS = ("conv2d", "depthwise_conv2d", "fully_connected")


def merge(name: str, graphs: Sequence[Graph]) -> Graph:
    """One graph running every given graph's nodes (tensor names must be unique across them, but the shared
    train step inputs tte:lr may appear in several)."""
    tensors: dict[str, Tensor] = {}
    nodes: list[Node] = []
    inputs: dict[str, IOSpec] = {}
    outputs: dict[str, IOSpec] = {}
    for g in graphs:
        tensors.update(g.tensors)
        nodes += g.nodes
        inputs.update({io.tensor: io for io in g.inputs})
        outputs.update({io.tensor: io for io in g.outputs})
    merged = Graph(name, tensors, tuple(nodes), tuple(inputs.values()), tuple(outputs.values()))
    merged.validate()
    return merged


def renamed(graph: Graph, suffix: str) -> Graph:
    """The graph with `suffix` appended to every tensor and node name (to merge several cases of one graph)."""
    def name(t: str) -> str:
        return f"{t}{suffix}" if t else t

    tensors = {name(k): replace(t, name=name(k)) for k, t in graph.tensors.items()}
    nodes = tuple(replace(n, name=name(n.name), inputs=tuple(map(name, n.inputs)), outputs=tuple(map(name, n.outputs)))
                  for n in graph.nodes)
    return replace(graph, tensors=tensors, nodes=nodes,
                   inputs=tuple(replace(io, tensor=name(io.tensor)) for io in graph.inputs),
                   outputs=tuple(replace(io, tensor=name(io.tensor)) for io in graph.outputs))


def all_outputs(graph: Graph) -> Graph:
    """The graph with every node output as a graph output (to compare every intermediate tensor)."""
    outs = [t for n in graph.nodes for t in n.outputs]
    return replace(graph, outputs=tuple(IOSpec(t, graph[t].shape, "NHWC", False) for t in outs))


def random_feeds(graph: Graph, seed: int, label: int = 0, lr: float = 0.05) -> dict[str, np.ndarray]:
    """int8 uniform, float32 normal (gradients of ~1e-2), the label and the learning rate."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for io in graph.inputs:
        t = graph[io.tensor]
        if io.tensor == LR:
            feeds[io.tensor] = np.array([lr], np.float32)
        elif t.dtype == "int32":
            feeds[io.tensor] = np.array([label], np.int32)
        elif t.dtype == "float32":
            feeds[io.tensor] = (rng.normal(0, 0.01, t.shape) * rng.choice([0, 1, 3], t.shape)).astype(np.float32)
        else:
            feeds[io.tensor] = rng.integers(-128, 128, t.shape).astype(np.int8)
    return feeds


def _split(node: Node, graph: Graph, fraction: float, seed: int) -> tuple[Tensor, Tensor, tuple[int, ...]]:
    """(the whole weight with new values in the trained channels, their SRAM tensor, the trained channels)."""
    w = graph[node.inputs[1]]
    mult = int(node.attrs.get("multiplier", 1))
    n_in = w.shape[-1] // mult
    rng = np.random.default_rng(seed)
    count = max(1, int(round(fraction * n_in)))
    channels = tuple(sorted(int(c) for c in rng.choice(n_in, count, replace=False)))
    cols = (np.asarray(channels)[:, None] * mult + np.arange(mult)).reshape(-1)
    data = w.data.copy()
    lo = -128 if np.any(w.quant.zero_point) else -127
    data[..., cols] = rng.integers(lo, 128, data[..., cols].shape)
    q = w.quant
    if q.per_channel and q.axis == len(w.shape) - 1:
        q = QParams(q.scale[cols], q.zero_point[cols], q.axis)
    sram = Tensor(f"{w.name}:sram", data[..., cols].shape, "int8", q, data[..., cols])
    return Tensor(w.name, w.shape, "int8", w.quant, data), sram, channels


def _case(graph: Graph, node: Node, c_node: Node, ref_node: Node, extra: Sequence[Tensor],
          ref_w: Tensor | None = None) -> Case:
    tensors = {**graph.tensors, **{t.name: t for t in extra}}
    ins = tuple(IOSpec(t, tensors[t].shape, "NHWC", False) for t in c_node.inputs if t and not tensors[t].is_const)
    outs = tuple(IOSpec(t, tensors[t].shape, "NHWC", False) for t in c_node.outputs)
    c_graph = Graph(graph.name, tensors, (c_node,), ins, outs)
    ref_tensors = {**tensors, **({ref_w.name: ref_w} if ref_w is not None else {})}
    ref_graph = Graph(graph.name, ref_tensors, (ref_node,), ins, outs)
    return c_graph.with_nodes(c_graph.nodes), ref_graph.with_nodes(ref_graph.nodes)


def mask_case(graph: Graph, split: float = 0.0, seed: int = 0) -> Case:
    """The node as its mask-emitting variant; with split > 0 (weight layers only) a fraction of the weight's
    input channels comes from an SRAM part holding new values."""
    node = graph.nodes[0]
    y = graph[node.outputs[0]]
    mask = Tensor(f"{node.name}:mask", (mask_bytes(y.shape),), "uint8")
    outputs = (node.outputs[0], mask.name)
    ref_node = Node(mask_op(node.op), node.name, node.inputs, outputs, node.attrs)
    if not split:
        return _case(graph, node, ref_node, ref_node, [mask])
    whole, sram, channels = _split(node, graph, split, seed)
    inputs = (*node.inputs, "")[:3] + (sram.name,)
    c_node = Node(ref_node.op, node.name, inputs, outputs, {**node.attrs, SRAM_CHANNELS: channels})
    return _case(graph, node, c_node, ref_node, [mask, sram], whole)


def input_grad_case(graph: Graph, split: float = 0.0, seed: int = 0) -> Case:
    """The weight layer's input gradient: (dacc float32 of the output's shape, w) -> dx."""
    node = graph.nodes[0]
    x, y = graph[node.inputs[0]], graph[node.outputs[0]]
    dacc = Tensor(f"{node.name}:dacc", y.shape, "float32")
    dx = Tensor(f"{node.name}:dx", x.shape, "float32")
    attrs = {k: node.attrs[k] for k in ("stride", "pad", "multiplier") if k in node.attrs}
    ref_node = Node(f"{node.op}_input_grad", f"{node.name}/input_grad", (dacc.name, node.inputs[1]), (dx.name,),
                    attrs)
    if not split:
        return _case(graph, node, ref_node, ref_node, [dacc, dx])
    whole, sram, channels = _split(node, graph, split, seed)
    c_node = Node(ref_node.op, ref_node.name, (*ref_node.inputs, sram.name), ref_node.outputs,
                  {**attrs, SRAM_CHANNELS: channels})
    return _case(graph, node, c_node, ref_node, [dacc, dx, sram], whole)


def weight_update_case(graph: Graph, fraction: float, rounding: str, seed: int = 0, qas: bool = True) -> Case:
    """The fused weight update of a fraction of the input channels: (saved int8, dacc, w, lr, [rng]) ->
    (w_new, [rng_new]) on the whole weight (both graphs are the reference's)."""
    node = graph.nodes[0]
    x, y, w = graph[node.inputs[0]], graph[node.outputs[0]], graph[node.inputs[1]]
    mult = int(node.attrs.get("multiplier", 1))
    n_in = w.shape[-1] // mult
    rng = np.random.default_rng(seed)
    channels = tuple(sorted(int(c) for c in rng.choice(n_in, max(1, int(round(fraction * n_in))), replace=False)))
    lead = x.shape[:-1] if node.op != "fully_connected" else (1,)
    saved = Tensor(f"{node.name}:saved", (*lead, len(channels)), "int8", x.quant)
    dacc = Tensor(f"{node.name}:dacc", y.shape, "float32")
    o = w.shape[-1] if node.op == "depthwise_conv2d" else w.shape[0]
    s_w = np.broadcast_to(np.asarray(w.quant.scale, np.float32), (o,))
    attrs = {k: node.attrs[k] for k in ("stride", "pad", "multiplier") if k in node.attrs}
    attrs.update(channels=channels, factor=update_factors(x.quant.s, s_w, "weight", qas), rounding=rounding)
    new = Tensor(f"{w.name}:new", w.shape, "int8", w.quant)
    extra = [saved, dacc, new, Tensor(LR, (1,), "float32")]
    ins, outs = [saved.name, dacc.name, w.name, LR], [new.name]
    if rounding == "stochastic":
        state = np.array([seed_state(seed + 1)], np.uint32).view(np.int32)
        extra += [Tensor(f"{RNG}:{node.name}", (1,), "int32", None, state),
                  Tensor(f"{RNG}:{node.name}:new", (1,), "int32")]
        ins.append(extra[-2].name)
        outs.append(extra[-1].name)
    update = Node(f"{node.op}_weight_update", f"{node.name}/weight_update", tuple(ins), tuple(outs), attrs)
    return _case(graph, node, update, update, extra)
