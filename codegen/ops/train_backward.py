"""Backward ops of the train step -> C (float32 gradients, tte/train/grad_ops.py).

Emitter contracts (inputs -> outputs; attributes as tte/train builds them):
- `softmax_cross_entropy`: (logits int8 or float32, label int32[1]) -> (loss float32[1], dlogits float32)
  -> tte_softmax_cross_entropy_s8_f32 / _f32.
- `apply_mask`: (dy, mask) -> dacc; `grad_add`: (a, b) -> sum (both may be computed in place when the planner
  aliases the output to an input).
- `conv2d_input_grad` / `depthwise_conv2d_input_grad`: (dacc, w, [w_sram]) -> dx, attributes stride, pad
  (multiplier); `fully_connected_input_grad`: (dacc, w, [w_sram]) -> dx, float32 w = the fp32 head. With the
  optional SRAM input and attribute `sram_channels` the weight is split (train_split.py).
- `mean_grad` (axes), `avg_pool2d_grad` (kernel, stride, pad), `pad_grad` (pads): (dy) -> dx.
The per-channel weight scales become a float constant array per node.
"""

from __future__ import annotations

import numpy as np

from codegen.ops import CCall, ConstName, Ref, depthwise_inplace, emitter
from codegen.ops._common import block, dims4, dims_literal, io, struct_literal
from codegen.ops.pool import _mean_dims
from codegen.ops.train_common import float_array, float_literal, weight_part
from codegen.ops.train_forward import pool_geometry
from tte.errors import UnsupportedError
from tte.ir import Graph, Node
from tte.train.grad_ops import weight_scales

GRAD = "src/train_grad.c"


@emitter("softmax_cross_entropy")
def softmax_cross_entropy(node: Node, graph: Graph, ref: Ref, const_name: ConstName) -> CCall:
    z = graph[node.inputs[0]]
    label, loss, dz = ref(node.inputs[1]), ref(node.outputs[0]), ref(node.outputs[1])
    if z.dtype == "float32":
        call = f"tte_softmax_cross_entropy_f32({z.size}, {ref(z.name)}, {label}, {loss}, {dz});"
        return CCall([call], [], ["src/train_loss.c"])
    decls = [f"static const tte_dequant_params logits_q = {{{-z.quant.zp}, {float_literal(z.quant.s)}}};"]
    call = f"tte_softmax_cross_entropy_s8_f32(&logits_q, {z.size}, {ref(z.name)}, {label}, {loss}, {dz});"
    return CCall(block(decls, call), [], ["src/train_loss.c"])


@emitter("apply_mask")
def apply_mask(node: Node, graph: Graph, ref: Ref, const_name: ConstName) -> CCall:
    dy, out = io(graph, node)
    return CCall([f"tte_apply_mask_f32({dy.size}, {ref(dy.name)}, {ref(node.inputs[1])}, {ref(out.name)});"],
                 [], [GRAD])


@emitter("grad_add")
def grad_add(node: Node, graph: Graph, ref: Ref, const_name: ConstName) -> CCall:
    a, out = io(graph, node)
    call = f"tte_grad_add_f32({out.size}, {ref(a.name)}, {ref(node.inputs[1])}, {ref(out.name)});"
    return CCall([call], [], [GRAD])


def _conv_geom(node: Node) -> str:
    sh, sw = (int(s) for s in node.attrs["stride"])
    pt, pl = (int(p) for p in node.attrs["pad"][:2])
    fields = {"stride_h": sh, "stride_w": sw, "pad_top": pt, "pad_left": pl,
              "ch_mult": int(node.attrs.get("multiplier", 1))}
    return f"static const tte_conv_geom geom = {struct_literal(fields)};"


def _conv_input_grad(node: Node, graph: Graph, ref: Ref, const_name: ConstName, fn: str, channels: int) -> CCall:
    dacc, dx = io(graph, node)
    w = graph[node.inputs[1]]
    scale = float_array(const_name, "w_scale", weight_scales(graph, w.name, channels))
    part_decls, part, part_consts = weight_part(node, graph, ref, const_name)
    scratch = depthwise_inplace.inplace_scratch(node, ref) if node.op.startswith("depthwise") else None
    if scratch is not None:  # the memory plan put the input gradient over the output gradient
        return depthwise_inplace.input_grad_call(node, graph, ref, scratch, _conv_geom(node), scale,
                                                 (part_decls, part, part_consts))
    decls = [
        _conv_geom(node),
        f"static const tte_dims grad_dims = {dims_literal(dacc.shape)}, filter_dims = {dims_literal(w.shape)},"
        f" in_dims = {dims_literal(dx.shape)};",
        *part_decls,
    ]
    call = (f"{fn}(&geom, {scale.name}, &grad_dims, {ref(dacc.name)}, &filter_dims, {ref(w.name)}, {part}, "
            f"&in_dims, {ref(dx.name)});")
    return CCall(block(decls, call), [scale, *part_consts], ["src/train_conv_grad.c"])


