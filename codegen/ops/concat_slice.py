"""concat -> tte_concat_s8, slice -> tte_slice_s8."""

from __future__ import annotations

import numpy as np

from codegen.ops import CCall, ConstName, Ref, emitter
from codegen.ops._common import block, dims4, dims_literal, io
from tte.errors import UnsupportedError
from tte.ir import Graph, Node


@emitter("concat")
def concat(node: Node, graph: Graph, ref: Ref, const_name: ConstName) -> CCall:
    y = graph[node.outputs[0]]
    axis = int(node.attrs["axis"]) % len(y.shape)
    outer = int(np.prod(y.shape[:axis], dtype=np.int64))
    inner = int(np.prod(y.shape[axis + 1:], dtype=np.int64))
    sizes = [graph[t].shape[axis] * inner for t in node.inputs]
    decls = [f"const int8_t *const inputs[{len(sizes)}] = {{{', '.join(ref(t) for t in node.inputs)}}};",
             f"static const int32_t copy_sizes[{len(sizes)}] = {{{', '.join(map(str, sizes))}}};"]
    call = f"tte_concat_s8({len(sizes)}, inputs, copy_sizes, {outer}, {ref(y.name)});"
    return CCall(block(decls, call), [], ["src/concat.c"])


@emitter("slice")
def slice_(node: Node, graph: Graph, ref: Ref, const_name: ConstName) -> CCall:
    x, y = io(graph, node)
    if len(x.shape) > 4:
        raise UnsupportedError(f"rank {len(x.shape)} slice", node=node.name, op=node.op, hint="slice up to 4-D")
    lead = 4 - len(x.shape)
    begin = [0] * lead + [int(b) for b in node.attrs["begin"]]
    strides = [1] * lead + [int(s) for s in (node.attrs.get("strides") or (1,) * len(x.shape))]
    decls = [f"static const tte_slice_params params = {{{dims_literal(begin)}, {dims_literal(strides)}}};",
             f"static const tte_dims in_dims = {dims_literal(dims4(x.shape))}, "
             f"out_dims = {dims_literal(dims4(y.shape))};"]
    call = f"tte_slice_s8(&params, &in_dims, {ref(x.name)}, &out_dims, {ref(y.name)});"
    return CCall(block(decls, call), [], ["src/concat.c"])
