"""Row-stripe execution of the first layers (MCUNetV2's patch-based inference, in horizontal stripes).

The memory peak of an image model is usually in its first layers: a 64x64x48 expansion alone is 192 KB. A
`stripe_stage` node replaces the first frozen layers of the graph (convolutions, depthwise convolutions and the
same-shape adds of residual blocks, from the stage input to one stage output) and computes the stage's output
`rows` rows at a time: for each stripe it runs every layer on just the rows its readers need (overlapping rows
are recomputed), so the intermediates take a stripe's rows, not the whole tensor. The stage input and output
stay whole; the intermediates live in a few scratch slots (the node's extra outputs; a chain alternates between
two, a residual block keeps its input's rows in a third until the add), so the stage needs input + output + the
slots; less when the output can be written over the input rows already consumed (`output_offset`: the planner
then nests the output in the input's bytes). The geometry is in tte/passes/stripe_schedule.py.

The node keeps the replaced layers as a small graph (attribute `stage`) and the stripe height (`rows`); its
numpy reference runs that graph, so the result is bit-exact with the layer-by-layer model by construction, and
the C (codegen/stripes.py) calls the same kernels on sub-tensors. Only the layers the train step does not
differentiate can be striped: their outputs are read by nothing outside the stage.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from tte import ops
from tte.ir import Graph, IOSpec, Node, Tensor
from tte.passes.stripe_schedule import CONV_OPS, SLOT_NAMES, call_graph, data_inputs, schedule, scratch_slots
from tte.passes.stripe_schedule import input_rows as input_rows  # re-exported: the tests read the geometry here
from tte.passes.stripe_schedule import output_offset as _offset

STAGE_OP = "stripe_stage"
STRIPE_OPS = (*CONV_OPS, "add")
ROW_CHOICES = (16, 8, 4, 2, 1)
MIN_ROWS = 4  # the stripes end before the first layer whose output has fewer rows
SLACK = 1.10  # a striped stage may take this much more arena than the smallest one, for fewer MACs
T = TypeVar("T")


@dataclass(frozen=True, eq=False)
class Stage:
    """The layers a `stripe_stage` node runs, as a graph (wrapped: ir.txt prints it as one short item)."""

    graph: Graph

    def __repr__(self) -> str:
        return f"<{len(self.graph.nodes)} layers: {', '.join(n.name for n in self.graph.nodes)}>"


def output_offset(node: Node, alignment: int = 16) -> int | None:
    """Where the output of a `stripe_stage` node may start relative to its input's first byte, or None
    (stripe_schedule.output_offset). The stage input dies at the stage, so its consumed rows are free memory.
    Memoized per stage: every plan of a scheme search asks again."""
    stage, rows = node.attrs["stage"], int(node.attrs["rows"])
    key = (id(stage), rows, alignment)
    hit = _OFFSETS.get(key)
    if hit is None or hit[0] is not stage:
        if len(_OFFSETS) >= 1024:
            _OFFSETS.pop(next(iter(_OFFSETS)))
        hit = _OFFSETS[key] = (stage, _offset(stage.graph, rows, alignment))  # keeps `stage` (and its id) alive
    return hit[1]


_OFFSETS: dict[tuple[int, int, int], tuple[Stage, int | None]] = {}


def stage_nests(graph: Graph, spans: Mapping[str, tuple[int, int]], roots: Mapping[str, str],
                alignment: int = 16) -> list[tuple[str, str, int]]:
    """For the memory planner: (input, output, offset) of each stage whose output may be written over its input
    (`output_offset`): both are arena buffers (`spans`: buffer -> (first, last) step), the input dies at the
    stage and the output is made there."""
    nests = []
    for step, node in enumerate(graph.nodes):
        if node.op != STAGE_OP:
            continue
        x, y = roots.get(node.inputs[0], node.inputs[0]), roots.get(node.outputs[0], node.outputs[0])
        if x in spans and y in spans and spans[x][1] == step and spans[y][0] == step:
            offset = output_offset(node, alignment)
            if offset is not None:
                nests.append((x, y, offset))
    return nests


def stage_macs(sub: Graph, rows: int) -> int:
    """MACs of the striped stage (the recomputed overlap included)."""
    total = 0
    for stripe in schedule(sub, rows):
        for call in stripe:
            one, g = call_graph(call, sub)
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
    """The longest run of frozen layers from the graph input that can be striped (conv, depthwise, same-shape add:
    the first nodes of the graph, each reading only the input and earlier members) and that ends at a cut."""
    x = graph.inputs[0].tensor if len(graph.inputs) >= 1 else ""
    have, region = {x}, []
    for node in graph.nodes:
        if not _stripeable(node, graph, trainable) or not set(data_inputs(node)) <= have:
            break
        if graph[node.outputs[0]].shape[1] < MIN_ROWS:
            break  # a stripe of so small a tensor would recompute most of the stage for each row
        region.append(node)
        have.add(node.outputs[0])
    return region[:max(stage_cuts(graph, region), default=0)]


def _stripeable(node: Node, graph: Graph, trainable: set[str]) -> bool:
    if node.op not in STRIPE_OPS or len(node.outputs) != 1 or any(t in trainable for t in node.inputs if t):
        return False
    shapes = [graph[t].shape for t in (*data_inputs(node), node.outputs[0])]
    if any(len(s) != 4 or s[0] != 1 for s in shapes) or graph[node.outputs[0]].dtype != "int8":
        return False
    return node.op in CONV_OPS or (len(node.inputs) == 2 and len(set(shapes)) == 1)  # add: no broadcasting


def stage_cuts(graph: Graph, region: Sequence[Node]) -> list[int]:
    """The lengths k such that `region[:k]` can be one stage: every tensor it makes but the last is read only by
    its own members (so the stripes may keep just a few rows of it) and is no graph output."""
    readers: dict[str, set[str]] = {}
    for node in graph.nodes:
        for t in node.inputs:
            readers.setdefault(t, set()).add(node.name)
    outputs = {io.tensor for io in graph.outputs}
    cuts, members, open_ = [], set(), set()  # open_: tensors made so far with a reader outside the members
    for k, node in enumerate(region, 1):
        members.add(node.name)
        open_ = {t for t in open_ if not readers.get(t, set()) <= members}
        if node.outputs[0] in outputs or not readers.get(node.outputs[0], set()) <= members:
            open_.add(node.outputs[0])
        if open_ <= {node.outputs[0]}:
            cuts.append(k)
    return cuts


def stage_node(graph: Graph, chain: Sequence[Node], rows: int) -> tuple[Node, dict[str, Tensor]]:
    """The `stripe_stage` node for the layers `chain` (a cut of `stripe_chain`) and its scratch tensors."""
    first, last = chain[0], chain[-1]
    x, y = first.inputs[0], last.outputs[0]
    used = {t for n in chain for t in (*n.inputs, *n.outputs) if t}
    sub = Graph(f"{graph.name}:stage", {t: graph[t] for t in used}, tuple(chain),
                (IOSpec(x, graph[x].shape, "NHWC", False),), (IOSpec(y, graph[y].shape, "NHWC", False),))
    _, sizes = scratch_slots(sub, rows)
    names = [f"{last.name}:stripe_{SLOT_NAMES[k]}" for k in range(len(sizes))]
    scratch = {n: Tensor(n, (size,), "int8") for n, size in zip(names, sizes, strict=True)}
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


@dataclass(frozen=True)
class StageOption:
    """One candidate stage: its node and scratch tensors, MACs, and `floor`: the bytes live at the stage's step
    (input, output and scratch; the output nested in the input where `output_offset` allows), a lower bound of
    any arena that holds the stage input."""

    node: Node
    scratch: dict[str, Tensor]
    macs: int
    floor: int


def stage_options(graph: Graph, trainable: set[str] = frozenset()) -> list[StageOption]:
    """Every candidate stage, for each cut of the chain and stripe height (cached per cut: a scheme search asks
    for the same layers again and again)."""
    chain = stripe_chain(graph, trainable)
    options, key = [], (graph.name,)
    cuts = set(stage_cuts(graph, chain))
    for k, node in enumerate(chain, 1):
        # the layers' structure and their tensors' identities (an entry keeps its tensors alive: no id is reused)
        key = (*key, node.op, node.name, node.inputs, node.outputs, repr(dict(node.attrs)),
               *(id(graph[t]) for t in (*node.inputs, *node.outputs) if t))
        if k in cuts:
            hit = _OPTIONS.get(key)
            if hit is None:
                if len(_OPTIONS) >= 256:
                    _OPTIONS.pop(next(iter(_OPTIONS)))
                tensors = [graph[t] for n in chain[:k] for t in (*n.inputs, *n.outputs) if t]
                hit = _OPTIONS[key] = (_options(graph, chain[:k]), tensors)
            options += hit[0]
    return options


_OPTIONS: dict[tuple, tuple[list[StageOption], list[Tensor]]] = {}


def _options(graph: Graph, chain: list[Node]) -> list[StageOption]:
    """The options of the stage `chain`, one per stripe height."""
    options = []
    out_h = graph[chain[-1].outputs[0]].shape[1]
    for rows in (r for r in ROW_CHOICES if r < out_h):
        node, scratch = stage_node(graph, chain, rows)
        if len(scratch) > len(SLOT_NAMES):
            continue
        sub = node.attrs["stage"].graph
        x, y = sub[node.inputs[0]].nbytes, sub[node.outputs[0]].nbytes
        offset = output_offset(node)
        shared = 0 if offset is None else max(0, min(x, offset + y) - max(offset, 0))
        floor = x + y - shared + sum(t.nbytes for t in scratch.values())
        options.append(StageOption(node, scratch, stage_macs(sub, rows), floor))
    return options


def pick_stage(graph: Graph, trainable: set[str], plan: Callable[[Node, dict[str, Tensor]], tuple[T, int]],
               arena_budget: int, floor: Callable[[Node, dict[str, Tensor]], int] | None = None
               ) -> tuple[T, int] | None:
    """The best striped stage for an arena budget: `plan(node, scratch)` gives (payload, arena) of one option.

    Of the options within the budget and within SLACK of the smallest arena, the one with the fewest MACs (the
    overlap of stripes is computed twice); if none fits, the smallest arena. None when there is no option.

    `floor(node, scratch)`: a lower bound of an option's arena (cheaper than `plan`; the stage input must live in
    the arena, as `StageOption.floor` is used too). With it, the same choice is made from a few plans: options
    by ascending floor until the smallest arena is certain, then by ascending MACs until one is within the limit.
    """
    cands = stage_options(graph, trainable)
    if not cands:
        return None
    if floor is None:
        return _choose(cands, {i: plan(c.node, c.scratch) for i, c in enumerate(cands)}, arena_budget)
    lows = [max(c.floor, floor(c.node, c.scratch)) for c in cands]
    done: dict[int, tuple[T, int]] = {}

    def arena(i: int) -> int:
        if i not in done:
            done[i] = plan(cands[i].node, cands[i].scratch)
        return done[i][1]

    for i in sorted(range(len(cands)), key=lambda i: (lows[i], i)):
        if done and min(a for _, a in done.values()) <= lows[i]:
            break  # no option left can have a smaller arena
        arena(i)
    smallest = min(a for _, a in done.values())
    limit = min(arena_budget, SLACK * smallest)
    for i in sorted((i for i in range(len(cands)) if lows[i] <= limit), key=lambda i: (cands[i].macs, i)):
        if arena(i) <= limit:  # the fewest MACs within the limit: settle equal MACs by arena
            for j in range(len(cands)):
                if cands[j].macs == cands[i].macs and lows[j] <= limit:
                    arena(j)
            break
    else:  # none within the limit: the smallest arena wins, every option that may reach it is needed
        for i in range(len(cands)):
            if lows[i] <= smallest:
                arena(i)
    return _choose(cands, done, arena_budget)


def _choose(cands: list[StageOption], planned: Mapping[int, tuple[T, int]], arena_budget: int) -> tuple[T, int]:
    """The choice among planned options (pick_stage's rule), ties to the earlier option."""
    options = [(*planned[i], cands[i].macs) for i in sorted(planned)]
    smallest = min(arena for _, arena, _ in options)
    fits = [o for o in options if o[1] <= min(arena_budget, SLACK * smallest)]
    best = min(fits, key=lambda o: (o[2], o[1])) if fits else min(options, key=lambda o: (o[1], o[2]))
    return best[0], best[1]
