"""Row-stripe execution of the first layers (MCUNetV2's patch-based inference, in horizontal stripes).

The memory peak of an image model is usually in its first layers: a 64x64x48 expansion alone is 192 KB. A
`stripe_stage` node replaces a chain of frozen convolutions at the start of the graph (stage input -> conv ->
depthwise -> ... -> stage output, each intermediate read only by the next layer) and computes the stage's output
`rows` rows at a time: for each stripe it runs every layer on just the rows the next one needs (overlapping
rows are recomputed), so the intermediates take a stripe's rows, not the whole tensor. The stage input and
output stay whole; the intermediates alternate between two scratch buffers (the node's extra outputs), so the
stage needs input + output + the two largest neighbouring stripes.

The node keeps the replaced layers as a small graph (attribute `stage`) and the stripe height (`rows`); its
numpy reference runs that graph, so the result is bit-exact with the layer-by-layer model by construction, and
the C (codegen/stripes.py) calls the same kernels on sub-tensors. Only the layers the train step does not
differentiate can be striped: their outputs are read by nothing but the next layer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

import numpy as np

from tte import ops
from tte.ir import Graph, IOSpec, Node, Tensor

STAGE_OP = "stripe_stage"
STRIPE_OPS = ("conv2d", "depthwise_conv2d")
ROW_CHOICES = (16, 8, 4, 2, 1)
SLACK = 1.10  # a striped stage may take this much more arena than the smallest one, for fewer MACs
T = TypeVar("T")


@dataclass(frozen=True, eq=False)
class Stage:
    """The layers a `stripe_stage` node runs, as a graph (wrapped: ir.txt prints it as one short item)."""

    graph: Graph

    def __repr__(self) -> str:
        return f"<{len(self.graph.nodes)} layers: {', '.join(n.name for n in self.graph.nodes)}>"


@dataclass(frozen=True)
class StripeCall:
    """One layer of one stripe: output rows [out_rows) from input rows [in_rows) (half-open, whole-tensor rows)."""

    node: Node
    in_rows: tuple[int, int]
    out_rows: tuple[int, int]


def _geometry(node: Node, sub: Graph) -> tuple[int, int, int, int]:
    """(kernel height, stride, top padding, input height) of a conv or depthwise node."""
    kh = sub[node.inputs[1]].shape[1]
    return kh, int(node.attrs["stride"][0]), int(node.attrs["pad"][0]), sub[node.inputs[0]].shape[1]


def input_rows(node: Node, sub: Graph, rows: tuple[int, int]) -> tuple[int, int]:
    """The input rows that output rows [a, b) read (clipped to the image: the rest is padding)."""
    kh, s, pt, h = _geometry(node, sub)
    a, b = rows
    return max(0, a * s - pt), min(h, (b - 1) * s - pt + kh)


def schedule(sub: Graph, rows: int) -> list[list[StripeCall]]:
    """The calls of every stripe, in execution order: stripes top to bottom, layers first to last."""
    out_h = sub[sub.nodes[-1].outputs[0]].shape[1]
    stripes = []
    for o0 in range(0, out_h, rows):
        span, calls = (o0, min(out_h, o0 + rows)), []
        for node in reversed(sub.nodes):
            need = input_rows(node, sub, span)
            calls.append(StripeCall(node, need, span))
            span = need
        stripes.append(calls[::-1])
    return stripes


def _row_bytes(sub: Graph, tensor: str) -> int:
    _, _, w, c = sub[tensor].shape
    return w * c


def scratch_sizes(sub: Graph, rows: int) -> tuple[int, int]:
    """Bytes of the two scratch buffers: intermediates 0, 2, 4, ... use A, 1, 3, ... use B."""
    sizes = [0, 0]
    for stripe in schedule(sub, rows):
        for i, call in enumerate(stripe[:-1]):
            n = (call.out_rows[1] - call.out_rows[0]) * _row_bytes(sub, call.node.outputs[0])
            sizes[i % 2] = max(sizes[i % 2], n)
    return sizes[0], sizes[1]


def call_graph(call: StripeCall, sub: Graph, x: str, y: str) -> tuple[Node, Graph]:
    """The layer of one stripe call as a node of its own over sub-tensors `x` (its input rows) and `y` (its
    output rows): the kernels need no change, only dims and the top/bottom padding that remains."""
    node = call.node
    (c, d), (a, b) = call.in_rows, call.out_rows
    kh, s, pt, _ = _geometry(node, sub)
    xt, yt = sub[node.inputs[0]], sub[node.outputs[0]]
    top = pt - a * s + c
    bottom = max(0, (b - a - 1) * s + kh - top - (d - c))
    pad = (top, node.attrs["pad"][1], bottom, node.attrs["pad"][3])
    tensors = {t: sub[t] for t in node.inputs[1:] if t}
    tensors[x] = Tensor(x, (1, d - c, *xt.shape[2:]), xt.dtype, xt.quant)
    tensors[y] = Tensor(y, (1, b - a, *yt.shape[2:]), yt.dtype, yt.quant)
    one = replace(node, inputs=(x, *node.inputs[1:]), outputs=(y,), attrs={**node.attrs, "pad": pad})
    return one, Graph(sub.name, tensors, (one,), (), ())


def stage_macs(sub: Graph, rows: int) -> int:
    """MACs of the striped stage (the recomputed overlap included)."""
    total = 0
    for stripe in schedule(sub, rows):
        for call in stripe:
            one, g = call_graph(call, sub, "x", "y")
            total += int(ops.get(one.op).macs(one, g))
    return total


def _stage_reference(node: Node, graph: Graph, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    from tte.reference import run

    sub = node.attrs["stage"].graph
    y = run(sub, {sub.inputs[0].tensor: inputs[0]})[sub.outputs[0].tensor]
    return [y, *(np.zeros(graph[t].shape, np.int8) for t in node.outputs[1:])]


ops.register(ops.OpDef(STAGE_OP, _stage_reference,
                       lambda n, g: stage_macs(n.attrs["stage"].graph, int(n.attrs["rows"]))))


# --- finding and replacing a stage ------------------------------------------------------------------------------


def stripe_chain(graph: Graph, trainable: set[str] = frozenset()) -> list[Node]:
    """The longest chain of frozen conv/depthwise layers from the graph input that can be striped."""
    x = graph.inputs[0].tensor if len(graph.inputs) >= 1 else ""
    chain: list[Node] = []
    for node in graph.nodes:
        if node.op not in STRIPE_OPS or node.inputs[0] != x or any(t in trainable for t in node.inputs[1:] if t):
            break
        shapes = [graph[t].shape for t in (node.inputs[0], node.outputs[0])]
        if any(len(s) != 4 or s[0] != 1 for s in shapes) or graph[node.outputs[0]].dtype != "int8":
            break
        chain.append(node)
        x = node.outputs[0]
        if len(graph.consumers(x)) != 1 or x in {io.tensor for io in graph.outputs}:
            break  # the next stage member must be its only reader
    return chain


def stage_node(graph: Graph, chain: Sequence[Node], rows: int) -> tuple[Node, dict[str, Tensor]]:
    """The `stripe_stage` node for the first `len(chain)` layers and its scratch tensors."""
    first, last = chain[0], chain[-1]
    x, y = first.inputs[0], last.outputs[0]
    used = {t for n in chain for t in (*n.inputs, *n.outputs) if t}
    sub = Graph(f"{graph.name}:stage", {t: graph[t] for t in used}, tuple(chain),
                (IOSpec(x, graph[x].shape, "NHWC", False),), (IOSpec(y, graph[y].shape, "NHWC", False),))
    sizes = scratch_sizes(sub, rows)
    scratch = {f"{last.name}:stripe_{k}": Tensor(f"{last.name}:stripe_{k}", (n,), "int8")
               for k, n in zip("ab", sizes, strict=True) if n}
    name = f"stage[{first.name} .. {last.name}]"
    return Node(STAGE_OP, name, (x,), (y, *scratch), {"stage": Stage(sub), "rows": rows}), scratch


def with_stage(graph: Graph, node: Node, scratch: dict[str, Tensor]) -> Graph:
    """`graph` with the stage's layers replaced by the stage node."""
    members = {n.name for n in node.attrs["stage"].graph.nodes}
    nodes, placed = [], False
    for n in graph.nodes:
        if n.name in members:
            if not placed:
                nodes.append(node)
                placed = True
            continue
        nodes.append(n)
    g = graph.with_nodes(nodes, {**graph.tensors, **scratch})
    g.validate()
    return g


