"""Row-stripe execution of the first layers (MCUNetV2's patch-based inference, in horizontal stripes).

The memory peak of an image model is usually in its first layers: a 64x64x48 expansion alone is 192 KB. A
`stripe_stage` node replaces the first frozen layers of the graph (convolutions, depthwise convolutions and the
same-shape adds of residual blocks, from the stage input to one stage output) and computes the stage's output
`rows` rows at a time: for each stripe it runs every layer on just the rows its readers need (overlapping rows
are recomputed), so the intermediates take a stripe's rows, not the whole tensor. The stage input and output
stay whole; the intermediates live in a few scratch slots (the node's extra outputs; a chain alternates between
two, a residual block keeps its input's rows in a third until the add), so the stage needs input + output + the
slots; less when the output can be written over the input rows already consumed (`output_offset`: the planner
then nests the output in the input's bytes). A rolling stage (attribute `rolling`) computes no row twice: each
stripe makes only the rows past the previous stripe's and keeps in the slots the rows later stripes still read
(line buffers), for a slot of its own per such tensor. The geometry is in tte/passes/stripe_schedule.py.

The node keeps the replaced layers as a small graph (attribute `stage`) and the stripe height (`rows`); its
numpy reference runs that graph, so the result is bit-exact with the layer-by-layer model by construction, and
the C (codegen/stripes.py) calls the same kernels on sub-tensors. Only the layers the train step does not
differentiate can be striped: their outputs are read by nothing outside the stage.

When one stage cannot bring the arena under the budget, up to MAX_STAGES stages run in a row (`pick_stage`):
each ends on a narrow tensor (a block's projection) kept whole, which the next one reads (its output nested in
those rows in turn), so the wide maps of later blocks are striped too without one stage's recomputed overlap.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from tte import ops
from tte.ir import Graph, IOSpec, Node, Tensor
from tte.passes.stripe_schedule import CONV_OPS, SLOT_NAMES, data_inputs, schedule, scratch_slots
from tte.passes.stripe_schedule import input_rows as input_rows  # re-exported: the tests read the geometry here
from tte.passes.stripe_schedule import output_offset as _offset

STAGE_OP = "stripe_stage"
STRIPE_OPS = (*CONV_OPS, "add")
ROW_CHOICES = (16, 8, 4, 2, 1)  # stripe heights of recomputing stages
ROLLING_ROWS = (1, 2)  # ... of rolling ones (no recomputed rows: a taller stripe only saves calls)
MIN_ROWS = 4  # the stripes end before the first layer whose output has fewer rows
MAX_STAGES = 3  # stripe stages in a row (a third only where two do not fit: proxyless 98kb 150.6 -> 139.2 KB)
LATER_ENDS = 2  # a later stage ends on one of the next this many narrow tensors
LATER_DOWNSCALE = 4  # ... and starts where the maps have at least 1/this of the input rows
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
    stage, rows, rolling = node.attrs["stage"], *stripe_mode(node)
    key = (id(stage), rows, rolling, alignment)
    hit = _OFFSETS.get(key)
    if hit is None or hit[0] is not stage:
        if len(_OFFSETS) >= 1024:
            _OFFSETS.pop(next(iter(_OFFSETS)))
        hit = _OFFSETS[key] = (stage, _offset(stage.graph, rows, alignment, rolling))  # keeps `stage` alive
    return hit[1]


_OFFSETS: dict[tuple[int, int, bool, int], tuple[Stage, int | None]] = {}


def stripe_mode(node: Node) -> tuple[int, bool]:
    """(stripe height, rolling) of a `stripe_stage` node."""
    return int(node.attrs["rows"]), bool(node.attrs.get("rolling", False))


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


def stage_macs(sub: Graph, rows: int, rolling: bool = False) -> int:
    """MACs of the striped stage (the recomputed overlap included; rolling stripes recompute nothing). A layer's
    MACs are proportional to its output rows (conv, depthwise and add count per output element)."""
    per_row = {n.name: int(ops.get(n.op).macs(n, sub)) // sub[n.outputs[0]].shape[1] for n in sub.nodes}
    return sum(per_row[c.node.name] * (c.out_rows[1] - c.out_rows[0]) for stripe in schedule(sub, rows, rolling)
               for c in stripe)


def _stage_reference(node: Node, graph: Graph, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    from tte.reference import run

    sub = node.attrs["stage"].graph
    y = run(sub, {sub.inputs[0].tensor: inputs[0]})[sub.outputs[0].tensor]
    return [y, *(np.zeros(graph[t].shape, np.int8) for t in node.outputs[1:])]


ops.register(ops.OpDef(STAGE_OP, _stage_reference,
                       lambda n, g: stage_macs(n.attrs["stage"].graph, *stripe_mode(n))))


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


def stage_node(graph: Graph, chain: Sequence[Node], rows: int, rolling: bool = False
               ) -> tuple[Node, dict[str, Tensor]]:
    """The `stripe_stage` node for the layers `chain` (a cut of `stripe_chain`) and its scratch tensors;
    `rolling`: stripes that keep the rows later stripes read instead of computing them again (line buffers)."""
    first, last = chain[0], chain[-1]
    x, y = first.inputs[0], last.outputs[0]
    used = {t for n in chain for t in (*n.inputs, *n.outputs) if t}
    sub = Graph(f"{graph.name}:stage", {t: graph[t] for t in used}, tuple(chain),
                (IOSpec(x, graph[x].shape, "NHWC", False),), (IOSpec(y, graph[y].shape, "NHWC", False),))
    _, sizes = scratch_slots(sub, rows, rolling)
    names = [f"{last.name}:stripe_{SLOT_NAMES[k] if k < len(SLOT_NAMES) else k}" for k in range(len(sizes))]
    scratch = {n: Tensor(n, (size,), "int8") for n, size in zip(names, sizes, strict=True)}
    name = f"stage[{first.name} .. {last.name}]"
    attrs = {"stage": Stage(sub), "rows": rows, **({"rolling": True} if rolling else {})}
    return Node(STAGE_OP, name, (x,), (y, *scratch), attrs), scratch


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


def stage_choices(graph: Graph, trainable: set[str] = frozenset(), max_stages: int = 1
                  ) -> list[tuple[StageOption, ...]]:
    """Every candidate sequence of up to `max_stages` consecutive stages along the chain, one-stage candidates
    first. A stage ends at a cut; a further stage starts only where the stage before ends on a narrow tensor (no
    larger than its neighbours: a block's projection), which it keeps whole, and ends on one of the next
    LATER_ENDS narrow tensors. Later stages start only in the first layers (at least 1/LATER_DOWNSCALE of the
    input rows left), where the maps are large: the candidates stay few for the scheme search."""
    chain = stripe_chain(graph, trainable)
    cuts = stage_cuts(graph, chain)
    singles = [(o,) for k in cuts for o in _cut_options(graph, chain, 0, k)]
    if max_stages < 2 or not chain:
        return singles
    rows = graph[chain[0].inputs[0]].shape[1]
    narrow = [k for k in _narrow_cuts(graph, chain) if graph[chain[k - 1].outputs[0]].shape[1] * LATER_DOWNSCALE
              >= rows]
    return singles + [(o, *rest) for k in cuts if k in narrow for o in _cut_options(graph, chain, 0, k)
                      for rest in _later_stages(graph, chain, k, narrow, max_stages - 1)]


def _later_stages(graph: Graph, chain: list[Node], start: int, narrow: list[int], depth: int
                  ) -> list[tuple[StageOption, ...]]:
    """The sequences of 1..depth stages over `chain[start:]`, each ending on one of the next narrow cuts."""
    cuts = {start + k for k in stage_cuts(graph, chain[start:])} & set(stage_cuts(graph, chain))  # block ends
    ends = [k for k in _narrow_cuts(graph, chain) if k > start and k in cuts][:LATER_ENDS]
    out: list[tuple[StageOption, ...]] = []
    for k in ends:
        for o in _cut_options(graph, chain, start, k):
            out.append((o,))
            if depth > 1 and k in narrow:
                out += [(o, *rest) for rest in _later_stages(graph, chain, k, narrow, depth - 1)]
    return out


def _narrow_cuts(graph: Graph, chain: list[Node]) -> list[int]:
    """The chain lengths k whose last output is no larger than the outputs next to it (where stages may meet),
    ascending."""
    size = [graph[n.outputs[0]].nbytes for n in chain]
    return [k for k in range(1, len(chain) + 1) if size[k - 1] <= min(size[max(0, k - 2):k + 1])]


def _cut_options(graph: Graph, chain: list[Node], start: int, k: int) -> list[StageOption]:
    """The options of the stage `chain[start:k]` (cached by the layers' structure and their tensors' identities:
    an entry keeps its tensors alive, so no id is reused)."""
    key: tuple = (graph.name,)
    for node in chain[start:k]:
        key = (*key, node.op, node.name, node.inputs, node.outputs, repr(dict(node.attrs)),
               *(id(graph[t]) for t in (*node.inputs, *node.outputs) if t))
    hit = _OPTIONS.get(key)
    if hit is None:
        if len(_OPTIONS) >= 1024:
            _OPTIONS.pop(next(iter(_OPTIONS)))
        tensors = [graph[t] for n in chain[start:k] for t in (*n.inputs, *n.outputs) if t]
        hit = _OPTIONS[key] = (_options(graph, chain[start:k]), tensors)
    return hit[0]


_OPTIONS: dict[tuple, tuple[list[StageOption], list[Tensor]]] = {}


def _options(graph: Graph, chain: list[Node]) -> list[StageOption]:
    """The options of the stage `chain`, one per stripe height."""
    options = []
    out_h = graph[chain[-1].outputs[0]].shape[1]
    modes = [(r, False) for r in ROW_CHOICES if r < out_h] + [(r, True) for r in ROLLING_ROWS if r < out_h]
    for rows, rolling in modes:
        node, scratch = stage_node(graph, chain, rows, rolling)
        if len(scratch) > len(SLOT_NAMES):
            continue
        sub = node.attrs["stage"].graph
        x, y = sub[node.inputs[0]].nbytes, sub[node.outputs[0]].nbytes
        offset = output_offset(node)
        shared = 0 if offset is None else max(0, min(x, offset + y) - max(offset, 0))
        floor = x + y - shared + sum(t.nbytes for t in scratch.values())
        options.append(StageOption(node, scratch, stage_macs(sub, rows, rolling), floor))
    return _undominated(options)


def _undominated(options: list[StageOption]) -> list[StageOption]:
    """The options no other beats on both MACs and floor (one with fewer MACs and no more bytes at the stage, or
    as many MACs and fewer bytes): a rolling stripe usually leaves few recomputing ones. Fewer candidates for
    `pick_stage` to plan, in every plan of a scheme search."""
    def beaten(o: StageOption) -> bool:
        return any((p.macs < o.macs and p.floor <= o.floor) or (p.macs == o.macs and p.floor < o.floor)
                   for p in options)

    return [o for o in options if not beaten(o)]


def pick_stage(graph: Graph, trainable: set[str], plan: Callable[..., tuple[T, int]], arena_budget: int,
               floor: Callable[..., int] | None = None, max_stages: int | None = None) -> tuple[T, int] | None:
    """The best striped stage (or sequence of up to `max_stages` stages, MAX_STAGES when None) for an arena
    budget: `plan(node, scratch, *later)` gives (payload, arena) of one candidate, `later` being the (node,
    scratch) of its further stages.

    Of the candidates within the budget and within SLACK of the smallest arena, the one with the fewest MACs (the
    overlap of stripes is computed twice); if none fits, the smallest arena. None when there is no candidate.
    More stages are tried only when fewer do not fit the budget (each level adds many candidates to plan).

    `floor(node, scratch, *later)`: a lower bound of a candidate's arena (cheaper than `plan`; each stage input
    must live in the arena, as `StageOption.floor` is used too). With it, the same choice is made from a few
    plans: candidates by ascending bound until the smallest arena is certain, then by ascending MACs until one
    is within the limit. `floor` itself is asked lazily: only of candidates whose option floors leave them in.
    """
    best = None
    for stages in range(1, (MAX_STAGES if max_stages is None else max_stages) + 1):
        cands = stage_choices(graph, trainable, stages)
        if not cands:
            return None
        best = _pick(cands, plan, arena_budget, floor)
        if best[1] <= arena_budget:
            break
    return best


def _pick(cands: list[tuple[StageOption, ...]], plan: Callable[..., tuple[T, int]], arena_budget: int,
          floor: Callable[..., int] | None) -> tuple[T, int]:
    """pick_stage's choice among `cands`."""
    args = [(c[0].node, c[0].scratch, *((o.node, o.scratch) for o in c[1:])) for c in cands]
    macs = [sum(o.macs for o in c) for c in cands]
    if floor is None:
        return _choose(macs, {i: plan(*args[i]) for i in range(len(cands))}, arena_budget)
    lows = [max(o.floor for o in c) for c in cands]
    exact: set[int] = set()
    done: dict[int, tuple[T, int]] = {}

    def low(i: int) -> int:
        if i not in exact:
            lows[i] = max(lows[i], floor(*args[i]))
            exact.add(i)
        return lows[i]

    def arena(i: int) -> int:
        if i not in done:
            done[i] = plan(*args[i])
        return done[i][1]

    def below(i: int, limit: float) -> bool:  # the cheap bound first
        return lows[i] <= limit and low(i) <= limit

    heap = [(lows[i], i) for i in range(len(cands))]
    heapq.heapify(heap)
    while heap:
        bound, i = heapq.heappop(heap)
        if done and min(a for _, a in done.values()) <= bound:
            break  # no candidate left can have a smaller arena
        if i not in exact:
            heapq.heappush(heap, (low(i), i))
            continue
        arena(i)
    smallest = min(a for _, a in done.values())
    limit = min(arena_budget, SLACK * smallest)
    for i in sorted(range(len(cands)), key=lambda i: (macs[i], i)):
        if below(i, limit) and arena(i) <= limit:  # the fewest MACs within the limit: settle equal MACs by arena
            best = arena(i)  # only a candidate whose bound is no more can have a smaller (or tying) arena
            for j in sorted((j for j in range(len(cands)) if macs[j] == macs[i] and j != i and below(j, limit)),
                            key=lambda j: (low(j), j)):
                if low(j) > best:
                    break
                best = min(best, arena(j))
            break
    else:  # none within the limit: the smallest arena wins, with the fewest MACs: the first to reach it in that order
        for i in sorted(range(len(cands)), key=lambda i: (macs[i], i)):
            if below(i, smallest) and arena(i) == smallest:
                break
    return _choose(macs, done, arena_budget)


def _choose(macs: Sequence[int], planned: Mapping[int, tuple[T, int]], arena_budget: int) -> tuple[T, int]:
    """The choice among planned candidates (pick_stage's rule), ties to the earlier candidate."""
    options = [(*planned[i], macs[i]) for i in sorted(planned)]
    smallest = min(arena for _, arena, _ in options)
    fits = [o for o in options if o[1] <= min(arena_budget, SLACK * smallest)]
    best = min(fits, key=lambda o: (o[2], o[1])) if fits else min(options, key=lambda o: (o[1], o[2]))
    return best[0], best[1]
