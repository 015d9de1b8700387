"""Forward ops of the train step -> C: mask-emitting variants, gather_channels, the fp32 head.

Emitter contracts (tensors by input/output index; attributes as tte/train builds them):
- `conv2d_mask` / `depthwise_conv2d_mask` / `fully_connected_mask`: inputs (x, w, b or '', [w_sram]), outputs
  (y, mask uint8[(y.size + 7) // 8]); attributes of the base op. With a 4th input the weight is split
  (train_split.py): `w` is the whole compiled weight (flash), `w_sram` its trained input channels, named by
  the attribute `sram_channels` -> tte_<op>_mask_s8 with a `tte_weight_part`, else with NULL.
- `add_mask` (tte_add_lut_mask_s8 from LUT_MIN_SIZE elements on, as the forward add), `requantize_mask`,
  `avg_pool2d_mask`, `mean_mask`: inputs and attributes of the base op, outputs (y, mask).
- `gather_channels`: (x) -> (saved), attribute `channels` -> tte_gather_channels_s8.
- `fully_connected_f32` (the fp32 head): (x int8, w float32[O, I], b float32[O]) -> y float32
  -> tte_fully_connected_s8_f32.
"""

from __future__ import annotations

import numpy as np

from codegen.ops import CCall, ConstName, Ref, depthwise_inplace, emitter
from codegen.ops._common import (
    act_fields,
    block,
    check_limit,
    check_shifts,
    check_symmetric,
    dims_literal,
    io,
    optional_ref,
    requant_arrays,
    struct_literal,
)
from codegen.ops.eltwise import add_call
from codegen.ops.pool import mean_call
from codegen.ops.train_common import channel_array, float_literal, weight_part
from tte.errors import UnsupportedError
from tte.ir import Graph, Node
from tte.ops.requantize import requantize_params
from tte.quant import conv_multipliers

ACC_LIMIT = 1 << 15  # taps x input channels of one int32 dot product (tte_dot.h)
MASKS = "src/train_mask_eltwise.c"
# the weight layers' mask kernels and what they call: the pointwise GEMM pass, the depthwise groups and runs
MASK_SOURCES = {
    "tte_conv2d_mask_s8": ("src/train_mask_conv.c", "src/gemm_mask_s8.c"),
    "tte_fully_connected_mask_s8": ("src/train_mask_conv.c", "src/gemm_mask_s8.c"),
    "tte_depthwise_conv2d_mask_s8": ("src/train_mask_dw.c", "src/depthwise_conv2d.c", "src/depthwise_runs.c",
                                     "src/depthwise_runs_layer.c"),
}


def _mask(node: Node, ref: Ref) -> str:
    return ref(node.outputs[1])


def _geometry(node: Node) -> dict[str, int]:
    sh, sw = node.attrs["stride"]
    pt, pl, _, _ = node.attrs["pad"]
    return {"stride_h": int(sh), "stride_w": int(sw), "pad_top": int(pt), "pad_left": int(pl)}


def _weight_layer(node: Node, graph: Graph, ref: Ref, const_name: ConstName, fn: str, params_type: str,
                  params: dict[str, int], in_dims: tuple, filter_dims: tuple, out_dims: tuple) -> CCall:
    x, y = io(graph, node)
    w = graph[node.inputs[1]]
    m, sh = conv_multipliers(x.quant.s, w.quant.scale, y.quant.s)
    consts, quant = requant_arrays(node, const_name, m, sh, w.quant.per_channel)
    part_decls, part, part_consts = weight_part(node, graph, ref, const_name)
    decls = [
        f"static const {params_type} params = {struct_literal(params)};",
        f"static const tte_requant quant = {quant};",
        f"static const tte_dims in_dims = {dims_literal(in_dims)}, filter_dims = {dims_literal(filter_dims)},"
        f" out_dims = {dims_literal(out_dims)};",
        *part_decls,
    ]
    call = (f"{fn}(&params, &quant, &in_dims, {ref(x.name)}, &filter_dims, {ref(w.name)}, {part}, "
            f"{optional_ref(node, 2, ref)}, &out_dims, {ref(y.name)}, {_mask(node, ref)});")
    return CCall(block(decls, call), consts + part_consts, list(MASK_SOURCES[fn]))


@emitter("conv2d_mask")
def conv2d_mask(node: Node, graph: Graph, ref: Ref, const_name: ConstName) -> CCall:
    x, y = io(graph, node)
    w = graph[node.inputs[1]]
    check_symmetric(node, w)
    check_limit(node, "kernel taps x input channels", int(np.prod(w.shape[1:])), ACC_LIMIT)
    params = {"input_offset": -x.quant.zp, "output_offset": y.quant.zp, **_geometry(node), **act_fields(node)}
    return _weight_layer(node, graph, ref, const_name, "tte_conv2d_mask_s8", "tte_conv_params", params, x.shape,
                         w.shape, y.shape)


@emitter("depthwise_conv2d_mask")
def depthwise_conv2d_mask(node: Node, graph: Graph, ref: Ref, const_name: ConstName) -> CCall:
    x, y = io(graph, node)
    w = graph[node.inputs[1]]
    check_symmetric(node, w)
    params = {"input_offset": -x.quant.zp, "output_offset": y.quant.zp, **_geometry(node),
              "ch_mult": int(node.attrs["multiplier"]), **act_fields(node)}
    scratch = depthwise_inplace.inplace_scratch(node, ref)
    if scratch is not None:  # the memory plan put the output over the input
        return depthwise_inplace.forward(node, graph, ref, const_name, params, scratch)
    return _weight_layer(node, graph, ref, const_name, "tte_depthwise_conv2d_mask_s8", "tte_dw_conv_params",
                         params, x.shape, w.shape, y.shape)