@emitter("conv2d_input_grad")
def conv2d_input_grad(node: Node, graph: Graph, ref: Ref, const_name: ConstName) -> CCall:
    w = graph[node.inputs[1]]
    return _conv_input_grad(node, graph, ref, const_name, "tte_conv2d_grad_input_s8_f32", w.shape[0])


@emitter("depthwise_conv2d_input_grad")
def depthwise_conv2d_input_grad(node: Node, graph: Graph, ref: Ref, const_name: ConstName) -> CCall:
    w = graph[node.inputs[1]]
    return _conv_input_grad(node, graph, ref, const_name, "tte_depthwise_conv2d_grad_input_s8_f32", w.shape[3])


@emitter("fully_connected_input_grad")
def fully_connected_input_grad(node: Node, graph: Graph, ref: Ref, const_name: ConstName) -> CCall:
    dacc, dx = io(graph, node)
    w = graph[node.inputs[1]]
    o, i = w.shape
    if dacc.size != o or dx.size != i:
        raise UnsupportedError(f"gradient of {dacc.size} values for weights {list(w.shape)}", node=node.name,
                               op=node.op, hint="the train step supports batch 1")
    decl = f"static const tte_dims filter_dims = {dims_literal((o, 1, 1, i))};"
    if w.dtype == "float32":
        call = f"tte_fully_connected_grad_input_f32({ref(dacc.name)}, &filter_dims, {ref(w.name)}, {ref(dx.name)});"
        return CCall(block([decl], call), [], ["src/train_fc.c"])
    if np.unique(w.quant.zero_point).size > 1:
        raise UnsupportedError("per-channel weight zero points differ", node=node.name, op=node.op,
                               hint="quantize the weights symmetrically")
    scale = float_array(const_name, "w_scale", weight_scales(graph, w.name, o))
    part_decls, part, part_consts = weight_part(node, graph, ref, const_name)
    call = (f"tte_fully_connected_grad_input_s8_f32({-w.quant.zp}, {scale.name}, {ref(dacc.name)}, &filter_dims, "
            f"{ref(w.name)}, {part}, {ref(dx.name)});")
    return CCall(block([decl, *part_decls], call), [scale, *part_consts], ["src/train_fc.c"])


@emitter("mean_grad")
def mean_grad(node: Node, graph: Graph, ref: Ref, const_name: ConstName) -> CCall:
    dy, dx = io(graph, node)
    decls = [f"static const tte_dims in_dims = {dims_literal(dims4(_mean_dims(node, dx.shape)))};"]
    return CCall(block(decls, f"tte_mean_grad_f32(&in_dims, {ref(dy.name)}, {ref(dx.name)});"), [], [GRAD])


@emitter("avg_pool2d_grad")
def avg_pool2d_grad(node: Node, graph: Graph, ref: Ref, const_name: ConstName) -> CCall:
    dy, dx = io(graph, node)
    kh, kw = (int(k) for k in node.attrs["kernel"])
    params = {"kernel_h": kh, "kernel_w": kw, **pool_geometry(node), "act_min": -128, "act_max": 127}
    decls = [
        f"static const tte_pool_params params = {struct_literal(params)};",
        f"static const tte_dims grad_dims = {dims_literal(dy.shape)}, in_dims = {dims_literal(dx.shape)};",
    ]
    call = f"tte_avg_pool2d_grad_f32(&params, &grad_dims, {ref(dy.name)}, &in_dims, {ref(dx.name)});"
    return CCall(block(decls, call), [], [GRAD])


@emitter("pad_grad")
def pad_grad(node: Node, graph: Graph, ref: Ref, const_name: ConstName) -> CCall:
    dy, dx = io(graph, node)
    if len(dy.shape) > 4:
        raise UnsupportedError(f"rank {len(dy.shape)} pad", node=node.name, op=node.op,
                               hint="the runtime handles up to 4-D tensors")
    pads = [(0, 0)] * (4 - len(dy.shape)) + [tuple(int(v) for v in p) for p in node.attrs["pads"]]
    before = "{" + ", ".join(str(p[0]) for p in pads) + "}"
    after = "{" + ", ".join(str(p[1]) for p in pads) + "}"
    decls = [
        f"static const tte_pad_params params = {struct_literal({'before': before, 'after': after, 'value': 0})};",
        f"static const tte_dims grad_dims = {dims_literal(dims4(dy.shape))},"
        f" in_dims = {dims_literal(dims4(dx.shape))};",
    ]
    call = f"tte_pad_grad_f32(&params, &grad_dims, {ref(dy.name)}, &in_dims, {ref(dx.name)});"
    return CCall(block(decls, call), [], [GRAD])
