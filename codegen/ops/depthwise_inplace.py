"""The in-place depthwise kernels (runtime_c/src/depthwise_inplace.c) for nodes the memory plan ran in place.

The planner (tte/passes/inplace.py) ties an in-place depthwise node's input and output to one arena offset and
plans the kernel's scratch plane as the buffer `scratch_name(node)`; so an emitter knows that a node runs in
place when its input and output refs are equal. The three depthwise emitters (forward, forward with mask,
input gradient) ask `inplace_scratch` and, when it answers, build their call with the functions below.
"""

from __future__ import annotations

from codegen.ops import CCall, ConstArray, ConstName, Ref
from codegen.ops._common import block, check_symmetric, dims_literal, optional_ref, requant_arrays, struct_literal
from codegen.ops.train_common import weight_part
from tte.ir import Graph, Node
from tte.passes.inplace import scratch_name
from tte.quant import conv_multipliers

SOURCES = ["src/depthwise_inplace.c"]


def inplace_scratch(node: Node, ref: Ref) -> str | None:
    """The scratch pointer when the plan put the node's output over its input, else None."""
    if ref(node.inputs[0]) != ref(node.outputs[0]):
        return None
    return ref(scratch_name(node))


def forward(node: Node, graph: Graph, ref: Ref, const_name: ConstName, params: dict[str, int], scratch: str
            ) -> CCall:
    """tte_depthwise_conv2d_inplace_s8, or for `depthwise_conv2d_mask` its mask variant (with the weight part)."""
    x, y, w = graph[node.inputs[0]], graph[node.outputs[0]], graph[node.inputs[1]]
    check_symmetric(node, w)
    m, sh = conv_multipliers(x.quant.s, w.quant.scale, y.quant.s)
    consts, quant = requant_arrays(node, const_name, m, sh, w.quant.per_channel)
    masked = node.op == "depthwise_conv2d_mask"
    part_decls, part, part_consts = weight_part(node, graph, ref, const_name) if masked else ([], "", [])
    decls = [
        f"static const tte_dw_conv_params params = {struct_literal(params)};",
        f"static const tte_requant quant = {quant};",
        f"static const tte_dims in_dims = {dims_literal(x.shape)}, filter_dims = {dims_literal(w.shape)},"
        f" out_dims = {dims_literal(y.shape)};",
        *part_decls,
    ]
    fn = "tte_depthwise_conv2d_mask_inplace_s8" if masked else "tte_depthwise_conv2d_inplace_s8"
    weights = f"{ref(w.name)}, {part}" if masked else ref(w.name)
    mask = f", {ref(node.outputs[1])}" if masked else ""
    call = (f"{fn}(&params, &quant, (int8_t *){scratch}, &in_dims, &filter_dims, {weights}, "
            f"{optional_ref(node, 2, ref)}, &out_dims, {ref(y.name)}{mask});")
    return CCall(block(decls, call), consts + part_consts, SOURCES)


def input_grad_call(node: Node, graph: Graph, ref: Ref, scratch: str, geom: str, scale: ConstArray,
                    part: tuple[list[str], str, list[ConstArray]]) -> CCall:
    """tte_depthwise_conv2d_grad_input_inplace_s8_f32 of an input-gradient node run in place."""
    dacc, dx, w = graph[node.inputs[0]], graph[node.outputs[0]], graph[node.inputs[1]]
    decls = [
        geom,
        f"static const tte_dims grad_dims = {dims_literal(dacc.shape)}, filter_dims = {dims_literal(w.shape)},"
        f" in_dims = {dims_literal(dx.shape)};",
        *part[0],
    ]
    call = (f"tte_depthwise_conv2d_grad_input_inplace_s8_f32(&geom, {scale.name}, (float *){scratch}, &grad_dims, "
            f"&filter_dims, {ref(w.name)}, {part[1]}, &in_dims, {ref(dx.name)});")
    return CCall(block(decls, call), [scale, *part[2]], SOURCES)
