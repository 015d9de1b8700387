"""The memory plan of a whole train step: forward activations, saved activations, masks and fp32 gradients.

The train step graph (`tte.train.build_training_graph`) is already in schedule order: forward (with masks and
saved input channels), loss, then per layer mask -> bias update -> input gradient -> weight update. So every
tensor's real lifetime is the interval from the node that makes it to the last node that reads it, and the
same greedy planner as for inference places them all in one arena. What differs from inference:
- the label, learning rate and loss are the train step's own variables, and the trainable parameters (with
  every new value an update writes in place) live in static SRAM arrays: `external` names them, they get no
  arena bytes;
- reshapes share their input's bytes, and an element-wise gradient op whose input dies at that node works in
  place (`apply_mask`, `grad_add`: their kernels allow out == in), so a layer's masked gradient costs no second
  buffer;
- each buffer has a kind (`KINDS`) that plan.txt and report.json show.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from tte.ir import Graph
from tte.passes.memory_plan import Buffer, MemoryPlan, alias_roots, plan

# op -> the inputs its output may overwrite (the kernel documents out == in as allowed)
INPLACE_INPUTS = {"apply_mask": (0,), "grad_add": (0, 1)}
KINDS = ("input", "activation", "saved", "mask", "gradient")


def train_aliases(graph: Graph, external: Iterable[str] = ()) -> dict[str, str]:
    """Tensor -> the tensor whose bytes it shares: reshape chains, and in-place gradient ops (see module doc)."""
    external = set(external)
    roots = alias_roots(graph)
    last: dict[str, int] = {}
    for step, node in enumerate(graph.nodes):
        for t in node.inputs:
            if t:
                last[roots.get(t, t)] = step
    for step, node in enumerate(graph.nodes):
        out = node.outputs[0] if node.outputs else ""
        for i in INPLACE_INPUTS.get(node.op, ()):
            src = node.inputs[i]
            root = roots.get(src, src)
            if (root in external or out in external or graph[root].is_const or last.get(root) != step
                    or graph[src].nbytes != graph[out].nbytes):
                continue
            for t, r in list(roots.items()):  # later reshapes of `out` follow it
                if r == out:
                    roots[t] = root
            roots[out] = root
            last[root] = max(step, last.get(out, step))
            break
    return roots


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
                    alignment: int = 16, fixed: Mapping[str, int] | None = None) -> MemoryPlan:
    """The arena plan of a train step graph; `masks`: the mask tensors, `external`: tensors with no arena bytes
    (label, learning rate, loss, trainable parameters and their new values); `fixed`: pinned offsets."""
    external = set(external)
    roots = train_aliases(graph, external)
    spans = _intervals(graph, roots, external)
    masks = set(masks)
    buffers = [Buffer(r, graph[r].nbytes, a, b) for r, (a, b) in spans.items()]
    kinds = {r: buffer_kind(graph, r, span, num_forward, masks) for r, span in spans.items()}
    names = tuple(f"{n.name} ({n.op})" for n in graph.nodes)
    aliases = {t: r for t, r in roots.items() if r in spans}
    return plan(buffers, alignment, names, aliases, fixed, kinds)
