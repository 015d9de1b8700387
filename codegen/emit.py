"""The C emitter: an IR graph and its memory plan in, `<name>.h`, `<name>.c`, `<name>_weights.c` out.

The generated model has one static arena (activations, placed by the memory planner), frozen weights as typed
`const` arrays (flash), and one entry point `int <name>_infer(const int8_t *input, int8_t *output)` that calls
one runtime kernel per node, onnx2c style, each with a comment naming the source node, op and shapes.
Graph inputs live in the arena (their bytes are reused once the first layers have read them): `<name>_infer`
copies the caller's input there, unless the caller wrote it in place through `<name>_input_buffer(i)`. Graph
outputs are written straight into the caller's buffers.
Every symbol starts with the model name, so several models link into one binary. The same graph always gives
byte-identical files. A build with a train step (codegen/emit_train.py) adds `<name>_train_step` and the
trainable parameters as mutable SRAM arrays, through the same helpers and templates.

The op -> C binding is `codegen.ops.emit(node, graph, ref, const_name)`: `ref(tensor)` is the C pointer
expression chosen here, `const_name(suffix)` a unique symbol for a constant the binding adds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2

from codegen.profile import PROFILE_FILE, profile_json
from codegen.weights import CTYPES, CArray, declaration, definition, make_array
from tte import ops
from tte.errors import TteError
from tte.ir import Graph, IOSpec, Node, Tensor
from tte.passes.memory_plan import MemoryPlan, alias_roots, plan_graph
from tte.passes.stripes import STAGE_OP, pick_stage, with_stage

if TYPE_CHECKING:
    from codegen.emit_train import TrainCode

RUNTIME_DIR = Path(__file__).resolve().parents[1] / "runtime_c"
TEMPLATES = Path(__file__).resolve().parent / "templates"
ARENA_ALIGNMENT = 16
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@dataclass(frozen=True)
class IOBinding:
    """A graph input or output as the C entry point sees it: a parameter pointing to an int8 NHWC buffer."""

    param: str  # C parameter name: input / output, or input0, input1, ... when there are several
    macro: str  # header constant prefix: <NAME>_INPUT, <NAME>_OUTPUT0, ...
    spec: IOSpec
    shape: tuple[int, ...]
    dtype: str
    scale: float
    zero_point: int

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        return self.size * (4 if self.dtype == "float32" else 1)


@dataclass(frozen=True)
class NodeCode:
    """The C emitted for one node: its comment and statements, and the const bytes it brings."""

    node: Node
    comment: str
    lines: tuple[str, ...]
    const_bytes: int


@dataclass(frozen=True)
class CModel:
    """Everything the emitter produced for one graph; `files` maps file names to their text."""

    name: str
    files: dict[str, str]
    runtime_sources: tuple[str, ...]
    runtime_headers: tuple[str, ...]
    arrays: tuple[CArray, ...]
    plan: MemoryPlan
    inputs: tuple[IOBinding, ...]
    outputs: tuple[IOBinding, ...]
    nodes: tuple[NodeCode, ...] = field(default=())
    train: TrainCode | None = None  # the train step of a build with --update (codegen/emit_train.py)
    graph: Graph | None = None  # the graph emitted (a striped first stage replaces layers)

    @property
    def const_bytes(self) -> int:
        return sum(a.nbytes for a in self.arrays)

    @property
    def io_bytes(self) -> int:
        """Bytes of the caller's output buffers (inputs live in the arena)."""
        return sum(b.nbytes for b in self.outputs)


def check_name(name: str) -> str:
    """The model name must be a C identifier: it prefixes every symbol of the generated C."""
    if not _IDENT.match(name):
        raise TteError(f"model name '{name}' is not a C identifier", hint="pass --name with letters, digits and _")
    return name


def c_identifier(text: str) -> str:
    """A C identifier made from any text (tensor and node names of the source model)."""
    ident = re.sub(r"[^A-Za-z0-9_]", "_", text).strip("_") or "t"
    return ident if not ident[0].isdigit() else "_" + ident


