"""max_pool2d -> tte_max_pool2d_s8; the train step's max_pool2d_mask (arg-max codes) and max_pool2d_grad."""

from __future__ import annotations

from codegen.ops import CCall, ConstName, Ref, emitter
from codegen.ops._common import act_fields, block, dims4, dims_literal, io, struct_literal
from tte.errors import UnsupportedError
from tte.ir import Graph, Node

SOURCE = "src/max_pool2d.c"


def _params(node: Node) -> str:
    kh, kw = (int(k) for k in node.attrs["kernel"])
    sh, sw = (int(s) for s in node.attrs["stride"])
    pt, pl = (int(p) for p in node.attrs["pad"][:2])
    fields = {"kernel_h": kh, "kernel_w": kw, "stride_h": sh, "stride_w": sw, "pad_top": pt, "pad_left": pl,
              **act_fields(node)}
    return f"static const tte_pool_params params = {struct_literal(fields)};"


def _check_quant(node: Node, graph: Graph) -> None:
    x, y = io(graph, node)
    if x.quant.s != y.quant.s or x.quant.zp != y.quant.zp:
        raise UnsupportedError("input and output quantization differ", node=node.name, op=node.op,
                               hint="TFLite's int8 MAX_POOL_2D keeps the input quantization; requantize after it")


@emitter("max_pool2d")
def max_pool2d(node: Node, graph: Graph, ref: Ref, const_name: ConstName) -> CCall:
    _check_quant(node, graph)
    x, y = io(graph, node)
    decls = [_params(node), f"static const tte_dims in_dims = {dims_literal(x.shape)}, "
                            f"out_dims = {dims_literal(y.shape)};"]
    call = f"tte_max_pool2d_s8(&params, &in_dims, {ref(x.name)}, &out_dims, {ref(y.name)});"
    return CCall(block(decls, call), [], [SOURCE])


@emitter("max_pool2d_mask")
def max_pool2d_mask(node: Node, graph: Graph, ref: Ref, const_name: ConstName) -> CCall:
    _check_quant(node, graph)
    x, y = io(graph, node)
    bits = int(node.attrs["index_bits"])
    decls = [_params(node), f"static const tte_dims in_dims = {dims_literal(x.shape)}, "
                            f"out_dims = {dims_literal(y.shape)};"]
    call = (f"tte_max_pool2d_mask_s8(&params, {bits}, &in_dims, {ref(x.name)}, &out_dims, {ref(y.name)}, "
            f"{ref(node.outputs[1])});")
    return CCall(block(decls, call), [], [SOURCE])


@emitter("max_pool2d_grad")
def max_pool2d_grad(node: Node, graph: Graph, ref: Ref, const_name: ConstName) -> CCall:
    dy, dx = io(graph, node)
    bits = int(node.attrs["index_bits"])
    decls = [_params(node), f"static const tte_dims grad_dims = {dims_literal(dims4(dy.shape))}, "
                            f"in_dims = {dims_literal(dims4(dx.shape))};"]
    call = (f"tte_max_pool2d_grad_f32(&params, {bits}, &grad_dims, {ref(dy.name)}, {ref(node.inputs[1])}, "
            f"&in_dims, {ref(dx.name)});")
    return CCall(block(decls, call), [], [SOURCE])
