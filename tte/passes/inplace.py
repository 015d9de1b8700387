"""Which nodes write their output over an input (in-place kernels), for the memory planners.

Two kinds of op may overwrite an input that dies at the node (no later reader, not a graph input or output, not
in the caller's memory):
- element-wise gradient ops whose kernels allow out == in (`apply_mask`, `grad_add`): the output is an alias of
  the input (one buffer, same size, its lifetime extended);
- depthwise convolutions, forward and input gradient (runtime_c/src/depthwise_inplace.c, TinyEngine's trick):
  channel by channel, the input plane is copied to a scratch buffer and the output written over the input's
  positions of that channel. This needs batch 1, channel multiplier 1 (the same channel count in and out), one
  element type and a kernel of at most MAX_TAPS taps (MAX_GROUPS rows of 4-tap words). Input and output keep
  buffers of their own, `tied` to one offset: the planner gives the node's step to the larger of the two and
  ends (or starts) the other one step early (late), so a strided layer's large input does not outlive the node,
  nor its large input gradient start before it. The scratch plane (`scratch_bytes`: one channel of the input,
  with its padding for the forward kernels) is one more buffer, live at that node only, named
  `scratch_name(node)`.

The emitters see an in-place depthwise node as one whose input and output refs are equal (two tensors that
are live at one step never share an offset otherwise), and find the scratch at `scratch_name(node)`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from tte.ir import Graph, Node

if TYPE_CHECKING:
    from tte.passes.memory_plan import MemoryPlan

# op -> the inputs its output may overwrite (the kernel documents out == in as allowed)
SAME_SIZE_OPS = {"apply_mask": (0,), "grad_add": (0, 1)}
DEPTHWISE_OPS = ("depthwise_conv2d", "depthwise_conv2d_mask", "depthwise_conv2d_input_grad")
MAX_TAPS, MAX_GROUPS = 49, 16  # TTE_DW_INPLACE_MAX_TAPS, _MAX_GROUPS of tte_depthwise_inplace.h
SCRATCH_SUFFIX = ":inplace_scratch"
MAX_TRIES = 6  # plans `fewest_ties` tries before it keeps every candidate in place


@dataclass(frozen=True)
class Scratch:
    """The scratch buffer of an in-place node: `size` bytes, live at `step` only."""

    name: str
    size: int
    step: int


def tensor_bytes(graph: Graph, name: str) -> int:
    return graph[name].nbytes


def scratch_name(node: Node) -> str:
    """The plan's name of the scratch buffer of an in-place depthwise node."""
    return node.name + SCRATCH_SUFFIX


