"""The C of a `stripe_stage` node (tte/passes/stripes.py): the stage's layers, stripe by stripe, through the
ordinary kernels on sub-tensors.

Each call is the layer's own emitter (codegen.ops) applied to a one-node graph whose input and output are the
rows of the stripe: the stage input and output are addressed in place (base pointer + first row * row bytes),
the intermediates live in the node's scratch slots (row 0 of a slot = the first row its tensor keeps in the
stripe; an add reads its rows of a residual input further on; a rolling stage first moves the rows it keeps
down to row 0, `tte_rows_shift_s8`), and the top/bottom padding left at a stripe's edge goes into the
parameters. Constants repeated from stripe to stripe (requantization multipliers) are emitted once (the
emitter's pool).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from codegen.ops import CCall, ConstName
from codegen.ops import emit as emit_op
from tte.ir import Graph, Node
from tte.passes.stripe_schedule import call_graph, data_inputs, line_buffers, row_bytes, scratch_slots
from tte.passes.stripes import stripe_mode

if TYPE_CHECKING:
    from codegen.emit import Pointers


def emit_stage(node: Node, graph: Graph, pointers: Pointers, const_name: ConstName) -> CCall:
    """Every stripe's kernel calls, top stripe first (constants are named after the layer, not `const_name`)."""
    sub: Graph = node.attrs["stage"].graph
    rows, rolling = stripe_mode(node)
    stage_in, stage_out = node.inputs[0], node.outputs[0]
    slots = [pointers.ref(t) for t in node.outputs[1:]]
    slot_of, _ = scratch_slots(sub, rows, rolling)
    lb = line_buffers(sub, rows, rolling)
    stripes = lb.calls
    lines: list[str] = []
    consts, sources = [], ["src/copy.c"] if any(lb.shifts) else []
    for k, stripe in enumerate(stripes):
        first_row = lb.base[k]  # the whole-tensor row at a slot's row 0 in this stripe
        for t, drop, keep in lb.shifts[k]:
            rb = row_bytes(sub, t)
            lines.append(f"tte_rows_shift_s8({drop * rb}, {keep * rb}, {slots[slot_of[t]]}); "
                         f"/* '{t}': keep rows {first_row[t]}..{first_row[t] + keep - 1} */")

        def rows_of(t: str, row: int, first_row: dict[str, int] = first_row) -> str:
            """The address of whole-tensor row `row` of a stage tensor in this stripe."""
            if t in (stage_in, stage_out):
                return _rows_ref(pointers, sub, t, row)
            skip = (row - first_row[t]) * row_bytes(sub, t)
            return f"({slots[slot_of[t]]} + {skip})" if skip else slots[slot_of[t]]

        for call in stripe:
            one, g = call_graph(call, sub)
            refs = {f"{t}@in": rows_of(t, call.in_rows[0]) for t in data_inputs(call.node)}
            refs[f"{call.node.outputs[0]}@out"] = rows_of(call.node.outputs[0], call.out_rows[0])

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
    return f"({pointers.ref(tensor)} + {row * row_bytes(sub, tensor)})"
