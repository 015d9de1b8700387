"""Where every byte of a train step goes, without emitting C: the flash + SRAM split of partially trained weights,
the `<name>_infer` graph, both arena plans, and (over the SRAM budget) the first layers in row stripes (one stage
or a few in a row).

`plan_layout` is what `codegen.emit_train.emit_train` and the scheme search (`tte/auto`) both call, so the cost
the search sees is the one the compile reports. Repeated calls for one model are cheap without changing any
result: the stripe options are built once per chain of layers (tte/passes/stripes.py), plans are memoized by
their intervals (tte/passes/memory_plan.py: the inference plan and stage variants recur from scheme to scheme),
and of the stripe options only those a lower bound (`train_floor`) cannot rule out are planned.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from codegen.emit import ARENA_ALIGNMENT, bindings, copy_nodes, external_tensors
from codegen.ops.train_common import SRAM_CHANNELS, SRAM_INPUT
from codegen.ops.train_split import split_trained_weights
from codegen.ops.train_update import inplace_outputs
from tte import ops
from tte.ir import Graph, Node
from tte.passes.memory_plan import MemoryPlan, plan_graph
from tte.passes.stripes import MAX_STAGES, pick_stage, stage_choices, with_stage
from tte.passes.train_plan import plan_train_step, train_live
from tte.train import TrainingGraph
from tte.train.autodiff import LABEL, LOSS, LR

TRAIN_EXTERNAL = {LABEL: "&label", LR: "&lr", LOSS: "&loss"}  # the train step's own variables


def state_homes(graph: Graph, state: tuple[str, ...]) -> dict[str, str]:
    """Every state tensor and every new value written in place over it -> the state tensor (its array)."""
    home = {s: s for s in state}
    for node in graph.nodes:
        for src, dst in inplace_outputs(node):
            if src not in home:
                raise ValueError(f"node {node.name}: updates {src}, which is not trainable state")
            home[dst] = home[src]
    return home


def c_inference_graph(tg: TrainingGraph) -> Graph:
    """The forward part of a (split) train step as `<name>_infer` runs it: no saved channels, plain kernels
    (mask variants only where a weight is split), and the model's output (a final softmax included)."""
    nodes = [_plain(n) for n in tg.graph.nodes[:tg.num_forward] if n.op != "gather_channels"]
    out = tg.forward.outputs[0]
    if out.tensor != tg.logits:  # the softmax the loss replaced
        tail = tg.forward.producer(out.tensor)
        assert tail is not None and tail.inputs[0] == tg.logits, "only a softmax may follow the logits"
        nodes.append(tail)
    tensors = {**tg.forward.tensors, **tg.graph.tensors}
    g = replace(tg.graph, name=tg.forward.name, inputs=tg.forward.inputs, outputs=(out,), tensors=tensors)
    g = g.with_nodes(nodes)
    g.validate()
    return g


def _plain(node: Node) -> Node:
    """A forward node of the train step without its mask output, unless it reads a split weight."""
    base = node.op.removesuffix("_mask")
    if base == node.op or base not in ops.OPS:
        return node
    index = SRAM_INPUT.get(node.op)
    if index is not None and len(node.inputs) > index and node.inputs[index]:
        return node
    inputs = node.inputs[:index] if index is not None else node.inputs
    attrs = {k: v for k, v in node.attrs.items() if k not in ("index_bits", "mask_table", SRAM_CHANNELS)}
    return Node(base, node.name, inputs, node.outputs[:1], attrs)


@dataclass(frozen=True)
class Planned:
    """A train step and its inference graph with their memory plans (possibly with a striped first stage)."""

    tg: TrainingGraph
    infer: Graph
    plan: MemoryPlan
    infer_plan: MemoryPlan

    @property
    def arena(self) -> int:
        return max(self.plan.arena_bytes, self.infer_plan.arena_bytes)


def plan_both(tg: TrainingGraph, infer: Graph, home: dict[str, str], external: dict[str, str]) -> Planned:
    """Both plans, with the input at one offset: where the train plan puts it, or at 0 in both plans, whichever
    gives the smaller arena (`<name>_input_buffer(0)` serves both entry points)."""
    g, x = tg.graph, tg.graph.inputs[0].tensor
    copies = copy_nodes(infer)

    def plans(pin: int | None) -> Planned:
        fixed = None if pin is None else {x: pin}
        tp = plan_train_step(g, tg.num_forward, set(tg.masks.values()), {*TRAIN_EXTERNAL, *home}, ARENA_ALIGNMENT,
                             fixed)
        ip = plan_graph(infer, ARENA_ALIGNMENT, external=external, copies=copies, fixed={x: tp.offset(x)},
                        target=tp.arena_bytes)
        return Planned(tg, infer, tp, ip)

    # then the fewer in-place depthwise nodes (tte/passes/inplace.py), which run slower
    return min(plans(None), plans(0),
               key=lambda p: (p.arena, len(p.plan.tied) + len(p.infer_plan.tied), p.plan.offset(x)))


