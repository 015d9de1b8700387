"""mul -> tte_mul_s8, sub -> tte_sub_s8, add_broadcast -> tte_add_broadcast_s8 (broadcasting, up to 4-D)."""

from __future__ import annotations

from codegen.ops import CCall, ConstName, Ref, emitter
from codegen.ops._common import act_fields, block, check_shifts, dims4, dims_literal, struct_literal
from tte.errors import UnsupportedError
from tte.ir import Graph, Node
from tte.ops.add import LEFT_SHIFT, add_params
from tte.ops.binary import mul_params


def _dims(node: Node, graph: Graph) -> list[str]:
    a, b, y = (graph[t] for t in (*node.inputs[:2], node.outputs[0]))
    if max(len(a.shape), len(b.shape), len(y.shape)) > 4:
        raise UnsupportedError("broadcasting beyond 4-D", node=node.name, op=node.op, hint="reshape to 4-D first")
    da, db, dy = dims4(a.shape), dims4(b.shape), dims4(y.shape)
    if any(i not in (1, o) for d in (da, db) for i, o in zip(d, dy, strict=True)):
        raise UnsupportedError(f"shapes {list(a.shape)} and {list(b.shape)} do not broadcast to {list(y.shape)}",
                               node=node.name, op=node.op, hint="check the model's shapes")
    return [f"static const tte_dims a_dims = {dims_literal(da)}, b_dims = {dims_literal(db)}, "
            f"out_dims = {dims_literal(dy)};"]


def _args(node: Node, ref: Ref) -> str:
    return f"&a_dims, {ref(node.inputs[0])}, &b_dims, {ref(node.inputs[1])}, &out_dims, {ref(node.outputs[0])}"


@emitter("mul")
def mul(node: Node, graph: Graph, ref: Ref, const_name: ConstName) -> CCall:
    qa, qb, qy = (graph[t].quant for t in (*node.inputs[:2], node.outputs[0]))
    m, s = mul_params(qa.s, qb.s, qy.s)
    check_shifts(node, [s])
    params = {"input1_offset": -qa.zp, "input2_offset": -qb.zp, "output_multiplier": m, "output_shift": s,
              "output_offset": qy.zp, **act_fields(node)}
    decls = [f"static const tte_mul_params params = {struct_literal(params)};", *_dims(node, graph)]
    return CCall(block(decls, f"tte_mul_s8(&params, {_args(node, ref)});"), [], ["src/broadcast.c"])


def _add_sub(node: Node, graph: Graph, ref: Ref, fn: str) -> CCall:
    qa, qb, qy = (graph[t].quant for t in (*node.inputs[:2], node.outputs[0]))
    (m1, s1), (m2, s2), (mo, so) = add_params(qa.s, qb.s, qy.s)
    check_shifts(node, [so])
    params = {"input1_offset": -qa.zp, "input2_offset": -qb.zp, "input1_multiplier": m1, "input1_shift": s1,
              "input2_multiplier": m2, "input2_shift": s2, "output_multiplier": mo, "output_shift": so,
              "output_offset": qy.zp, "left_shift": LEFT_SHIFT, **act_fields(node)}
    decls = [f"static const tte_add_params params = {struct_literal(params)};", *_dims(node, graph)]
    return CCall(block(decls, f"{fn}(&params, {_args(node, ref)});"), [], ["src/broadcast.c"])


@emitter("sub")
def sub(node: Node, graph: Graph, ref: Ref, const_name: ConstName) -> CCall:
    return _add_sub(node, graph, ref, "tte_sub_s8")


@emitter("add_broadcast")
def add_broadcast(node: Node, graph: Graph, ref: Ref, const_name: ConstName) -> CCall:
    return _add_sub(node, graph, ref, "tte_add_broadcast_s8")
