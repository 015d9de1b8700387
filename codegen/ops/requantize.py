"""requantize -> tte_requantize_s8 (int8 -> int8 with a new scale and zero point)."""

from __future__ import annotations

from codegen.ops import CCall, ConstName, Ref, emitter
from codegen.ops._common import block, check_shifts, io, struct_literal
from tte.ir import Graph, Node
from tte.ops.requantize import requantize_params


@emitter("requantize")
def requantize(node: Node, graph: Graph, ref: Ref, const_name: ConstName) -> CCall:
    x, y = io(graph, node)
    m, s = requantize_params(x.quant.s, y.quant.s)
    check_shifts(node, [s])
    params = {"input_offset": -x.quant.zp, "output_offset": y.quant.zp, "multiplier": m, "shift": s}
    decls = [f"static const tte_requantize_params params = {struct_literal(params)};"]
    call = f"tte_requantize_s8(&params, {y.size}, {ref(x.name)}, {ref(y.name)});"
    return CCall(block(decls, call), [], ["src/requantize.c"])
