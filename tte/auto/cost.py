"""The cost of a sparse-update scheme: exact peak SRAM from the real planner, backward MACs, and a fast surrogate.

A scheme is a set of `Item`s: the bias of a layer, or its weights on a fraction of the input channels. The
classifier (or the fresh head of `--head new:N`) always trains in full, as in the paper.

`CostModel.exact(items)` plans the train step the way `tte compile` does (head, update spec, autodiff, the
memory planner with its row-stripe fallback under the budget, the report's `peak_sram_bytes`) without emitting
the C (`_plan_cost`), and memoizes the result by scheme, so a number from it is exactly what the compile will
report. What keeps that affordable: the placement is compiled (tte/passes/placement.c); a graph's plan is
prepared once for its pinned and unpinned placements; inference plans are shared by schemes whose inference
graph has the same structure; row-stripe options are built once per chain of layers and their floors come from
the unstriped step's live bytes. `fitting_many` answers "over the budget" from those floors without planning the
stripe candidates, and `parallel` evaluates batches on forked worker processes. Measured
(`python bench/cost_speed.py`, bench/results/cost_speed.md): a new random scheme of 1-8 layers takes 16-25 ms
(mean) on the paper models; the deep schemes (30-60 items) a search tries near the budget, 43-69 a second on
two worker processes. Not thousands of candidates in seconds: a search still screens with the surrogate.

So the search works on `Surrogate`, an additive model that is evaluated in about 10 us per candidate, and the
exact planner sees only the 20-60 schemes a search checks (MILP answers, repairs, fill batches):

    peak(S) ~= max over layers l reached by S of reach[l]  +  sum over weight items of (weight bytes + saved input)

where `reach[l]` is the exact peak of "classifier + bias of l" minus that bias' bytes: what the backward pass
costs when it has to go down to layer l (the arena holds the gradients and masks of every layer above). It needs
one exact evaluation per layer, and layers deeper than the budget allows are not evaluated (the reach only grows
with depth: `reach_table` stops after two layers in a row over the budget). The search then checks its answer
with `exact` and repairs it (see search.py).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tte import ops
from tte.errors import TteError
from tte.ir import Graph, Node

# what the exact costs depend on beyond the model: a cache made with other sources of these is not reused
_PLANNER_SOURCES = ("tte/passes/*.py", "tte/train/*.py", "codegen/*.py", "codegen/ops/*.py", "tte/report.py",
                    "tte/compile.py")
RATIOS = (0.125, 0.25, 0.5, 1.0)  # the weight ratios the contribution analysis and the search consider


@dataclass(frozen=True, order=True)
class Item:
    """One choice: `kind` "bias" (ratio 0) or "weight" (the fraction of input channels trained) of layer `node`."""

    node: str
    kind: str
    ratio: float = 0.0

    @property
    def key(self) -> str:
        return f"bias:{self.node}" if self.kind == "bias" else f"weight:{self.node}@{self.ratio:g}"

    @staticmethod
    def parse(key: str) -> Item:
        kind, _, rest = key.partition(":")
        if kind == "bias":
            return Item(rest, "bias")
        node, _, ratio = rest.rpartition("@")
        return Item(node, "weight", float(ratio))


@dataclass(frozen=True)
class Cost:
    """What one scheme costs on the device (bytes, MACs) as the compile reports it."""

    peak_sram_bytes: int
    macs_backward: int
    trainable_param_bytes: int


def scheme_dict(items: Iterable[Item], order: Mapping[str, int]) -> dict[str, Any]:
    """The `sparse:` file of a set of items (graph order; a layer's largest weight ratio wins)."""
    items = list(items)
    bias = sorted({i.node for i in items if i.kind == "bias"}, key=order.__getitem__)
    weights: dict[str, float] = {}
    for i in sorted((i for i in items if i.kind == "weight"), key=lambda i: order[i.node]):
        weights[i.node] = max(weights.get(i.node, 0.0), i.ratio)
    return {"bias": bias, "weights": weights, "classifier": "full"}


def canonical(items: Iterable[Item]) -> tuple[Item, ...]:
    """A scheme's items without duplicates, one weight ratio per layer (the largest), sorted: the memo key."""
    best: dict[tuple[str, str], Item] = {}
    for i in items:
        k = (i.node, i.kind)
        if k not in best or i.ratio > best[k].ratio:
            best[k] = i
    return tuple(sorted(best.values()))


class CostModel:
    """Exact costs of schemes for one model, head, target and budget (memoized; see the module docstring)."""

    def __init__(self, graph: Graph, head: str = "keep", target: str = "host", budget: int | None = None,
                 options: Any = None) -> None:
        from tte import compile as compiler
        from tte.passes.normalize import normalize
        from tte.train import TrainOptions, apply_head, parse_head
        from tte.train.spec import weight_layers

        self.graph = normalize(graph)
        self.head, self.target = head, target
        board = compiler.boards().get(target)
        if target != "host" and board is None:
            raise TteError(f"unknown target '{target}'", hint=f"choose one of: {', '.join(compiler.targets())}")
        self.budget = budget if budget is not None or board is None else board.budget_bytes
        self.options = options or TrainOptions(head=head)
        self.stack = compiler._board_stack() if board else _train_stack()
        self.forward = apply_head(self.graph, parse_head(head))
        layers = weight_layers(self.forward)
        self.layers: list[Node] = layers[:-1]  # the classifier / head always trains: not a choice
        self.classifier = layers[-1].name
        self.classes = int(self.forward[layers[-1].outputs[0]].size)
        self.order = {n.name: i for i, n in enumerate(layers)}
        self.memo: dict[tuple[Item, ...], Cost] = {}
        self.over: set[tuple[Item, ...]] = set()  # schemes `fitting_many` found over the budget
        self.key = cost_key(self)  # now: the sources as this process runs them
        self.fast = True  # plan without emitting C (`_plan_cost`); False: through emit_train, as tte compile
        self.seconds = 0.0  # time spent in exact evaluations (new ones, not memo hits)
        self.evaluations = 0
        self._pool: Any = None  # the worker processes of `parallel`, while open
        self._jobs = 1

    def exact(self, items: Iterable[Item]) -> Cost:
        """The compile's peak SRAM and backward MACs of the scheme (memoized)."""
        key = canonical(items)
        hit = self.memo.get(key)
        if hit is None:
            t0 = time.perf_counter()
            hit = self._compile(key)
            assert hit is not None
            self.memo[key] = hit
            self.seconds += time.perf_counter() - t0
            self.evaluations += 1
        return hit

    def exact_many(self, schemes: Iterable[Iterable[Item]]) -> list[Cost]:
        """`exact` of each scheme; the new ones on the worker processes of `parallel` when it is open."""
        keys = [canonical(s) for s in schemes]
        todo = list(dict.fromkeys(k for k in keys if k not in self.memo))
        for k, cost in zip(todo, self._evaluate(todo, give_up=False), strict=True):
            assert cost is not None
            self.memo[k] = cost
        return [self.memo[k] for k in keys]

    @contextlib.contextmanager
    def parallel(self, jobs: int | None = None) -> Iterator[CostModel]:
        """Worker processes for `exact_many` and `fitting_many` (forked now: they start with this model and its
        caches warm); with one process, or no fork on this platform, they evaluate in this process."""
        jobs = jobs or os.cpu_count() or 1
        if jobs < 2 or "fork" not in multiprocessing.get_all_start_methods() or self._pool is not None:
            yield self
            return
        global _WORKER
        _WORKER = self
        self._jobs = jobs
        with multiprocessing.get_context("fork").Pool(jobs) as pool:
            self._pool = pool
            try:
                yield self
            finally:
                self._pool = None

    def fitting_many(self, schemes: Iterable[Iterable[Item]]) -> list[Cost | None]:
        """`exact` of each scheme that fits the budget, None for one that does not: that answer is exact too,
        but cheaper when the row-stripe candidates' floors already exceed the budget (none is planned then)."""
        keys = [canonical(s) for s in schemes]
        todo = list(dict.fromkeys(k for k in keys if k not in self.memo and k not in self.over))
        for k, cost in zip(todo, self._evaluate(todo, give_up=True), strict=True):
            if cost is None:
                self.over.add(k)
            else:
                self.memo[k] = cost
        return [None if k in self.over else self.memo[k] for k in keys]

    def _evaluate(self, todo: list[tuple[Item, ...]], give_up: bool) -> list[Cost | None]:
        """`_compile` of each new scheme, on the workers of `parallel` when open (timed and counted)."""
        t0 = time.perf_counter()
        if self._pool is not None and len(todo) > 1:
            chunk = max(1, len(todo) // (4 * self._jobs))
            results = self._pool.map(_work, [(k, give_up) for k in todo], chunksize=chunk)
        else:
            results = [self._compile(k, give_up) for k in todo]
        self.seconds += time.perf_counter() - t0
        self.evaluations += len(todo)
        return results

    def _compile(self, items: tuple[Item, ...], give_up: bool = False) -> Cost | None:
        from tte.train import build_training_graph
        from tte.train.spec import scheme_spec

        spec = scheme_spec(scheme_dict(items, self.order), self.forward, text="auto")
        program = build_training_graph(self.forward, spec, self.options)
        if not self.fast:
            cost = self._emit_cost(program)
            return None if give_up and cost.peak_sram_bytes > (self.budget or cost.peak_sram_bytes) else cost
        return _plan_cost(program, self.budget, self.stack, give_up)

    def _emit_cost(self, program: Any) -> Cost:
        """The cost as `tte compile` reports it, C emission included (the reference for `_plan_cost`)."""
        from codegen.emit_train import emit_train
        from tte import report as report_mod

        model = emit_train(program, "auto_cost", "", self.budget, self.stack)
        rep = report_mod.build_train_report(model, "", self.target, self.stack)
        return Cost(int(rep["peak_sram_bytes"]), int(rep["macs_backward"]), int(rep["trainable_param_bytes"]))

    def scheme(self, items: Iterable[Item]) -> dict[str, Any]:
        return scheme_dict(canonical(items), self.order)

    # --- per-item figures for the surrogate --------------------------------------------------------------------

    def node(self, name: str) -> Node:
        return next(n for n in self.layers if n.name == name)

    def bias_bytes(self, name: str) -> int:
        from tte.train.memory import _param_bytes
        from tte.train.spec import LayerUpdate, in_channels

        node = self.node(name)
        return _param_bytes(node, self.forward, LayerUpdate(name, node.op, True, (), in_channels(node,
                                                                                             self.forward)))[1]

    def weight_bytes(self, name: str, ratio: float) -> int:
        """Trained weight bytes in SRAM plus the saved input channels (int8) of a weight item."""
        from tte.train.memory import _param_bytes
        from tte.train.spec import LayerUpdate, in_channels, top_channels

        node = self.node(name)
        chans = top_channels(node, self.forward, ratio)
        n = in_channels(node, self.forward)
        wbytes = _param_bytes(node, self.forward, LayerUpdate(name, node.op, False, chans, n))[0]
        saved = self.forward[node.inputs[0]].nbytes * len(chans) // n
        return wbytes + saved

    def weight_macs(self, name: str, ratio: float) -> int:
        """MACs of the weight gradient of a weight item: the forward MACs times the trained channel fraction."""
        from tte.train.spec import in_channels, top_channels

        node = self.node(name)
        k = len(top_channels(node, self.forward, ratio))
        return int(ops.get(node.op).macs(node, self.forward)) * k // in_channels(node, self.forward)


_WORKER: CostModel | None = None  # the cost model the forked workers of `CostModel.parallel` evaluate with


def _work(task: tuple[tuple[Item, ...], bool]) -> Cost | None:
    assert _WORKER is not None
    return _WORKER._compile(*task)


def _plan_cost(program: Any, budget: int | None, stack: int, give_up: bool = False) -> Cost | None:
    """The planning half of `tte compile` without the C (`codegen.train_layout.plan_layout`, which emit_train
    calls too), so the same `peak_sram_bytes` = arena + SRAM state + outputs + stack (build_train_report).
    `give_up`: None when the scheme cannot fit the budget (`layout_if_fits`)."""
    from codegen.train_layout import layout_if_fits
    from tte.train.autodiff import RNG

    layout = layout_if_fits(program, "auto_cost", budget, stack, give_up)
    if layout is None:
        return None
    tg = layout.planned.tg
    macs = sum(int(ops.get(n.op).macs(n, tg.graph)) for n in tg.backward_nodes())
    params = sum(tg.graph[s].nbytes for s in tg.state_names if s != RNG)
    return Cost(layout.peak_sram_bytes(stack), macs, params)


def _train_stack() -> int:
    from tte import report as report_mod

    return report_mod.TRAIN_STACK_ESTIMATE_BYTES


@dataclass
class Surrogate:
    """The additive cost model of the search (module docstring): `base` (classifier only), per layer `reach`
    bytes and `reach_macs` (backward down to it), per item `bytes` and `macs`. Layers not in `reach` are too
    deep for the budget."""

    base: Cost
    reach: dict[str, int] = field(default_factory=dict)
    reach_macs: dict[str, int] = field(default_factory=dict)
    bytes: dict[Item, int] = field(default_factory=dict)
    macs: dict[Item, int] = field(default_factory=dict)

    def peak(self, items: Iterable[Item]) -> int:
        items = canonical(items)
        reach = max((self.reach[i.node] for i in items), default=self.base.peak_sram_bytes)
        return reach + sum(self.bytes[i] for i in items)

    def macs_backward(self, items: Iterable[Item]) -> int:
        items = canonical(items)
        return max((self.reach_macs[i.node] for i in items), default=self.base.macs_backward) + sum(
            self.macs[i] for i in items)

    def to_json(self) -> dict[str, Any]:
        return {"base": [self.base.peak_sram_bytes, self.base.macs_backward, self.base.trainable_param_bytes],
                "reach": self.reach, "reach_macs": self.reach_macs}


def reach_table(cost: CostModel, limit: int, progress: Callable[[Iterable[Any]], Iterable[Any]] | None = None,
                dense: int = 6, stride: int = 3, max_layers: int | None = None) -> Surrogate:
    """The surrogate of `cost`: the reach of layers from the top down, until two evaluations in a row need more
    than `limit`.

    The top `dense` layers are evaluated one by one; below them every `stride`-th layer is, and a layer between
    two evaluated ones takes the reach of the deeper one (the reach grows with depth, so this over-estimates
    and the search stays on the safe side). That keeps the table at a dozen exact evaluations on the paper models.
    `max_layers`: consider only that many layers below the classifier (fewer candidates, quicker analysis).
    """
    base = cost.exact(())
    sur = Surrogate(base)
    layers = list(reversed(cost.layers))[:max_layers]
    probes = [k for k in range(len(layers)) if k < dense or (k - dense) % stride == stride - 1 or
              k == len(layers) - 1]
    over, reached = 0, -1
    values: dict[int, Cost] = {}
    for k in (progress(probes) if progress else probes):
        if over >= 2:
            break
        c = values[k] = cost.exact((Item(layers[k].name, "bias"),))
        if c.peak_sram_bytes - cost.bias_bytes(layers[k].name) > limit:
            over += 1
            continue
        over, reached = 0, k
    for k in range(reached + 1):
        deeper = min(j for j in values if j >= k)  # itself when evaluated
        if values[deeper].peak_sram_bytes - cost.bias_bytes(layers[deeper].name) > limit:
            continue
        _add_layer(cost, sur, layers[k].name, values[deeper], cost.bias_bytes(layers[deeper].name))
    return sur


def _add_layer(cost: CostModel, sur: Surrogate, name: str, probe: Cost, probe_bias: int) -> None:
    sur.reach[name] = probe.peak_sram_bytes - probe_bias
    sur.reach_macs[name] = probe.macs_backward
    sur.bytes[Item(name, "bias")] = cost.bias_bytes(name)
    sur.macs[Item(name, "bias")] = 0
    for r in RATIOS:
        item = Item(name, "weight", r)
        sur.bytes[item] = cost.weight_bytes(name, r)
        sur.macs[item] = cost.weight_macs(name, r)


def graph_digest(graph: Graph) -> str:
    """A hash of the graph's structure and constants (the model part of the cache keys)."""
    h = hashlib.sha256(graph.dump().encode())
    for name in sorted(graph.tensors):
        t = graph.tensors[name]
        if t.data is not None:
            h.update(name.encode())
            h.update(np_bytes(t.data))
    return h.hexdigest()[:16]


def np_bytes(a: Any) -> bytes:
    import numpy as np

    return np.ascontiguousarray(a).tobytes()


def cost_key(cm: CostModel) -> str:
    """The key of the exact-cost cache: model, head, target, budget, options and the planner's sources."""
    h = hashlib.sha256(json.dumps([graph_digest(cm.graph), cm.head, cm.target, cm.budget,
                                   repr(cm.options), _sources_digest()]).encode())
    return h.hexdigest()[:24]


@functools.lru_cache(maxsize=1)
def _sources_digest() -> str:
    """A hash of the compiler sources the costs come from, read once per process (at the first CostModel)."""
    root = Path(__file__).resolve().parents[2]
    h = hashlib.sha256()
    for pattern in _PLANNER_SOURCES:
        for p in sorted(root.glob(pattern)):
            h.update(p.name.encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def load_memo(cm: CostModel, cache: Mapping[str, Any] | None) -> None:
    """Fill `cm`'s memo from an earlier `dump_memo` made under the same key."""
    if not cache or cache.get("key") != cm.key:
        return
    for keys, peak, macs, params in cache.get("entries", []):
        cm.memo[canonical(Item.parse(k) for k in keys)] = Cost(peak, macs, params)
    cm.over.update(canonical(Item.parse(k) for k in keys) for keys in cache.get("over", []))


def dump_memo(cm: CostModel) -> dict[str, Any]:
    """The memo of exact costs, and the schemes known to be over the budget, as JSON (for auto.json)."""
    entries = [[[i.key for i in items], c.peak_sram_bytes, c.macs_backward, c.trainable_param_bytes]
               for items, c in sorted(cm.memo.items(), key=lambda kv: [i.key for i in kv[0]])]
    over = sorted([i.key for i in items] for items in cm.over)
    return {"key": cm.key, "entries": entries, "over": over}
