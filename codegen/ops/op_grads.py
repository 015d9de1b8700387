"""The train step's ops for max pool (see max_pool.py), activation tables, mul / sub and slicing -> C.

- `lut_mask`: (x) -> (y, mask), attrs table, mask_table -> tte_lut_mask_s8;
- `lut_step_grad`: (dy, mask) -> dx, attrs lo, hi; `lut_table_grad`: (dy, x) -> dx, attr deriv (256 floats);
- `mul_mask` / `sub_mask` / `add_broadcast_mask`: (a, b) -> (y, mask) -> tte_<op>_mask_s8;
- `mul_input_grad`: (dacc, other operand) -> d(operand); `reduce_grad`: (dacc) -> dx, attr scale;
- `slice_f32`: (dy) -> part, `slice_grad`: (dy) -> dx, attrs begin, size, strides.
"""

from __future__ import annotations

import numpy as np

from codegen.ops import CCall, ConstArray, ConstName, Ref, emitter
from codegen.ops._common import block, dims4, dims_literal, io
from codegen.ops.broadcast import add_broadcast as add_broadcast_forward
from codegen.ops.broadcast import mul as mul_forward
from codegen.ops.broadcast import sub as sub_forward
from codegen.ops.concat_slice import slice_ as slice_forward
from codegen.ops.train_common import float_array, float_literal
from tte.ir import Graph, Node

SOURCE = "src/grad_ext.c"


@emitter("lut_mask")
def lut_mask(node: Node, graph: Graph, ref: Ref, const_name: ConstName) -> CCall:
    x, y = io(graph, node)
    table, bits = const_name("table"), const_name("mask_table")
    consts = [ConstArray(table, "int8_t", np.asarray(node.attrs["table"], np.int8)),
              ConstArray(bits, "uint8_t", np.asarray(node.attrs["mask_table"], np.uint8))]
    call = f"tte_lut_mask_s8({table}, {bits}, {y.size}, {ref(x.name)}, {ref(y.name)}, {ref(node.outputs[1])});"
    return CCall([call], consts, [SOURCE])


@emitter("lut_step_grad")
def lut_step_grad(node: Node, graph: Graph, ref: Ref, const_name: ConstName) -> CCall:
    dy, dx = io(graph, node)
    lo, hi = float_literal(node.attrs["lo"]), float_literal(node.attrs["hi"])
    call = f"tte_lut_step_grad_f32({lo}, {hi}, {dy.size}, {ref(dy.name)}, {ref(node.inputs[1])}, {ref(dx.name)});"
    return CCall([call], [], [SOURCE])


@emitter("lut_table_grad")
def lut_table_grad(node: Node, graph: Graph, ref: Ref, const_name: ConstName) -> CCall:
    dy, dx = io(graph, node)
    deriv = float_array(const_name, "deriv", node.attrs["deriv"])
    call = f"tte_lut_table_grad_f32({deriv.name}, {dy.size}, {ref(dy.name)}, {ref(node.inputs[1])}, {ref(dx.name)});"
    return CCall([call], [deriv], [SOURCE])


def _with_mask(call: CCall, fn: str, mask: str) -> CCall:
    """A forward broadcast call turned into its mask variant (one more output argument)."""
    lines = [line.replace(f"{fn}(", f"{fn[:-3]}_mask_s8(").replace(");", f", {mask});") if f"{fn}(" in line
             else line for line in call.lines]
    return CCall(lines, call.consts, call.sources)


@emitter("mul_mask")
def mul_mask(node: Node, graph: Graph, ref: Ref, const_name: ConstName) -> CCall:
    return _with_mask(mul_forward(node, graph, ref, const_name), "tte_mul_s8", ref(node.outputs[1]))


@emitter("sub_mask")
def sub_mask(node: Node, graph: Graph, ref: Ref, const_name: ConstName) -> CCall:
    return _with_mask(sub_forward(node, graph, ref, const_name), "tte_sub_s8", ref(node.outputs[1]))


@emitter("add_broadcast_mask")
def add_broadcast_mask(node: Node, graph: Graph, ref: Ref, const_name: ConstName) -> CCall:
    return _with_mask(add_broadcast_forward(node, graph, ref, const_name), "tte_add_broadcast_s8",
                      ref(node.outputs[1]))


@emitter("mul_input_grad")
def mul_input_grad(node: Node, graph: Graph, ref: Ref, const_name: ConstName) -> CCall:
    dy, dx = io(graph, node)
    other = graph[node.inputs[1]]
    decls = [f"static const tte_dims grad_dims = {dims_literal(dims4(dy.shape))}, "
             f"other_dims = {dims_literal(dims4(other.shape))}, in_dims = {dims_literal(dims4(dx.shape))};"]
    call = (f"tte_mul_input_grad_s8_f32({-other.quant.zp}, {float_literal(other.quant.s)}, &grad_dims, "
            f"{ref(dy.name)}, &other_dims, {ref(other.name)}, &in_dims, {ref(dx.name)});")
    return CCall(block(decls, call), [], ["src/broadcast.c"])


@emitter("reduce_grad")
def reduce_grad(node: Node, graph: Graph, ref: Ref, const_name: ConstName) -> CCall:
    dy, dx = io(graph, node)
    decls = [f"static const tte_dims grad_dims = {dims_literal(dims4(dy.shape))}, "
             f"in_dims = {dims_literal(dims4(dx.shape))};"]
    call = (f"tte_reduce_grad_f32({float_literal(node.attrs['scale'])}, &grad_dims, {ref(dy.name)}, &in_dims, "
            f"{ref(dx.name)});")
    return CCall(block(decls, call), [], ["src/broadcast.c"])


@emitter("slice_f32")
def slice_f32(node: Node, graph: Graph, ref: Ref, const_name: ConstName) -> CCall:
    call = slice_forward(node, graph, ref, const_name)
    return CCall([line.replace("tte_slice_s8(", "tte_slice_f32(") for line in call.lines], [], [SOURCE])


@emitter("slice_grad")
def slice_grad(node: Node, graph: Graph, ref: Ref, const_name: ConstName) -> CCall:
    dy, dx = io(graph, node)
    lead = 4 - len(dx.shape)
    begin = [0] * lead + [int(b) for b in node.attrs["begin"]]
    strides = [1] * lead + [int(s) for s in node.attrs["strides"]]
    decls = [f"static const tte_slice_params params = {{{dims_literal(begin)}, {dims_literal(strides)}}};",
             f"static const tte_dims grad_dims = {dims_literal(dims4(dy.shape))}, "
             f"in_dims = {dims_literal(dims4(dx.shape))};"]
    call = f"tte_slice_grad_f32(&params, &grad_dims, {ref(dy.name)}, &in_dims, {ref(dx.name)});"
    return CCall(block(decls, call), [], [SOURCE])
