"""The memory plan of a whole train step: forward activations, saved activations, masks and fp32 gradients.

The train step graph (`tte.train.build_training_graph`) is already in schedule order: forward (with masks and
saved input channels), loss, then per layer mask -> bias update -> input gradient -> weight update. So every
tensor's real lifetime is the interval from the node that makes it to the last node that reads it, and the
same greedy planner as for inference places them all in one arena. What differs from inference:
- the label, learning rate and loss are the train step's own variables, and the trainable parameters (with
  every new value an update writes in place) live in static SRAM arrays: `external` names them, they get no
  arena bytes;
- reshapes share their input's bytes, an element-wise gradient op whose input dies at that node works in
  place (`apply_mask`, `grad_add`: their kernels allow out == in), so a layer's masked gradient costs no second
  buffer, and a depthwise convolution (forward with mask, or input gradient) whose input dies there writes its
  output over it, with a scratch plane of kind "scratch" (tte/passes/inplace.py);
- each buffer has a kind (`KINDS`) that plan.txt and report.json show.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from tte.ir import Graph
from tte.passes.inplace import InPlace, fewest_ties, inplace_roots, tensor_bytes, tie_spans
from tte.passes.memory_plan import Buffer, MemoryPlan, Placing, Variants, alias_roots, prepared
from tte.passes.placement import live_profile
from tte.passes.stripes import stage_nests

KINDS = ("input", "activation", "saved", "mask", "gradient", "scratch")


def train_aliases(graph: Graph, external: Iterable[str] = (), inplace: bool = True) -> InPlace:
    """The aliases (tensor -> the tensor whose bytes it shares: reshape chains, in-place gradient ops) and, with
    `inplace`, the in-place depthwise layers' ties and scratch buffers (see the module doc)."""
    return inplace_roots(graph, alias_roots(graph), external, inplace)


def _intervals(graph: Graph, roots: Mapping[str, str], external: set[str]) -> dict[str, tuple[int, int]]:
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for io in graph.inputs:
        first[io.tensor] = last[io.tensor] = 0
    for step, node in enumerate(graph.nodes):
        for t in (*node.outputs, *(t for t in node.inputs if t)):
            root = roots.get(t, t)
            first.setdefault(root, step)
            last[root] = max(last.get(root, step), step)
    return {r: (first[r], last[r]) for r in first if r not in external and not graph[r].is_const}


def buffer_kind(graph: Graph, root: str, span: tuple[int, int], num_forward: int, masks: set[str]) -> str:
    """What a train step buffer holds (one of KINDS)."""
    if root in masks:
        return "mask"
    if span[0] >= num_forward and graph[root].dtype == "float32":
        return "gradient"
    if span[1] > num_forward:  # kept for the backward pass (the input too, when the first layer trains)
        return "saved"
    return "input" if root in {io.tensor for io in graph.inputs} else "activation"


def plan_train_step(graph: Graph, num_forward: int, masks: Iterable[str], external: Iterable[str],
                    alignment: int = 16, fixed: Mapping[str, int] | None = None,
                    inplace: bool = True) -> MemoryPlan:
    """The arena plan of a train step graph; `masks`: the mask tensors, `external`: tensors with no arena bytes
    (label, learning rate, loss, trainable parameters and their new values); `fixed`: pinned offsets;
    `inplace`: depthwise layers may write over their dying input (only where that keeps the arena down)."""
    key = ("train", num_forward, frozenset(masks), frozenset(external), alignment, inplace)
    variants = prepared(graph, key, lambda: _train_variants(graph, num_forward, key[2], key[3], alignment, inplace))
    return fewest_ties(variants.found, lambda variant: variants.plan(variant, fixed))


def _basis(graph: Graph, external: frozenset[str], inplace: bool
           ) -> tuple[InPlace, dict[str, tuple[int, int]], dict[str, int]]:
    """The aliases and in-place candidates, each buffer's span and size: what `train_floor` and the plan share
    (the stripe stage choice bounds a candidate, then plans it)."""
    def build() -> tuple[InPlace, dict[str, tuple[int, int]], dict[str, int]]:
        found = train_aliases(graph, external, inplace)
        spans = _intervals(graph, found.roots, external)
        return found, spans, {r: tensor_bytes(graph, r) for r in spans}

    return prepared(graph, ("train basis", external, inplace), build)


def _train_variants(graph: Graph, num_forward: int, masks: frozenset[str], external: frozenset[str],
                    alignment: int, inplace: bool) -> Variants:
    names = tuple(f"{n.name} ({n.op})" for n in graph.nodes)
    # the variants `fewest_ties` tries differ in ties and scratch only: spans, sizes and kinds are shared
    found, base, sizes = _basis(graph, external, inplace)
    base_kinds = {r: buffer_kind(graph, r, span, num_forward, masks) for r, span in base.items()}
    aliases = {t: r for t, r in found.roots.items() if r in base}

    def make(variant: InPlace) -> Placing:
        spans = dict(base)
        tie_spans(spans, sizes, variant.ties)
        buffers = [Buffer(r, sizes[r], a, b) for r, (a, b) in spans.items()]
        buffers += [Buffer(s.name, s.size, s.step, s.step) for s in variant.scratch]
        kinds = {**base_kinds, **{s.name: "scratch" for s in variant.scratch}}
        return Placing(tuple(buffers), alignment, names, aliases, kinds, tuple((x, y) for x, y, _ in variant.ties),
                       tuple(stage_nests(graph, spans, found.roots, alignment)))

    return Variants(found, make)


def train_floor(graph: Graph, external: Iterable[str], alignment: int = 16, inplace: bool = True) -> int:
    """A lower bound of `plan_train_step`'s arena, without placing anything: the most live bytes at one step,
    each in-place depthwise candidate counted in place where that saves bytes (rounded up to the alignment)."""
    top = max(train_live(graph, external, alignment, inplace), default=0)
    return -(-top // alignment) * alignment


def train_live(graph: Graph, external: Iterable[str], alignment: int = 16, inplace: bool = True) -> list[int]:
    """The bytes live at each step of `train_floor`."""
    found, spans, sizes = _basis(graph, frozenset(external), inplace)
    live = live_profile([Buffer(r, sizes[r], a, b) for r, (a, b) in spans.items()],
                        stage_nests(graph, spans, found.roots, alignment))
    scratch = {s.step: s.size for s in found.scratch}
    for x, y, step in found.ties:
        live[step] -= max(0, min(sizes[x], sizes[y]) - scratch[step])
    return live