def depthwise_inplace_ok(node: Node, graph: Graph) -> bool:
    """True when the in-place depthwise kernels can compute `node` (see the module docstring)."""
    if node.op not in DEPTHWISE_OPS or len(node.inputs) < 2 or not node.outputs:
        return False
    x, y, w = graph[node.inputs[0]], graph[node.outputs[0]], graph[node.inputs[1]]
    if len(x.shape) != 4 or len(y.shape) != 4 or len(w.shape) != 4:
        return False
    return (x.shape[0] == y.shape[0] == 1 and x.shape[3] == y.shape[3] and x.dtype == y.dtype
            and int(node.attrs.get("multiplier", 1)) == 1 and w.shape[1] * w.shape[2] <= MAX_TAPS
            and w.shape[1] * -(-w.shape[2] // 4) <= MAX_GROUPS)


def scratch_bytes(node: Node, graph: Graph) -> int:
    """Bytes of the scratch plane: one channel of the input; the int8 forward kernels copy it with its padding
    (tte_depthwise_inplace.h: PH x PW) and read up to 4 bytes past it, a word at a time."""
    x, y = graph[node.inputs[0]], graph[node.outputs[0]]
    _, h, w, _ = x.shape
    if x.dtype != "int8":  # the input gradient: the plane of the output gradient
        return int(h * w * np.dtype(x.dtype).itemsize)
    _, kh, kw, _ = graph[node.inputs[1]].shape
    (sh, sw), (pt, pl) = node.attrs["stride"], node.attrs["pad"][:2]
    ph = max(h + pt, (y.shape[1] - 1) * sh + kh)
    pw = max(w + pl, (y.shape[2] - 1) * sw + kw)
    return int(ph * pw + 4)


def _candidates(node: Node, graph: Graph, depthwise: bool) -> tuple[int, ...]:
    if node.op in SAME_SIZE_OPS:
        out = tensor_bytes(graph, node.outputs[0])
        return tuple(i for i in SAME_SIZE_OPS[node.op] if tensor_bytes(graph, node.inputs[i]) == out)
    return (0,) if depthwise and depthwise_inplace_ok(node, graph) else ()


def _reads(graph: Graph, roots: Mapping[str, str]) -> tuple[dict[str, int], dict[str, int]]:
    """The first write and the last read of each root."""
    made: dict[str, int] = {}
    last: dict[str, int] = {}
    for step, node in enumerate(graph.nodes):
        for t in node.outputs:
            made.setdefault(roots.get(t, t), step)
        for t in node.inputs:
            if t:
                last[roots.get(t, t)] = step
    return made, last


@dataclass(frozen=True)
class InPlace:
    """What `inplace_roots` found: aliases (tensor -> root), ties (input root, output root, step) of in-place
    depthwise nodes and their scratch buffers."""

    roots: dict[str, str]
    ties: list[tuple[str, str, int]]
    scratch: list[Scratch]

    def only(self, steps: set[int]) -> InPlace:
        """The same with the depthwise nodes at `steps` in place and the others not."""
        return replace(self, ties=[t for t in self.ties if t[2] in steps],
                       scratch=[s for s in self.scratch if s.step in steps])


def inplace_roots(graph: Graph, roots: Mapping[str, str], external: Iterable[str] = (),
                  depthwise: bool = True) -> InPlace:
    """`roots` (tensor -> the tensor whose bytes it shares, e.g. reshape chains) extended with the outputs of
    in-place element-wise ops, and the ties and scratch buffers of in-place depthwise nodes (with `depthwise`).
    A node works in place when its input's root is read by nothing after it, its output is read after it and
    neither is a graph input or output, external or constant."""
    roots = dict(roots)
    fixed = set(external) | {io.tensor for io in (*graph.inputs, *graph.outputs)}
    made, last = _reads(graph, roots)
    found = InPlace(roots, [], [])
    for step, node in enumerate(graph.nodes):
        out = node.outputs[0] if node.outputs else ""
        for i in _candidates(node, graph, depthwise):
            root = roots.get(node.inputs[i], node.inputs[i])
            if root in fixed or out in fixed or out in roots or graph[root].is_const or last.get(root) != step:
                continue
            if node.op in DEPTHWISE_OPS:
                # the input must keep a step of its own then
                grows = tensor_bytes(graph, out) > tensor_bytes(graph, root)
                if last.get(out, step) <= step or (grows and made[root] >= step - 1):
                    continue
                found.ties.append((root, out, step))
                found.scratch.append(Scratch(scratch_name(node), scratch_bytes(node, graph), step))
                break
            for t, r in list(roots.items()):  # later aliases of `out` (reshapes) follow it
                if r == out:
                    roots[t] = root
            roots[out] = root
            last[root] = max(step, last.get(out, step))
            break
    return found


def tie_spans(spans: dict[str, tuple[int, int]], sizes: Mapping[str, int],
              ties: Iterable[tuple[str, str, int]]) -> None:
    """Make the two buffers of each tie disjoint in time: the larger one keeps the node's step (in place)."""
    for x, y, step in ties:
        if sizes[x] >= sizes[y]:
            spans[y] = (step + 1, spans[y][1])
        else:
            spans[x] = (spans[x][0], step - 1)


def fewest_ties(found: InPlace, make: Callable[[InPlace], MemoryPlan], target: int = 0) -> MemoryPlan:
    """The plan with in-place depthwise nodes only where they keep the arena down (the in-place kernels are
    slower). Out of place, a node's step holds more live bytes: the smaller of its input and output, less the
    scratch (no other step changes). Nodes whose step would then exceed max(arena with every candidate in place,
    `target`) stay in place; then, while the greedy placement needs more, the next ones by that figure, up to
    MAX_TRIES plans; failing that, every candidate.

    `target`: an arena paid anyway (the train step's, for its inference plan).
    """
    full = make(found)
    if not found.ties:
        return full
    ceiling = max(full.arena_bytes, target)
    live = full.live_bytes()
    size = {b.name: b.size for b in full.buffers}
    scratch = {s.step: s.size for s in found.scratch}
    need = {step: live[step] + min(size[x], size[y]) - scratch[step] for x, y, step in found.ties}
    order = sorted(need, key=lambda step: (-need[step], step))
    count = sum(1 for step in order if need[step] > ceiling)
    for _ in range(MAX_TRIES):
        if count >= len(order):
            break
        fewer = make(found.only(set(order[:count])))
        if fewer.arena_bytes <= ceiling:
            return fewer
        count += 1
    return full