# --- choosing a stage ----------------------------------------------------------------------------------------------


def stage_options(graph: Graph, trainable: set[str] = frozenset()) -> Iterator[tuple[Node, dict[str, Tensor], int]]:
    """Every candidate stage: (node, scratch tensors, MACs) for each chain length and stripe height."""
    chain = stripe_chain(graph, trainable)
    for k in range(1, len(chain) + 1):
        out_h = graph[chain[k - 1].outputs[0]].shape[1]
        for rows in (r for r in ROW_CHOICES if r < out_h):
            node, scratch = stage_node(graph, chain[:k], rows)
            yield node, scratch, stage_macs(node.attrs["stage"].graph, rows)


def pick_stage(graph: Graph, trainable: set[str], plan: Callable[[Node, dict[str, Tensor]], tuple[T, int]],
               arena_budget: int) -> tuple[T, int] | None:
    """The best striped stage for an arena budget: `plan(node, scratch)` gives (payload, arena) of one option.

    Of the options within the budget and within SLACK of the smallest arena, the one with the fewest MACs (the
    overlap of stripes is computed twice); if none fits, the smallest arena. None when there is no option.
    """
    options = [(*plan(node, scratch), macs) for node, scratch, macs in stage_options(graph, trainable)]
    if not options:
        return None
    smallest = min(arena for _, arena, _ in options)
    fits = [o for o in options if o[1] <= min(arena_budget, SLACK * smallest)]
    best = min(fits, key=lambda o: (o[2], o[1])) if fits else min(options, key=lambda o: (o[1], o[2]))
    return best[0], best[1]