@emitter("fully_connected_mask")
def fully_connected_mask(node: Node, graph: Graph, ref: Ref, const_name: ConstName) -> CCall:
    x, y = io(graph, node)
    w = graph[node.inputs[1]]
    o, i = w.shape
    if x.size % i or np.unique(w.quant.zero_point).size > 1:
        raise UnsupportedError(f"input of {x.size} values with weights {list(w.shape)} and per-channel zero points",
                               node=node.name, op=node.op, hint="use symmetric weights [O, I]")
    check_limit(node, "input features", i, ACC_LIMIT)
    batches = x.size // i
    params = {"input_offset": -x.quant.zp, "filter_offset": -w.quant.zp, "output_offset": y.quant.zp,
              **act_fields(node)}
    return _weight_layer(node, graph, ref, const_name, "tte_fully_connected_mask_s8", "tte_fc_params", params,
                         (batches, 1, 1, i), (o, 1, 1, i), (batches, 1, 1, o))


@emitter("add_mask")
def add_mask(node: Node, graph: Graph, ref: Ref, const_name: ConstName) -> CCall:
    return add_call(node, graph, ref, const_name, "_mask", f", {_mask(node, ref)}", (MASKS, MASKS))


@emitter("requantize_mask")
def requantize_mask(node: Node, graph: Graph, ref: Ref, const_name: ConstName) -> CCall:
    x, y = io(graph, node)
    m, s = requantize_params(x.quant.s, y.quant.s)
    check_shifts(node, [s])
    params = {"input_offset": -x.quant.zp, "output_offset": y.quant.zp, "multiplier": m, "shift": s}
    decls = [f"static const tte_requantize_params params = {struct_literal(params)};"]
    call = f"tte_requantize_mask_s8(&params, {y.size}, {ref(x.name)}, {ref(y.name)}, {_mask(node, ref)});"
    return CCall(block(decls, call), [], [MASKS])


@emitter("avg_pool2d_mask")
def avg_pool2d_mask(node: Node, graph: Graph, ref: Ref, const_name: ConstName) -> CCall:
    x, y = io(graph, node)
    kh, kw = (int(k) for k in node.attrs["kernel"])
    pt, pl, pb, pr = (int(p) for p in node.attrs["pad"])
    if max(pt, pb) >= kh or max(pl, pr) >= kw:
        raise UnsupportedError(f"padding {node.attrs['pad']} not smaller than the kernel {kh}x{kw}",
                               node=node.name, op=node.op, hint="windows would be empty")
    params = {"kernel_h": kh, "kernel_w": kw, **pool_geometry(node), **act_fields(node)}
    decls = [
        f"static const tte_pool_params params = {struct_literal(params)};",
        f"static const tte_dims in_dims = {dims_literal(x.shape)}, out_dims = {dims_literal(y.shape)};",
    ]
    call = f"tte_avg_pool2d_mask_s8(&params, &in_dims, {ref(x.name)}, &out_dims, {ref(y.name)}, {_mask(node, ref)});"
    return CCall(block(decls, call), [], [MASKS])


def pool_geometry(node: Node) -> dict[str, int]:
    sh, sw = (int(s) for s in node.attrs["stride"])
    pt, pl = (int(p) for p in node.attrs["pad"][:2])
    return {"stride_h": sh, "stride_w": sw, "pad_top": pt, "pad_left": pl}


@emitter("mean_mask")
def mean_mask(node: Node, graph: Graph, ref: Ref, const_name: ConstName) -> CCall:
    return mean_call(node, graph, ref, "_mask", f", {_mask(node, ref)}", MASKS)


@emitter("gather_channels")
def gather_channels(node: Node, graph: Graph, ref: Ref, const_name: ConstName) -> CCall:
    x, y = io(graph, node)
    channels = node.attrs["channels"]
    rows = y.size // len(channels)
    chans = channel_array(node, const_name, "channels", channels)
    call = (f"tte_gather_channels_s8({rows}, {x.size // rows}, {ref(x.name)}, {len(channels)}, {chans.name}, "
            f"{ref(y.name)});")
    return CCall([call], [chans], [MASKS])


@emitter("fully_connected_f32")
def fully_connected_f32(node: Node, graph: Graph, ref: Ref, const_name: ConstName) -> CCall:
    x, y = io(graph, node)
    w = graph[node.inputs[1]]
    o, i = w.shape
    batches = x.size // i
    decls = [
        f"static const tte_dequant_params in_q = {{{-x.quant.zp}, {float_literal(x.quant.s)}}};",
        f"static const tte_dims in_dims = {dims_literal((batches, 1, 1, i))},"
        f" filter_dims = {dims_literal((o, 1, 1, i))}, out_dims = {dims_literal((batches, 1, 1, o))};",
    ]
    call = (f"tte_fully_connected_s8_f32(&in_q, &in_dims, {ref(x.name)}, &filter_dims, {ref(w.name)}, "
            f"{ref(node.inputs[2])}, &out_dims, {ref(y.name)});")
    return CCall(block(decls, call), [], ["src/train_fc.c"])
