"""conv2d and depthwise_conv2d -> tte_conv2d[_1x1]_s8, tte_depthwise_conv2d[_3x3|_inplace]_s8."""

from __future__ import annotations

from codegen.ops import CCall, ConstName, Ref, depthwise_inplace, emitter
from codegen.ops._common import (
    act_fields,
    block,
    check_limit,
    check_symmetric,
    dims_literal,
    io,
    optional_ref,
    requant_arrays,
    struct_literal,
)
from tte.ir import Graph, Node
from tte.quant import conv_multipliers

ACC_LIMIT = 1 << 15  # taps per output of the offset dot products (tte_dot.h)

SOURCES = {
    "tte_conv2d_s8": ("src/conv2d.c", "src/conv2d_wide.c", "src/conv2d_wide_out.c"),
    "tte_conv2d_1x1_s8": ("src/conv2d_1x1.c", "src/gemm_s8.c", "src/gemm_s8_packed.c"),
    "tte_depthwise_conv2d_s8": ("src/depthwise_conv2d.c", "src/depthwise_runs.c", "src/depthwise_runs_layer.c"),
    "tte_depthwise_conv2d_3x3_s8": ("src/depthwise_conv2d.c", "src/depthwise_runs.c", "src/depthwise_runs_layer.c"),
}


def _geometry(node: Node) -> dict[str, int]:
    sh, sw = node.attrs["stride"]
    pt, pl, _, _ = node.attrs["pad"]
    return {"stride_h": int(sh), "stride_w": int(sw), "pad_top": int(pt), "pad_left": int(pl)}


def _conv_call(node: Node, graph: Graph, ref: Ref, const_name: ConstName, fn: str, params_type: str,
               params: dict[str, int]) -> CCall:
    x, y = io(graph, node)
    w = graph[node.inputs[1]]
    check_symmetric(node, w)
    m, sh = conv_multipliers(x.quant.s, w.quant.scale, y.quant.s)
    consts, quant = requant_arrays(node, const_name, m, sh, w.quant.per_channel)
    decls = [
        f"static const {params_type} params = {struct_literal(params)};",
        f"static const tte_requant quant = {quant};",
        f"static const tte_dims in_dims = {dims_literal(x.shape)}, filter_dims = {dims_literal(w.shape)},"
        f" out_dims = {dims_literal(y.shape)};",
    ]
    call = (f"{fn}(&params, &quant, &in_dims, {ref(x.name)}, &filter_dims, {ref(w.name)}, "
            f"{optional_ref(node, 2, ref)}, &out_dims, {ref(y.name)});")
    return CCall(block(decls, call), consts, list(SOURCES[fn]))


@emitter("conv2d")
def conv2d(node: Node, graph: Graph, ref: Ref, const_name: ConstName) -> CCall:
    x, y = io(graph, node)
    _, kh, kw, cin = graph[node.inputs[1]].shape
    check_limit(node, "kernel taps x input channels", kh * kw * cin, ACC_LIMIT)
    params = {"input_offset": -x.quant.zp, "output_offset": y.quant.zp, **_geometry(node), **act_fields(node)}
    pointwise = (kh, kw) == (1, 1) and not any(node.attrs["pad"])
    fn = "tte_conv2d_1x1_s8" if pointwise else "tte_conv2d_s8"
    return _conv_call(node, graph, ref, const_name, fn, "tte_conv_params", params)


@emitter("depthwise_conv2d")
def depthwise_conv2d(node: Node, graph: Graph, ref: Ref, const_name: ConstName) -> CCall:
    x, y = io(graph, node)
    _, kh, kw, _ = graph[node.inputs[1]].shape
    mult = int(node.attrs["multiplier"])
    params = {"input_offset": -x.quant.zp, "output_offset": y.quant.zp, **_geometry(node), "ch_mult": mult,
              **act_fields(node)}
    scratch = depthwise_inplace.inplace_scratch(node, ref)
    if scratch is not None:  # the memory plan put the output over the input
        return depthwise_inplace.forward(node, graph, ref, const_name, params, scratch)
    fn = "tte_depthwise_conv2d_3x3_s8" if (kh, kw, mult) == (3, 3, 1) else "tte_depthwise_conv2d_s8"
    return _conv_call(node, graph, ref, const_name, fn, "tte_dw_conv_params", params)
