"""The memory planner: place buffers with lifetimes in one arena.

The planner sees only intervals: a buffer has a name, a size in bytes and the first and last step (inclusive)
at which it is live. Two buffers whose lifetimes overlap must not share bytes; buffers that are never live at
the same time may. Placement is greedy in a few orders (tte/passes/placement.py; the first is TFLite Micro's
GreedyMemoryPlanner: largest first, lowest offset), the smallest arena wins; plans are memoized by their inputs.

`graph_buffers` turns an inference graph into such intervals (steps = node indices). Graph inputs and outputs
live in the caller's buffers, not in the arena; outputs of `inplace_alias` ops (reshape) share their input's
bytes. A depthwise convolution whose input dies there may write its output over it (tte/passes/inplace.py):
input and output are then `tied` to one offset, and the in-place kernel's scratch plane is one more buffer,
live at that node. A striped stage's output may be `nested` in its input's bytes at a fixed distance
(tte/passes/stripes.py: no stripe overwrites input rows still read). Training adds saved activations, masks and
gradients as more intervals with the same `plan` function.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tte import ops
from tte.ir import Graph
from tte.passes.inplace import DEPTHWISE_OPS, InPlace, fewest_ties, inplace_roots, tensor_bytes, tie_spans
from tte.passes.placement import live_profile, place
from tte.passes.stripes import STAGE_OP, stage_nests, stripe_mode


@dataclass(frozen=True)
class Buffer:
    """A block of `size` bytes that is live from step `first` to step `last`, both included."""

    name: str
    size: int
    first: int
    last: int

    def __post_init__(self) -> None:
        if self.size < 0 or self.first > self.last:
            raise ValueError(f"buffer {self.name}: bad size {self.size} or lifetime [{self.first}, {self.last}]")

    def overlaps(self, other: Buffer) -> bool:
        """True when the two lifetimes share a step."""
        return self.first <= other.last and other.first <= self.last


@dataclass(frozen=True)
class MemoryPlan:
    """Where each buffer lives in the arena.

    `offsets` maps buffer names to byte offsets; `aliases` maps tensors that share another tensor's bytes (and
    have no buffer of their own) to that buffer's name. `step_names` label the steps in texts and errors.
    """

    buffers: tuple[Buffer, ...]
    offsets: dict[str, int]
    arena_bytes: int
    alignment: int
    aliases: dict[str, str] = field(default_factory=dict)
    step_names: tuple[str, ...] = ()
    kinds: dict[str, str] = field(default_factory=dict)  # buffer -> what it holds (train steps: mask, ...)
    tied: tuple[tuple[str, str], ...] = ()  # buffer pairs at one offset: an in-place kernel's input and output
    nested: tuple[tuple[str, str, int], ...] = ()  # (a, b, delta): b at a + delta, over bytes of a no longer read
    order: str = ""  # the placement order that gave this plan (tte/passes/placement.py)

    def offset(self, name: str) -> int:
        """The arena offset of a buffer or of a tensor aliased to one."""
        return self.offsets[self.aliases.get(name, name)]

    def live_at(self, step: int) -> list[Buffer]:
        """The buffers live at `step`, largest first."""
        live = [b for b in self.buffers if b.first <= step <= b.last]
        return sorted(live, key=lambda b: (-b.size, b.name))

    def live_bytes(self) -> list[int]:
        """Bytes live at each step (unaligned sizes; a nested buffer's bytes inside its host count once): a lower
        bound for any arena."""
        return live_profile(self.buffers, self.nested, self.num_steps)

    @property
    def num_steps(self) -> int:
        return max(len(self.step_names), max((b.last + 1 for b in self.buffers), default=0))

    @property
    def peak_step(self) -> int:
        live = self.live_bytes()
        return live.index(max(live)) if live else 0

    @property
    def peak_live_bytes(self) -> int:
        return max(self.live_bytes(), default=0)

    def step_label(self, step: int) -> str:
        return self.step_names[step] if step < len(self.step_names) else f"step {step}"

    def to_text(self, width: int = 64) -> str:
        """The plan as text (`plan.txt`): a table of buffers, then an ASCII timeline."""
        return _plan_text(self, width)


def plan(buffers: Iterable[Buffer], alignment: int = 16, step_names: Sequence[str] = (),
         aliases: dict[str, str] | None = None, fixed: Mapping[str, int] | None = None,
         kinds: Mapping[str, str] | None = None, tied: Iterable[tuple[str, str]] = (),
         nested: Iterable[tuple[str, str, int]] = ()) -> MemoryPlan:
    """Place the buffers in one arena: the smallest of several greedy placements (tte/passes/placement.py), the
    first of which is TFLite Micro's GreedyMemoryPlanner (largest first, lowest offset).

    The same intervals always give the same plan. Buffers named in `fixed` are placed first, at the given
    (aligned) offsets: a graph input that two entry points share. Each pair in `tied` gets one offset (an
    in-place kernel's input and output, disjoint in time). Each (a, b, delta) in `nested` puts b at offset(a) +
    delta (aligned, maybe negative) although both are live at one step: the caller proved that b never
    overwrites bytes of a that are still read (a stripe stage's output over its consumed input rows).
    """
    if alignment <= 0 or alignment & (alignment - 1):
        raise ValueError(f"alignment {alignment} is not a power of two")
    buffers = tuple(buffers)
    fixed = dict(fixed or {})
    tied, nested = tuple(tied), _within_arena(tuple(nested), fixed)
    key = (buffers, alignment, tuple(sorted(fixed.items())), tied, nested)
    hit = _MEMO.get(key)
    if hit is None:
        hit = _place(buffers, alignment, fixed, tied, nested)
        if len(_MEMO) >= MEMO_SIZE:
            _MEMO.pop(next(iter(_MEMO)))  # the oldest entry
        _MEMO[key] = hit
    offsets, arena, order = hit
    return MemoryPlan(buffers, dict(offsets), arena, alignment, dict(aliases or {}), tuple(step_names),
                      dict(kinds or {}), tied, nested, order)


# plans by their inputs: the scheme search plans the same inference graph and stripe options again and again
MEMO_SIZE = 256
_MEMO: dict[tuple, tuple[dict[str, int], int, str]] = {}


def _within_arena(nested: tuple[tuple[str, str, int], ...], fixed: Mapping[str, int]
                  ) -> tuple[tuple[str, str, int], ...]:
    """The nests that keep every output at or above the arena's start under the fixed offsets; one that would not
    is dropped (it shares no byte). Stages in a row nest in turn (x -> y1 -> y2, in graph order): the offsets
    follow the chain from a fixed input."""
    at, kept = dict(fixed), []
    for a, b, d in nested:
        if a in at and at[a] + d < 0:
            continue
        if a in at:
            at[b] = at[a] + d
        kept.append((a, b, d))
    return tuple(kept)


def _place(buffers: tuple[Buffer, ...], alignment: int, fixed: dict[str, int], tied: tuple[tuple[str, str], ...],
           nested: tuple[tuple[str, str, int], ...]) -> tuple[dict[str, int], int, str]:
    index = {b.name: i for i, b in enumerate(buffers)}
    if len(index) != len(buffers):
        raise ValueError("buffer names must be unique")
    if any(o % alignment for o in fixed.values()) or not set(fixed) <= set(index):
        raise ValueError(f"fixed offsets {fixed} must be aligned and name planned buffers")
    links = [(a, b, 0) for a, b in tied] + list(nested)
    for a, b, delta in links:
        if a not in index or b not in index or delta % alignment:
            raise ValueError(f"linked buffers {a}, {b} must be planned, at an aligned distance ({delta})")
    offsets, arena, order = place(buffers, alignment, {index[n]: o for n, o in fixed.items()},
                                  [(index[a], index[b], d) for a, b, d in links])
    return {b.name: o for b, o in zip(buffers, offsets, strict=True)}, arena, order


# --- inference graphs -----------------------------------------------------------------------------------------


def alias_roots(graph: Graph, copies: Iterable[str] = ()) -> dict[str, str]:
    """For each output of an `inplace_alias` op (reshape), the tensor whose bytes it shares (the chain's root).

    Nodes named in `copies`, and reshapes of constants, do not alias: their output gets bytes of its own.
    """
    copies = set(copies)
    roots: dict[str, str] = {}
    for node in graph.nodes:
        if ops.get(node.op).inplace_alias and node.name not in copies and node.inputs and node.outputs:
            src = node.inputs[0]
            if graph[src].is_const:
                continue  # a reshaped constant is copied into an activation buffer
            roots[node.outputs[0]] = roots.get(src, src)
    return roots


def graph_buffers(graph: Graph, external: Iterable[str] = (), copies: Iterable[str] = (), inplace: bool = True
                  ) -> tuple[list[Buffer], dict[str, str], list[tuple[str, str]]]:
    """The arena buffers of an inference graph, the aliases (tensor -> buffer) among them and the tied pairs.

    A tensor is live from the node that makes it to the last node that reads it (a graph output: to the end).
    Constants and the `external` tensors (living in the caller's memory, with every tensor aliased to them)
    get no buffer. An aliased tensor extends the lifetime of its root's buffer. With `inplace`, every depthwise
    convolution whose input dies there writes over it: input and output are tied to one offset and the
    kernel's scratch plane is a buffer too (tte/passes/inplace.py).
    """
    found = inplace_roots(graph, alias_roots(graph, copies), set(external), inplace)
    return _graph_buffers(graph, set(external), found)[:3]


def _graph_buffers(graph: Graph, external: set[str], found: InPlace, alignment: int = 16
                   ) -> tuple[list[Buffer], dict[str, str], list[tuple[str, str]]]:
    roots = found.roots
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    end = max(len(graph.nodes) - 1, 0)
    for io in graph.inputs:
        first[io.tensor] = last[io.tensor] = 0
    for step, node in enumerate(graph.nodes):
        for t in node.outputs:
            root = roots.get(t, t)
            first.setdefault(root, step)
            last[root] = max(last.get(root, step), step)
        for t in node.inputs:
            if t:
                root = roots.get(t, t)
                last[root] = max(last.get(root, step), step)
    for io in graph.outputs:
        last[roots.get(io.tensor, io.tensor)] = end
    spans = {r: (first[r], last[r]) for r in first if r not in external and not graph[r].is_const}
    sizes = {r: tensor_bytes(graph, r) for r in spans}
    tie_spans(spans, sizes, found.ties)
    buffers = [Buffer(r, sizes[r], a, b) for r, (a, b) in spans.items()]
    buffers += [Buffer(s.name, s.size, s.step, s.step) for s in found.scratch]
    aliases = {t: r for t, r in roots.items() if r not in external}
    return buffers, aliases, [(x, y) for x, y, _ in found.ties], stage_nests(graph, spans, roots, alignment)


def plan_graph(graph: Graph, alignment: int = 16, external: Iterable[str] = (),
               copies: Iterable[str] = (), fixed: Mapping[str, int] | None = None,
               inplace: bool = True, target: int = 0) -> MemoryPlan:
    """Plan the arena of an inference graph (see `graph_buffers`); `fixed` pins buffers to offsets. Depthwise
    nodes run in place only where that keeps the arena (or `target`, an arena paid anyway) down."""
    shape = prepared(graph, ("structure",), lambda: structure(graph))  # once per graph: it is planned twice
    key = ("inference", alignment, frozenset(external), frozenset(copies), inplace, shape)
    variants = prepared(graph, key, lambda: _inference_variants(graph, alignment, set(key[2]), key[3], inplace),
                        by_id=False)
    return fewest_ties(variants.found, lambda variant: variants.plan(variant, fixed), target)


def _inference_variants(graph: Graph, alignment: int, external: set[str], copies: Iterable[str],
                        inplace: bool) -> Variants:
    names = tuple(f"{n.name} ({n.op})" for n in graph.nodes)

    def make(found: InPlace) -> Placing:
        buffers, aliases, tied, nested = _graph_buffers(graph, external, found, alignment)
        return Placing(tuple(buffers), alignment, names, aliases, {}, tuple(tied), tuple(nested))

    return Variants(inplace_roots(graph, alias_roots(graph, copies), external, inplace), make)


@dataclass(frozen=True)
class Placing:
    """Everything `plan` needs but the pinned offsets."""

    buffers: tuple[Buffer, ...]
    alignment: int
    step_names: tuple[str, ...]
    aliases: dict[str, str]
    kinds: dict[str, str]
    tied: tuple[tuple[str, str], ...]
    nested: tuple[tuple[str, str, int], ...]

    def plan(self, fixed: Mapping[str, int] | None) -> MemoryPlan:
        return plan(self.buffers, self.alignment, self.step_names, self.aliases, fixed, self.kinds, self.tied,
                    self.nested)


class Variants:
    """The in-place variants of one graph's plan (`fewest_ties` picks one), each built once: a train step and its
    inference graph are planned twice, with the input pinned and without (codegen/train_layout.py)."""

    def __init__(self, found: InPlace, make: Callable[[InPlace], Placing]) -> None:
        self.found, self._make = found, make
        self._built: dict[tuple, Placing] = {}

    def plan(self, variant: InPlace, fixed: Mapping[str, int] | None) -> MemoryPlan:
        key = tuple(variant.ties)
        if key not in self._built:
            self._built[key] = self._make(variant)
        return self._built[key].plan(fixed)


def prepared(graph: Graph, key: tuple, build: Callable[[], Any], by_id: bool = True) -> Any:
    """`build()` once per graph object and key (graphs are immutable; the entry keeps its graph alive, so the id
    is not reused while it is cached), or with `by_id=False` once per key (which then says all that matters)."""
    k = (id(graph) if by_id else None, *key)
    hit = _PREPARED.get(k)
    if hit is None:
        if len(_PREPARED) >= PREPARED_SIZE:
            _PREPARED.pop(next(iter(_PREPARED)))
        hit = _PREPARED[k] = (graph, build())
    return hit[1]


def structure(graph: Graph) -> tuple:
    """All that an inference graph's plan depends on: per node its op, name, tensors, the attributes of an
    in-place depthwise candidate and a stripe stage's identity and mode; the shape and type of every tensor. The
    inference graphs of one model's train steps are mostly equal (only split weights change their inputs), and
    their plans are then made once."""
    nodes, tensors = [], set()
    for n in graph.nodes:
        extra: tuple = ()
        if n.op == STAGE_OP:
            extra = (id(n.attrs["stage"]), *stripe_mode(n))  # the graph in the cache entry keeps the stage alive
        elif n.op in DEPTHWISE_OPS:
            extra = (tuple(n.attrs["stride"]), tuple(n.attrs["pad"]), n.attrs.get("multiplier", 1))
        nodes.append((n.op, n.name, n.inputs, n.outputs, extra))
        tensors.update(n.inputs)
        tensors.update(n.outputs)
    tensors.discard("")
    info = tuple((t, graph[t].shape, graph[t].dtype, graph[t].is_const) for t in sorted(tensors))
    return tuple(nodes), info, tuple(io.tensor for io in graph.inputs), tuple(io.tensor for io in graph.outputs)


PREPARED_SIZE = 64  # the stripe stage choice bounds and plans a dozen staged graphs per train step
_PREPARED: dict[tuple, tuple[Graph, Any]] = {}


# --- text -----------------------------------------------------------------------------------------------------


def _plan_text(p: MemoryPlan, width: int) -> str:
    steps = p.num_steps
    lines = [
        f"arena {p.arena_bytes} bytes, peak live {p.peak_live_bytes} bytes at step {p.peak_step} "
        f"({p.step_label(p.peak_step)}), {len(p.buffers)} buffers, alignment {p.alignment}"
        + (f", placed by {p.order}" if p.order else ""),
        "",
    ]
    if p.kinds:
        lines += [_kind_totals(p), ""]
    kind_w = max([0, *(len(k) + 1 for k in p.kinds.values())])
    kind_head = f"{'kind':<{kind_w}}" if kind_w else ""
    lines.append(f"{'offset':>8} {'size':>8} {'first':>5} {'last':>5}  {kind_head}name")
    order = sorted(p.buffers, key=lambda b: (p.offsets[b.name], b.first, b.name))
    for b in order:
        kind = f"{p.kinds.get(b.name, ''):<{kind_w}}" if kind_w else ""
        lines.append(f"{p.offsets[b.name]:>8} {b.size:>8} {b.first:>5} {b.last:>5}  {kind}{b.name}")
    for tensor, root in sorted(p.aliases.items()):
        lines.append(f"{'':>8} {'':>8} {'':>5} {'':>5}  {'':<{kind_w}}{tensor} -> shares {root}")
    for x, y in p.tied:
        lines.append(f"{'':>8} {'':>8} {'':>5} {'':>5}  {'':<{kind_w}}{y} -> computed in place over {x}")
    for x, y, delta in p.nested:
        lines.append(f"{'':>8} {'':>8} {'':>5} {'':>5}  {'':<{kind_w}}{y} -> written over the rows of {x} "
                     f"no later stripe reads ({delta:+d})")
    if steps:
        lines += ["", _timeline(p, order, steps, width)]
    return "\n".join(lines) + "\n"


def _kind_totals(p: MemoryPlan) -> str:
    """One line: buffers and bytes of each kind, and what of each is live at the peak step."""
    peak = {b.name for b in p.live_at(p.peak_step)}
    parts = []
    for kind in sorted(set(p.kinds.values())):
        bufs = [b for b in p.buffers if p.kinds.get(b.name) == kind]
        at_peak = sum(b.size for b in bufs if b.name in peak)
        parts.append(f"{kind} {len(bufs)} buffers {sum(b.size for b in bufs)} B ({at_peak} B live at the peak)")
    return "by kind: " + "; ".join(parts)


def _timeline(p: MemoryPlan, order: list[Buffer], steps: int, width: int) -> str:
    """One row per buffer, one column per step (or per group of steps): '#' where the buffer is live."""
    per_col = max(1, -(-steps // width))
    cols = -(-steps // per_col)
    name_w = min(32, max([4, *(len(b.name) for b in order)]))
    out = [f"timeline: one column per {per_col} step(s), rows by offset; last row: live bytes (max per column)"]
    for b in order:
        row = "".join("#" if b.first <= c * per_col + per_col - 1 and c * per_col <= b.last else "."
                      for c in range(cols))
        out.append(f"{b.name[:name_w]:<{name_w}} |{row}|")
    live = p.live_bytes()
    col_max = [max(live[c * per_col:(c + 1) * per_col]) for c in range(cols)]
    top = max(col_max, default=0)
    bars = " .:-=+*#%@"
    levels = "".join(bars[min(9, round(9 * v / max(top, 1)))] for v in col_max)
    out.append(f"{'live':<{name_w}} |{levels}| max {top} bytes")
    return "\n".join(out)
