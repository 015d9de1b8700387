"""reshape (no code: an alias), pad -> tte_pad_s8, transpose -> tte_transpose_s8."""

from __future__ import annotations

from codegen.ops import CCall, ConstName, Ref, emitter
from codegen.ops._common import block, dims4, dims_literal, io, struct_literal
from tte.errors import UnsupportedError
from tte.ir import Graph, Node, Tensor


def _rank4(node: Node, t: Tensor) -> tuple[int, int, int, int]:
    if len(t.shape) > 4:
        raise UnsupportedError(f"rank {len(t.shape)} tensor {t.name}", node=node.name, op=node.op,
                               hint="the runtime handles up to 4-D tensors")
    return dims4(t.shape)


@emitter("reshape")
def reshape(node: Node, graph: Graph, ref: Ref, const_name: ConstName) -> CCall:
    """No code when the caller aliases the output to the input (the planner does: OpDef.inplace_alias);
    a copy only if the two live in different buffers."""
    x, y = io(graph, node)
    src, dst = ref(x.name), ref(y.name)
    if src == dst:
        return CCall([f"/* reshape: {y.name} is {x.name} as {list(y.shape)} (same bytes, no code) */"])
    # Byte copy: reshape also carries fp32 gradients on the backward path (nbytes, not elements).
    return CCall([f"tte_copy_s8({y.nbytes}, (const int8_t *){src}, (int8_t *){dst});"], [], ["src/copy.c"])


@emitter("pad")
def pad(node: Node, graph: Graph, ref: Ref, const_name: ConstName) -> CCall:
    x, y = io(graph, node)
    pads = [(0, 0)] * (4 - len(x.shape)) + [tuple(int(v) for v in p) for p in node.attrs["pads"]]
    value = int(node.attrs.get("value", y.quant.zp))
    if len(pads) != 4 or min(min(p) for p in pads) < 0:
        raise UnsupportedError(f"pads {node.attrs['pads']}", node=node.name, op=node.op,
                               hint="only non-negative pads of up to 4-D tensors are supported")
    before = "{" + ", ".join(str(p[0]) for p in pads) + "}"
    after = "{" + ", ".join(str(p[1]) for p in pads) + "}"
    decls = [
        f"static const tte_pad_params params = {struct_literal({'before': before, 'after': after, 'value': value})};",
        f"static const tte_dims in_dims = {dims_literal(_rank4(node, x))}, out_dims = {dims_literal(_rank4(node, y))};",
    ]
    call = f"tte_pad_s8(&params, &in_dims, {ref(x.name)}, &out_dims, {ref(y.name)});"
    return CCall(block(decls, call), [], ["src/pad.c"])


@emitter("transpose")
def transpose(node: Node, graph: Graph, ref: Ref, const_name: ConstName) -> CCall:
    x, y = io(graph, node)
    kernels = {"int8": "tte_transpose_s8", "float32": "tte_transpose_f32"}
    if x.dtype not in kernels:
        raise UnsupportedError(f"{x.dtype} transpose", node=node.name, op=node.op,
                               hint="the runtime transposes int8 activations and float32 gradients")
    lead = 4 - len(x.shape)
    perm = list(range(lead)) + [int(p) % len(x.shape) + lead for p in node.attrs["perm"]]
    decls = [
        f"static const tte_transpose_params params = {{{{{', '.join(map(str, perm))}}}}};",
        f"static const tte_dims in_dims = {dims_literal(_rank4(node, x))}, out_dims = {dims_literal(_rank4(node, y))};",
    ]
    call = f"{kernels[x.dtype]}(&params, &in_dims, {ref(x.name)}, &out_dims, {ref(y.name)});"
    return CCall(block(decls, call), [], ["src/transpose.c"])