class Symbols:
    """Hands out unique C symbols under the model's prefix, deterministically (first come, first named)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.used: set[str] = set()

    def new(self, base: str) -> str:
        stem = f"{self.prefix}_{c_identifier(base)}"
        symbol, k = stem, 2
        while symbol in self.used:
            symbol, k = f"{stem}_{k}", k + 1
        self.used.add(symbol)
        return symbol


def bindings(graph: Graph, name: str) -> tuple[tuple[IOBinding, ...], tuple[IOBinding, ...]]:
    """The C parameters of the graph inputs and outputs (int8; an fp32 classifier head's output is float)."""

    def make(specs: tuple[IOSpec, ...], kind: str) -> tuple[IOBinding, ...]:
        out = []
        for i, spec in enumerate(specs):
            suffix = "" if len(specs) == 1 else str(i)
            t = graph[spec.tensor]
            macro = f"{name.upper()}_{kind.upper()}{suffix}"
            if kind == "output" and t.dtype == "float32":  # real values already: scale 1, zero point 0
                out.append(IOBinding(kind + suffix, macro, spec, t.shape, t.dtype, 1.0, 0))
                continue
            if t.dtype != "int8" or t.quant is None or t.quant.per_channel:
                raise TteError(f"graph {kind} '{spec.tensor}' is {t.dtype}, not per-tensor int8",
                               hint="quantize the model to full int8 (tte quantize)")
            out.append(IOBinding(kind + suffix, macro, spec, t.shape, t.dtype, t.quant.s, t.quant.zp))
        return tuple(out)

    return make(graph.inputs, "input"), make(graph.outputs, "output")


def copy_nodes(graph: Graph) -> set[str]:
    """Alias (reshape) nodes that must copy: their chain would put a graph output on an input or another output."""
    roots = alias_roots(graph)
    ins = {io.tensor for io in graph.inputs}
    claimed: set[str] = set()
    copies: set[str] = set()
    for io in graph.outputs:
        root = roots.get(io.tensor, io.tensor)
        if root == io.tensor:
            claimed.add(root)
            continue
        if root in ins or root in claimed or root in {o.tensor for o in graph.outputs}:
            producer = graph.producer(io.tensor)
            assert producer is not None
            copies.add(producer.name)
        else:
            claimed.add(root)
    return copies


class Pointers:
    """Maps tensors to C pointer expressions: caller buffers, arena offsets, const symbols or SRAM state arrays.

    `state` maps trainable tensors (and the new values written in place) to their mutable arrays. Several
    entry points of one model share `symbols` and `arrays`, so a frozen weight is defined once.
    """

    def __init__(self, graph: Graph, name: str, plan: MemoryPlan, external: dict[str, str],
                 symbols: Symbols | None = None, arrays: dict[str, CArray] | None = None,
                 state: dict[str, str] | None = None, pool: dict[tuple, str] | None = None) -> None:
        self.graph, self.name, self.plan, self.external = graph, name, plan, external
        self.symbols = symbols if symbols is not None else Symbols(name)
        self.arrays: dict[str, CArray] = arrays if arrays is not None else {}  # tensor -> its const array
        self.state = state or {}
        self.pool: dict[tuple, str] = pool if pool is not None else {}  # per-node constants by content

    def ref(self, tensor: str) -> str:
        if not tensor:
            return "NULL"
        if tensor in self.state:
            return self.state[tensor]
        if tensor not in self.graph.tensors:  # a kernel's scratch buffer of the plan (tte/passes/inplace.py)
            return f"(void *)({self.name}_arena + {self.plan.offset(tensor)})"
        t = self.graph[tensor]
        if t.is_const:
            return self.const(t).symbol
        if tensor in self.external:
            return self.external[tensor]
        ctype = CTYPES[t.dtype]
        return f"({ctype} *)({self.name}_arena + {self.plan.offset(tensor)})"

    def const(self, t: Tensor) -> CArray:
        """The const array of a constant tensor (defined once, on first use)."""
        if t.name not in self.arrays:
            comment = f"{t.name}: {t.dtype}{list(t.shape)}"
            self.arrays[t.name] = make_array(self.symbols.new(t.name), CTYPES[t.dtype], t.data, comment)
        return self.arrays[t.name]


def external_tensors(graph: Graph, outputs: tuple[IOBinding, ...], copies: set[str]) -> dict[str, str]:
    """Tensors living in the caller's buffers: the graph outputs and every tensor aliased to one."""
    where = {b.spec.tensor: b.param for b in outputs}
    roots = alias_roots(graph, copies)
    for io in outputs:  # the root of an aliased output is computed straight into the caller's buffer
        root = roots.get(io.spec.tensor, io.spec.tensor)
        where.setdefault(root, io.param)
    for tensor, root in roots.items():
        if root in where:
            where.setdefault(tensor, where[root])
    return where


def _describe(graph: Graph, node: Node) -> str:
    def shape(t: str) -> str:
        return f"{t}{list(graph[t].shape)}".replace(" ", "")

    ins = ", ".join(shape(t) for t in node.inputs if t and not graph[t].is_const)
    outs = ", ".join(shape(t) for t in node.outputs)
    text = f"node '{node.name}' ({node.op}): {ins} -> {outs}"
    return text.replace("*/", "* /")  # a source name must not close the comment


def _emit_node(node: Node, graph: Graph, pointers: Pointers) -> tuple[NodeCode, list[CArray], list[str]]:
    from codegen import ops as op_table  # the op -> C table (imported late: it is written in parallel)

    before = set(pointers.arrays)
    symbols = pointers.symbols
    node_base = c_identifier(node.name)

    def const_name(suffix: str) -> str:
        return symbols.new(f"{node_base}_{suffix}")

    if node.op == STAGE_OP:
        from codegen.stripes import emit_stage

        call = emit_stage(node, graph, pointers, const_name)
    else:
        call = op_table.emit(node, graph, pointers.ref, const_name)
    lines, extra = list(call.lines), []
    for c in call.consts:
        arr = make_array(c.name, c.ctype, c.values, f"node '{node.name}' ({node.op})")
        key = (arr.ctype, arr.values.tobytes())
        if key in pointers.pool:  # the same constants as an earlier node's: use those (flash)
            pattern = re.compile(rf"\b{re.escape(arr.symbol)}\b")
            lines = [pattern.sub(pointers.pool[key], line) for line in lines]
            continue
        pointers.pool[key] = arr.symbol
        extra.append(arr)
    mine = [pointers.arrays[t] for t in pointers.arrays if t not in before]
    nbytes = sum(a.nbytes for a in (*extra, *mine))
    code = NodeCode(node, _describe(graph, node), tuple(lines), nbytes)
    return code, extra, [Path(s).name for s in call.sources]


def _environment() -> jinja2.Environment:
    loader = jinja2.FileSystemLoader(str(TEMPLATES))
    return jinja2.Environment(loader=loader, keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True,
                              undefined=jinja2.StrictUndefined, autoescape=False)


def runtime_headers() -> tuple[str, ...]:
    """Every runtime header (all are copied into the output: they are small and include each other)."""
    return tuple(sorted(p.name for p in (RUNTIME_DIR / "include").glob("*.h")))


def _includes() -> tuple[str, ...]:
    """What the model's C includes: the runtime's umbrella header when there is one."""
    headers = runtime_headers()
    return ("tte_runtime.h",) if "tte_runtime.h" in headers else headers


def emit_nodes(graph: Graph, pointers: Pointers) -> tuple[list[NodeCode], list[CArray], list[str]]:
    """The C of every node of `graph` in order: codes, the per-node constant arrays, the runtime sources."""
    codes, extra_arrays, sources = [], [], []
    for node in graph.nodes:
        if node.op not in ops.OPS:
            raise TteError("op is not supported", node=node.name, op=node.op)
        code, extra, srcs = _emit_node(node, graph, pointers)
        codes.append(code)
        extra_arrays += extra
        sources += [s for s in srcs if s not in sources]
    return codes, extra_arrays, sources


def _plan_inference(graph: Graph, outputs: tuple[IOBinding, ...]) -> tuple[MemoryPlan, dict[str, str]]:
    copies = copy_nodes(graph)
    external = external_tensors(graph, outputs, copies)
    return plan_graph(graph, ARENA_ALIGNMENT, external=external, copies=copies), external


def emit_c(graph: Graph, name: str, source: str = "", budget: int | None = None, reserve: int = 0) -> CModel:
    """Generate the C files of an inference graph under the symbol prefix `name` (see the module docstring).

    `budget`: the SRAM the model may take, `reserve` of it being for the stack; when the plan exceeds it, the
    first layers run in row stripes if that helps (tte/passes/stripes.py).
    """
    check_name(name)
    inputs, outputs = bindings(graph, name)
    plan, external = _plan_inference(graph, outputs)
    io_bytes = sum(b.nbytes for b in outputs)
    if budget is not None and plan.arena_bytes + io_bytes + reserve > budget:
        def option(node: Node, scratch: dict, *later: tuple[Node, dict]
                   ) -> tuple[tuple[Graph, MemoryPlan, dict[str, str]], int]:
            staged = graph
            for n, s in ((node, scratch), *later):  # one stripe stage, or a few in a row
                staged = with_stage(staged, n, s)
            p, ext = _plan_inference(staged, outputs)
            return (staged, p, ext), p.arena_bytes

        best = pick_stage(graph, set(), option, budget - io_bytes - reserve)
        if best is not None and best[1] < plan.arena_bytes:
            graph, plan, external = best[0]
    pointers = Pointers(graph, name, plan, external)
    codes, extra_arrays, srcs = emit_nodes(graph, pointers)
    sources = ["copy.c", *(s for s in srcs if s != "copy.c")]  # copy.c: the input copy
    arrays = (*pointers.arrays.values(), *extra_arrays)
    slots = [pointers.ref(b.spec.tensor) for b in inputs]
    ctx = base_context(name, source or graph.name, plan.arena_bytes, inputs, outputs, codes, arrays, slots)
    files = render(ctx)
    files[PROFILE_FILE] = profile_json(name, (codes, graph))
    return CModel(name, files, tuple(sorted(sources)), runtime_headers(), tuple(arrays), plan, inputs, outputs,
                  tuple(codes), graph=graph)


def base_context(name: str, source: str, arena_bytes: int, inputs: tuple[IOBinding, ...],
                 outputs: tuple[IOBinding, ...], codes: list[NodeCode], arrays: tuple[CArray, ...],
                 slots: list[str]) -> dict[str, Any]:
    """What the templates need for the inference part of a model (a train build adds `train`)."""
    return dict(
        name=name, guard=f"{name.upper()}_H", source=source, inputs=inputs, outputs=outputs,
        arena_bytes=arena_bytes, alignment=ARENA_ALIGNMENT, nodes=codes, headers=_includes(),
        declarations=[declaration(a) for a in arrays], definitions=[definition(a) for a in arrays],
        const_bytes=sum(a.nbytes for a in arrays), float_literal=_float_literal,
        signature=signature(name, inputs, outputs), input_slots=list(zip(inputs, slots, strict=True)), train=None,
    )


def render(ctx: dict[str, Any]) -> dict[str, str]:
    """`<name>.h`, `<name>.c` and `<name>_weights.c` from the templates."""
    env = _environment()
    name = ctx["name"]
    return {
        f"{name}.h": env.get_template("model.h.j2").render(ctx),
        f"{name}.c": env.get_template("model.c.j2").render(ctx),
        f"{name}_weights.c": env.get_template("weights.c.j2").render(ctx),
    }


def signature(name: str, inputs: tuple[IOBinding, ...], outputs: tuple[IOBinding, ...]) -> str:
    """The C prototype of the entry point (without the trailing semicolon); cffi uses it too."""
    params = [f"const int8_t *{b.param}" for b in inputs] + [f"{CTYPES[b.dtype]} *{b.param}" for b in outputs]
    return f"int {name}_infer({', '.join(params)})"


def _float_literal(v: float) -> str:
    return f"{v:.9g}f" if "e" in f"{v:.9g}" or "." in f"{v:.9g}" else f"{v:.9g}.0f"

