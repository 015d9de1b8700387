"""fully_connected -> tte_fully_connected_s8 (per-tensor or per-channel weights)."""

from __future__ import annotations

import numpy as np

from codegen.ops import CCall, ConstName, Ref, emitter
from codegen.ops._common import (
    act_fields,
    block,
    check_limit,
    dims_literal,
    io,
    optional_ref,
    requant_arrays,
    struct_literal,
)
from tte.errors import UnsupportedError
from tte.ir import Graph, Node
from tte.quant import conv_multipliers

ACC_LIMIT = 1 << 15


@emitter("fully_connected")
def fully_connected(node: Node, graph: Graph, ref: Ref, const_name: ConstName) -> CCall:
    x, y = io(graph, node)
    w = graph[node.inputs[1]]
    o, i = w.shape
    if x.size % i:
        raise UnsupportedError(f"input of {x.size} values does not flatten to rows of {i}", node=node.name,
                               op=node.op, hint="check the weight shape [O, I]")
    if np.unique(w.quant.zero_point).size > 1:
        raise UnsupportedError("per-channel weight zero points differ", node=node.name, op=node.op,
                               hint="quantize the weights symmetrically")
    check_limit(node, "input features", i, ACC_LIMIT)
    batches = x.size // i
    m, sh = conv_multipliers(x.quant.s, w.quant.scale, y.quant.s)
    consts, quant = requant_arrays(node, const_name, m, sh, w.quant.per_channel)
    params = {"input_offset": -x.quant.zp, "filter_offset": -w.quant.zp, "output_offset": y.quant.zp,
              **act_fields(node)}
    decls = [
        f"static const tte_fc_params params = {struct_literal(params)};",
        f"static const tte_requant quant = {quant};",
        f"static const tte_dims in_dims = {dims_literal((batches, 1, 1, i))},"
        f" filter_dims = {dims_literal((o, 1, 1, i))}, out_dims = {dims_literal((batches, 1, 1, o))};",
    ]
    call = (f"tte_fully_connected_s8(&params, &quant, &in_dims, {ref(x.name)}, &filter_dims, {ref(w.name)}, "
            f"{optional_ref(node, 2, ref)}, &out_dims, {ref(y.name)});")
    return CCall(block(decls, call), consts, ["src/fully_connected.c", "src/gemm_s8.c", "src/gemm_s8_packed.c"])
