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
from tte.passes.inplace import InPlace, fewest_ties, inplace_roots, tie_spans
from tte.passes.memory_plan import Buffer, MemoryPlan, alias_roots, plan

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
    external = set(external)
    masks = set(masks)
    names = tuple(f"{n.name} ({n.op})" for n in graph.nodes)

    def make(found: InPlace) -> MemoryPlan:
        spans = _intervals(graph, found.roots, external)
        kinds = {r: buffer_kind(graph, r, span, num_forward, masks) for r, span in spans.items()}
        tie_spans(spans, {r: graph[r].nbytes for r in spans}, found.ties)
        buffers = [Buffer(r, graph[r].nbytes, a, b) for r, (a, b) in spans.items()]
        buffers += [Buffer(s.name, s.size, s.step, s.step) for s in found.scratch]
        kinds.update((s.name, "scratch") for s in found.scratch)
        aliases = {t: r for t, r in found.roots.items() if r in spans}
        return plan(buffers, alignment, names, aliases, fixed, kinds, [(x, y) for x, y, _ in found.ties])

    return fewest_ties(train_aliases(graph, external, inplace), make)
