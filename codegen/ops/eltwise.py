"""add -> tte_add_lut_s8 (input stages as compile-time tables) or tte_add_s8 for small tensors."""

from __future__ import annotations

import numpy as np

from codegen.ops import CCall, ConstArray, ConstName, Ref, emitter
from codegen.ops._common import act_fields, block, check_shifts, struct_literal
from tte.errors import UnsupportedError
from tte.ir import Graph, Node
from tte.ops.add import LEFT_SHIFT, add_params
from tte.quant import mbqm

# Below this many elements the two 1 KB tables cost more flash than the per-element arithmetic they save.
LUT_MIN_SIZE = 256


def input_stage_table(zero_point: int, m: int, shift: int) -> np.ndarray:
    """MBQM((q - zp) << 20, M, S) for q = -128..127: the reference's input stage, so the table is exact."""
    q = np.arange(-128, 128, dtype=np.int64)
    return mbqm((q - zero_point) << LEFT_SHIFT, m, shift).astype(np.int32)


@emitter("add")
def add(node: Node, graph: Graph, ref: Ref, const_name: ConstName) -> CCall:
    return add_call(node, graph, ref, const_name)


def add_call(node: Node, graph: Graph, ref: Ref, const_name: ConstName, variant: str = "", extra_args: str = "",
             sources: tuple[str, str] = ("src/add_lut.c", "src/add.c")) -> CCall:
    """`tte_add[_lut]{variant}_s8` of a same-shape add; `extra_args` follow the output (the mask variant's bits),
    `sources` are the (table, plain) kernels' files."""
    a, b, y = graph[node.inputs[0]], graph[node.inputs[1]], graph[node.outputs[0]]
    if a.shape != y.shape or b.shape != y.shape:
        raise UnsupportedError(f"broadcasting add {list(a.shape)} + {list(b.shape)}", node=node.name, op=node.op,
                               hint="only inputs of the output's shape are supported")
    (m1, s1), (m2, s2), (mo, so) = add_params(a.quant.s, b.quant.s, y.quant.s)
    check_shifts(node, [so])
    out = {"output_multiplier": mo, "output_shift": so}
    args = f"{y.size}, {ref(a.name)}, {ref(b.name)}, {ref(y.name)}{extra_args}"
    if y.size >= LUT_MIN_SIZE:
        t1, t2 = const_name("table1"), const_name("table2")
        consts = [ConstArray(t1, "int32_t", input_stage_table(a.quant.zp, m1, s1)),
                  ConstArray(t2, "int32_t", input_stage_table(b.quant.zp, m2, s2))]
        params = {**out, "output_offset": y.quant.zp, **act_fields(node)}
        decls = [f"static const tte_add_lut_params params = {struct_literal(params)};"]
        return CCall(block(decls, f"tte_add_lut{variant}_s8(&params, {t1}, {t2}, {args});"), consts,
                     [sources[0]])
    params = {
        "input1_offset": -a.quant.zp, "input2_offset": -b.quant.zp,
        "input1_multiplier": m1, "input1_shift": s1, "input2_multiplier": m2, "input2_shift": s2,
        **out, "output_offset": y.quant.zp, "left_shift": LEFT_SHIFT, **act_fields(node),
    }
    decls = [f"static const tte_add_params params = {struct_literal(params)};"]
    return CCall(block(decls, f"tte_add{variant}_s8(&params, {args});"), [], [sources[1]])
