"""The C of a model with a train step: `<name>_train_step`, `<name>_infer`, the parameters' save/restore API.

Input: the train step program (`tte.train.build_training_graph`). Partially trained weights are first split
into flash + SRAM (codegen/ops/train_split.py): the whole weight stays a `const` array, the trained input
channels become a state tensor of their own. Then
- the trainable state (trained weights or their SRAM parts, trained biases, the fp32 head, the xorshift32
  PRNG state) becomes mutable static arrays (initialised data: in SRAM, the initial image in flash); every new
  value an update writes (`codegen.ops.train_update.inplace_outputs`) is the same array, updated in place;
- the whole train step (forward with masks and saved channels, loss, backward with fused updates) is planned
  by tte/passes/train_plan.py into the model's one static arena;
- `<name>_infer` runs the forward part with the current parameters (a layer with a split weight uses its mask
  kernel, the only forward kernel that reads flash + SRAM, its mask going to a scratch buffer). Its plan puts the
  graph input at the train step's offset, so `<name>_input_buffer(0)` serves both entry points; the arena is
  the larger of the two plans.
- over the SRAM budget, the frozen first layers may run in row stripes (tte/passes/stripes.py) in both entry
  points, when that makes the arena smaller;
- `<name>_params_get/_set` copy the state arrays to/from one byte blob, in `TrainCode.params` order: per
  trained layer in forward order its weight (or SRAM part) then its bias, and the PRNG state last; no padding,
  native byte order; `<name>_params_read/_write(offset, buf, count)` copy a window of that blob (chunked saving
  without a second copy in SRAM). `<name>_seed(s)` sets the PRNG state (s = 0 stands for 0x9E3779B9).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from codegen.emit import (
    CModel,
    NodeCode,
    Pointers,
    Symbols,
    base_context,
    bindings,
    check_name,
    emit_nodes,
    render,
    runtime_headers,
)
from codegen.ops.train_split import sram_view
from codegen.ops.train_update import inplace_outputs
from codegen.profile import PROFILE_FILE, profile_json
from codegen.train_layout import TRAIN_EXTERNAL, plan_layout
from codegen.weights import CTYPES, CArray, declaration, definition, make_array
from tte.errors import TteError
from tte.ir import Graph
from tte.passes.memory_plan import MemoryPlan
from tte.train import TrainingGraph
from tte.train.autodiff import RNG
from tte.train.fp32 import seed_state

TRAIN_SOURCES = ("copy.c", "train_update.c")  # the input copy; tte_state_copy for params_get/set


@dataclass(frozen=True)
class Param:
    """One trainable state array and its place in the `<name>_params_get` blob."""

    tensor: str  # the state tensor (`<w>:sram` for the trained channels of a split weight)
    symbol: str
    layer: str  # the forward node it belongs to ("" for the PRNG state)
    kind: str  # "weight", "bias" or "rng"
    dtype: str
    shape: tuple[int, ...]
    offset: int
    nbytes: int
    columns: tuple[int, ...] | None = None  # a split weight's last-axis columns of the whole weight

    def describe(self) -> str:
        cols = f", columns {len(self.columns)} of the weight's last axis" if self.columns is not None else ""
        return f"{self.kind} of '{self.layer}'{cols}" if self.layer else "xorshift32 PRNG state"


@dataclass(frozen=True)
class TrainCode:
    """What the train build emitted beyond inference."""

    program: TrainingGraph  # after the flash + SRAM split
    infer_graph: Graph  # what `<name>_infer` runs
    plan: MemoryPlan  # the train step's arena plan
    infer_plan: MemoryPlan
    nodes: tuple[NodeCode, ...]
    params: tuple[Param, ...]
    state_arrays: tuple[CArray, ...]
    default_seed: int  # the PRNG state before any `<name>_seed` call
    classes: int

    @property
    def params_bytes(self) -> int:
        return sum(p.nbytes for p in self.params)

    @property
    def trainable_param_bytes(self) -> int:
        return sum(p.nbytes for p in self.params if p.kind != "rng")

    @property
    def rng_bytes(self) -> int:
        return sum(p.nbytes for p in self.params if p.kind == "rng")


def _params(tg: TrainingGraph, home: dict[str, str], symbols: Symbols) -> list[Param]:
    """The state arrays in params order (forward order of their layers, weight before bias, PRNG last)."""
    g = tg.graph
    position = {n.name: i for i, n in enumerate(g.nodes[:tg.num_forward])}
    owner: dict[str, tuple[str, str]] = {}
    for node in tg.backward_nodes():
        pairs = inplace_outputs(node)
        if pairs:
            kind = "bias" if node.op.startswith("bias") else "weight"
            owner.setdefault(home[pairs[0][0]], (node.name.rsplit("/", 1)[0], kind))
    order = sorted(owner, key=lambda t: (position[owner[t][0]], owner[t][1] != "weight", t))
    if RNG in tg.state_names:
        order.append(RNG)
    params, offset = [], 0
    for t in order:
        tensor = g[t]
        layer, kind = owner.get(t, ("", "rng"))
        view = sram_view(g, t)
        columns = tuple(int(c) for c in view[1]) if view else None
        params.append(Param(t, symbols.new(t), layer, kind, tensor.dtype, tensor.shape, offset, tensor.nbytes,
                            columns))
        offset += tensor.nbytes
    return params


def _state_array(p: Param, graph: Graph) -> CArray:
    data = np.asarray(graph[p.tensor].data)
    if p.kind == "rng":
        return make_array(p.symbol, "uint32_t", data.view(np.uint32), "xorshift32 PRNG state (trainable: SRAM)")
    return make_array(p.symbol, CTYPES[p.dtype], data, f"{p.describe()}: {p.dtype}{list(p.shape)} (trainable: SRAM)")


def emit_train(program: TrainingGraph, name: str, source: str = "", budget: int | None = None,
               reserve: int = 0) -> CModel:
    """The C files of a model with a train step (see the module docstring).

    `budget`: the SRAM the whole model may take, `reserve` of it being for the stack; when the plain plan
    exceeds it, the first layers run in row stripes if that helps (tte/passes/stripes.py).
    """
    check_name(name)
    if len(program.forward.inputs) != 1:
        raise TteError(f"the model has {len(program.forward.inputs)} inputs; the train step takes one",
                       hint="train a single-input model")
    layout = plan_layout(program, name, budget, reserve)
    planned, home, external = layout.planned, layout.home, layout.external
    tg, infer, tplan, iplan = planned.tg, planned.infer, planned.plan, planned.infer_plan
    inputs, outputs = bindings(infer, name)
    g, x = tg.graph, tg.graph.inputs[0].tensor

    symbols, arrays, pool = Symbols(name), {}, {}
    params = _params(tg, home, symbols)
    symbol_of = {p.tensor: p.symbol for p in params}
    state = {t: symbol_of[s] for t, s in home.items()}
    ipointers = Pointers(infer, name, iplan, external, symbols, arrays, state, pool)
    tpointers = Pointers(g, name, tplan, dict(TRAIN_EXTERNAL), symbols, arrays, state, pool)
    icodes, iextra, isources = emit_nodes(infer, ipointers)
    tcodes, textra, tsources = emit_nodes(g, tpointers)
    slot = tpointers.ref(x)
    assert ipointers.ref(x) == slot, "the input must have one place in the arena"

    const_arrays = (*arrays.values(), *iextra, *textra)
    states = tuple(_state_array(p, g) for p in params)
    classes = int(np.prod(g[tg.logits].shape))
    code = TrainCode(tg, infer, tplan, iplan, tuple(tcodes), tuple(params), states,
                     seed_state(tg.options.seed), classes)
    ctx = base_context(name, source or program.forward.name, planned.arena, inputs, outputs, icodes, const_arrays,
                       [ipointers.ref(b.spec.tensor) for b in inputs])
    ctx["train"] = _train_context(code, name, slot, g[x].size)
    sources = sorted({*TRAIN_SOURCES, *isources, *tsources})
    files = render(ctx)
    files[PROFILE_FILE] = profile_json(name, (icodes, infer), (tcodes, g))
    return CModel(name, files, tuple(sources), runtime_headers(), const_arrays, tplan, inputs, outputs,
                  tuple(icodes), code, infer)


def train_signature(name: str) -> str:
    return f"float {name}_train_step(const int8_t *x, int32_t label, float lr)"


def train_cdefs(name: str) -> list[str]:
    """The C prototypes of the train API (cffi declares them)."""
    return [train_signature(name), f"void {name}_params_get(uint8_t *dst)",
            f"void {name}_params_set(const uint8_t *src)", f"void {name}_seed(uint32_t seed)",
            f"void {name}_params_read(uint32_t offset, uint8_t *dst, uint32_t count)",
            f"void {name}_params_write(uint32_t offset, const uint8_t *src, uint32_t count)"]


def _train_context(code: TrainCode, name: str, slot: str, input_size: int) -> dict:
    rng = next((p.symbol for p in code.params if p.kind == "rng"), None)
    return dict(
        signature=train_signature(name), nodes=code.nodes, slot=slot, input_size=input_size,
        params=code.params, params_bytes=code.params_bytes, rng=rng, default_seed=code.default_seed,
        classes=code.classes, arena_bytes=code.plan.arena_bytes, infer_arena_bytes=code.infer_plan.arena_bytes,
        state_declarations=[declaration(a, const=False) for a in code.state_arrays],
        state_definitions=[definition(a, const=False) for a in code.state_arrays],
        state_bytes=sum(a.nbytes for a in code.state_arrays), update_spec=code.program.spec.text,
        head=code.program.options.head, rounding=code.program.options.rounding,
    )
