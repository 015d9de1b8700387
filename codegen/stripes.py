"""The C of a `stripe_stage` node (tte/passes/stripes.py): the stage's layers, stripe by stripe, through the
ordinary kernels on sub-tensors.

Each call is the layer's own emitter (codegen.ops) applied to a one-node graph whose input and output are the
rows of the stripe: the stage input and output are addressed in place (base pointer + first row * row bytes),
the intermediates live in the node's two scratch buffers (row 0 of the buffer = the stripe's first row), and
the top/bottom padding left at a stripe's edge goes into the parameters. Constants repeated from stripe to
stripe (requantization multipliers) are emitted once (the emitter's pool).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from codegen.ops import CCall, ConstName
from codegen.ops import emit as emit_op
from tte.ir import Graph, Node
from tte.passes.stripes import call_graph, schedule

if TYPE_CHECKING:
    from codegen.emit import Pointers


def emit_stage(node: Node, graph: Graph, pointers: Pointers, const_name: ConstName) -> CCall:
    """Every stripe's kernel calls, top stripe first (constants are named after the layer, not `const_name`)."""
    sub: Graph = node.attrs["stage"].graph
    stage_in, stage_out = node.inputs[0], node.outputs[0]
    scratch = [pointers.ref(t) for t in node.outputs[1:]]
    stripes = schedule(sub, int(node.attrs["rows"]))
    lines: list[str] = []
    consts, sources = [], []
    for k, stripe in enumerate(stripes):
        for i, call in enumerate(stripe):
            x, y = f"{call.node.inputs[0]}@in", f"{call.node.outputs[0]}@out"
            refs = {x: _rows_ref(pointers, sub, stage_in, call.in_rows[0]) if i == 0 else scratch[(i - 1) % 2],
                    y: _rows_ref(pointers, sub, stage_out, call.out_rows[0]) if i == len(stripe) - 1
                    else scratch[i % 2]}
            one, g = call_graph(call, sub, x, y)

            def ref(t: str, refs: dict[str, str] = refs, g: Graph = g) -> str:
                if t in refs:
                    return refs[t]
                return pointers.const(g[t]).symbol if t and g[t].is_const else pointers.ref(t)

            c = emit_op(one, g, ref, lambda suffix, n=call.node.name: pointers.symbols.new(f"{n}_{suffix}"))
            (a, b), (r0, r1) = call.out_rows, call.in_rows
            label = call.node.name.replace("*/", "* /")
            lines.append(f"/* stripe {k + 1}/{len(stripes)}: '{label}' ({call.node.op}) rows {a}..{b - 1} from "
                         f"input rows {r0}..{r1 - 1} */")
            lines += c.lines
            consts += c.consts
            sources += [s for s in c.sources if s not in sources]
    return CCall(lines, consts, sources)


def _rows_ref(pointers: Pointers, sub: Graph, tensor: str, row: int) -> str:
    """The address of `row` of a whole NHWC tensor of the stage."""
    _, _, w, c = sub[tensor].shape
    return f"({pointers.ref(tensor)} + {row * w * c})"
