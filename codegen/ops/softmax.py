"""softmax -> tte_softmax_s8 (TFLite Micro's int8 SOFTMAX over the last axis, output q(1/256, -128))."""

from __future__ import annotations

from codegen.ops import CCall, ConstName, Ref, emitter
from codegen.ops._common import block, io, struct_literal
from tte.errors import UnsupportedError
from tte.ir import Graph, Node
from tte.ops.softmax import node_params

MAX_DEPTH = 4095  # the kernel's Q12.19 sum of exps (each <= 2^19) must not wrap


@emitter("softmax")
def softmax(node: Node, graph: Graph, ref: Ref, const_name: ConstName) -> CCall:
    x, y = io(graph, node)
    p = node_params(node, graph)  # checks the output quantization: a TteError naming the node
    depth = x.shape[-1] if x.shape else 1
    if depth > MAX_DEPTH:
        raise UnsupportedError(
            f"softmax over {depth} values (at most {MAX_DEPTH})",
            node=node.name,
            op=node.op,
            hint="the runtime's fixed-point sum would overflow; split the classes",
        )
    params = {"input_multiplier": p.input_multiplier, "input_left_shift": p.input_left_shift, "diff_min": p.diff_min}
    decls = [f"static const tte_softmax_params params = {struct_literal(params)};"]
    call = f"tte_softmax_s8(&params, {x.size // depth}, {depth}, {ref(x.name)}, {ref(y.name)});"
    return CCall(block(decls, call), [], ["src/softmax.c"])