def striped(base: Planned, home: dict[str, str], external: dict[str, str], arena_budget: int,
            floor: Callable[..., int]) -> Planned:
    """The first layers in row stripes (tte/passes/stripes.py: one stage, or a few in a row) when that gives a
    smaller arena; `floor`: `after_stages` of the step."""
    tg, infer = base.tg, base.infer
    staged: dict[tuple[int, ...], tuple[tuple[Node, ...], TrainingGraph, Graph]] = {}  # by the stage nodes' ids

    def stage(*stages: tuple[Node, dict]) -> tuple[TrainingGraph, Graph]:
        key = tuple(id(node) for node, _ in stages)
        if key not in staged:  # the nodes are kept alive with the entry: ids stay unique
            g, i, layers = tg.graph, infer, 0
            for node, scratch in stages:
                g, i = with_stage(g, node, scratch), with_stage(i, node, scratch)
                layers += len(node.attrs["stage"].graph.nodes) - 1
            staged[key] = tuple(n for n, _ in stages), replace(tg, graph=g, num_forward=tg.num_forward - layers), i
        return staged[key][1:]

    def plan(node: Node, scratch: dict, *later: tuple[Node, dict]) -> tuple[Planned, int]:
        p = plan_both(*stage((node, scratch), *later), home, external)
        return p, p.arena

    best = pick_stage(tg.graph, set(home), plan, arena_budget, floor)  # the input lives in the arena
    return best[0] if best is not None and best[1] < base.arena else base


def after_stages(tg: TrainingGraph, home: dict[str, str]) -> Callable[..., int]:
    """`pick_stage`'s floor of a candidate: the most bytes live after its stages (aligned).

    A candidate's steps after its stages are the unstaged train step's, with the same buffers live: the stages
    take the first layers, which read and leave nothing else. So the unstaged step's live bytes, computed once,
    bound every candidate; with the bytes at each stage (the option floors, which `pick_stage` adds) this is
    `train_floor` of the staged step (tests/test_plan_speed.py), without building and walking each one."""
    after = _suffix_max(train_live(tg.graph, {*TRAIN_EXTERNAL, *home}, ARENA_ALIGNMENT))
    step = {n.name: k for k, n in enumerate(tg.graph.nodes)}

    def floor(node: Node, scratch: dict, *later: tuple[Node, dict]) -> int:
        end = max(step[n.name] for n in (later[-1][0] if later else node).attrs["stage"].graph.nodes) + 1
        return -(-after[end] // ARENA_ALIGNMENT) * ARENA_ALIGNMENT

    return floor


def _suffix_max(values: list[int]) -> list[int]:
    """out[k] = max(values[k:]), 0 past the end."""
    out = [0] * (len(values) + 1)
    for k in range(len(values) - 1, -1, -1):
        out[k] = max(values[k], out[k + 1])
    return out


@dataclass(frozen=True)
class Layout:
    """A train step laid out in memory: the split program and its plans, the state homes, the inference graph's
    external tensors, and the static SRAM beside the arena (trainable state + output buffers)."""

    planned: Planned
    home: dict[str, str]
    external: dict[str, str]
    static_bytes: int

    def peak_sram_bytes(self, reserve: int) -> int:
        return self.planned.arena + self.static_bytes + reserve


def plan_layout(program: TrainingGraph, name: str, budget: int | None = None, reserve: int = 0) -> Layout:
    """The train step's memory layout (module docstring); `budget` bytes of SRAM for all of it, `reserve` of them
    for the stack: over it, the first layers go into row stripes when that makes the arena smaller."""
    layout = layout_if_fits(program, name, budget, reserve, give_up=False)
    assert layout is not None
    return layout


def layout_if_fits(program: TrainingGraph, name: str, budget: int | None, reserve: int = 0,
                   give_up: bool = True) -> Layout | None:
    """`plan_layout`, or None when no stripe candidate can fit the budget (their floors say so): the candidates
    are then not planned to find the smallest arena (what the scheme search needs of a scheme that does not
    fit; `give_up=False`: plan them)."""
    tg = split_trained_weights(program)
    infer = c_inference_graph(tg)
    _, outputs = bindings(infer, name)
    home = state_homes(tg.graph, tg.state_names)
    external = external_tensors(infer, outputs, copy_nodes(infer))
    planned = plan_both(tg, infer, home, external)
    static = sum(tg.graph[s].nbytes for s in tg.state_names) + sum(b.nbytes for b in outputs)
    if budget is not None and planned.arena + static + reserve > budget:
        floor = after_stages(tg, home)
        if give_up and not _may_fit(tg, home, budget - static - reserve, floor):
            return None
        planned = striped(planned, home, external, budget - static - reserve, floor)
    return Layout(planned, home, external, static)


def _may_fit(tg: TrainingGraph, home: dict[str, str], arena_budget: int, after: Callable[..., int]) -> bool:
    """Whether some stripe candidate's floor (a lower bound of its arena; `after`: `after_stages`) is within
    `arena_budget`."""
    for cand in stage_choices(tg.graph, set(home), MAX_STAGES):
        low = max(o.floor for o in cand)
        if low <= arena_budget and after(cand[0].node, cand[0].scratch,
                                         *((o.node, o.scratch) for o in cand[1:])) <= arena_budget:
            return True
    return False
