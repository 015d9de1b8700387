"""The fused block backward -> C (tte/train/block_grad.py): `block_grad` and `bias_assign`.

- `block_grad` -> tte_block_grad_s8_f32 (runtime_c/src/train_block_grad.c). Its last output is the kernel's
  scratch (planned like any tensor, live at this node only). The pw1 weight and the PRNG state are updated in
  place (tte.train.block_grad.state_pairs); a split pw1 weight (train_split.py) arrives as input 12 with
  `sram_channels`. The PRNG streams start at compile-time jumps of the entry state: 32 uint32 columns per
  stream whose draw offset is not 0.
- `bias_assign` -> tte_state_copy of the new bias (and PRNG state) into the trainable state.
"""

from __future__ import annotations

import numpy as np

from codegen.ops import CCall, ConstArray, ConstName, Ref, emitter
from codegen.ops._common import block, struct_literal
from codegen.ops.train_common import float_array, state_copy, weight_part
from tte.errors import UnsupportedError
from tte.ir import Graph, Node
from tte.train.block_grad import MAX_TAPS, MAX_WIDTH, draw_counts, jump_matrix, output, slot, state_pairs
from tte.train.grad_ops import weight_scales

SOURCES = ["src/train_block_grad.c", "src/train_block_dw.c"]


def _params(node: Node, graph: Graph) -> str:
    _, h1, w1, cin = node.attrs["in_shape"]
    _, h2, w2, cout = graph[slot(node, "dacc2")].shape
    _, kh, kw, ch = graph[slot(node, "w_dw")].shape
    if kh * kw > MAX_TAPS or w1 > MAX_WIDTH:  # fuse_block.py leaves such blocks unfused
        raise UnsupportedError(f"depthwise kernel {kh}x{kw} or input width {w1} beyond the fused kernel's limits",
                               node=node.name, op=node.op, hint="train with TrainOptions(fuse_blocks=False)")
    sh, sw = (int(v) for v in node.attrs["dw_stride"])
    pt, pl = (int(v) for v in node.attrs["dw_pad"][:2])
    x = slot(node, "x")
    geom = struct_literal({"stride_h": sh, "stride_w": sw, "pad_top": pt, "pad_left": pl, "ch_mult": 1})
    fields = {"in_h": h1, "in_w": w1, "in_ch": cin, "ch": ch, "out_h": h2, "out_w": w2, "out_ch": cout,
              "kernel_h": kh, "kernel_w": kw, "dw": geom, "input_offset": -graph[x].quant.zp if x else 0,
              "trained": len(node.attrs["channels"])}
    return f"static const tte_block_grad_params params = {struct_literal(fields)};"


def _consts(node: Node, graph: Graph, const_name: ConstName) -> tuple[list[ConstArray], str]:
    """The scale, factor and jump arrays and the `tte_block_grad_consts` initializer over them."""
    w2, w_dw = graph[slot(node, "w2")], graph[slot(node, "w_dw")]
    ch = w_dw.shape[-1]
    arrays = [float_array(const_name, "w2_scale", weight_scales(graph, w2.name, w2.shape[0])),
              float_array(const_name, "dw_scale", weight_scales(graph, w_dw.name, ch)),
              float_array(const_name, "w1_scale", weight_scales(graph, slot(node, "w1"), ch))]
    fields = {"w2_scale": arrays[0].name, "dw_scale": arrays[1].name, "w1_scale": arrays[2].name}
    for key, attr in (("dw_bias_factor", "dw_bias_factor"), ("b1_factor", "b1_factor"), ("w1_factor", "w1_factor")):
        values = node.attrs[attr]
        if values:
            arrays.append(float_array(const_name, key, values))
            fields[key] = arrays[-1].name
        else:
            fields[key] = "NULL"
    jumps, offset = [], int(node.attrs.get("rng_skip", 0))
    for k, count in enumerate(draw_counts(node, graph)):
        if offset and count:
            arrays.append(ConstArray(const_name(f"jump{k}"), "uint32_t", np.asarray(jump_matrix(offset), np.uint32)))
            jumps.append(arrays[-1].name)
        else:
            jumps.append("NULL")
        offset += count
    fields["jump"] = "{" + ", ".join(jumps) + "}"
    return arrays, f"static const tte_block_grad_consts consts = {struct_literal(fields)};"


def _opt(ref: Ref, tensor: str, ctype: str = "") -> str:
    """The pointer of an optional tensor ('' -> NULL), cast to `ctype` unless it already is."""
    if not tensor:
        return "NULL"
    expr = ref(tensor)
    return f"({ctype}){expr}" if ctype and not expr.startswith(f"({ctype})") else expr


def _state(node: Node, ref: Ref) -> str:
    rng_out = output(node, "rng_new") or output(node, "rng_next")
    fields = {
        "dw_bias": _opt(ref, slot(node, "b_dw"), "const int32_t *"),
        "dw_bias_out": _opt(ref, output(node, "b_dw_next"), "int32_t *"),
        "b1": _opt(ref, slot(node, "b1"), "const int32_t *"),
        "b1_out": _opt(ref, output(node, "b1_next"), "int32_t *"),
        "w1_train": _opt(ref, output(node, "w1_new"), "int8_t *"),
        "rng_in": _opt(ref, slot(node, "rng") if rng_out else "", "const uint32_t *"),
        "rng_out": _opt(ref, rng_out, "uint32_t *"),
    }
    return f"const tte_block_grad_state state = {struct_literal(fields)};"


@emitter("block_grad")
def block_grad(node: Node, graph: Graph, ref: Ref, const_name: ConstName) -> CCall:
    arrays, consts_decl = _consts(node, graph, const_name)
    part_decls, part, part_consts = weight_part(node, graph, ref, const_name)
    decls = [_params(node, graph), consts_decl, *part_decls, _state(node, ref)]
    call = (f"tte_block_grad_s8_f32(&params, &consts, {ref(slot(node, 'lr'))}, {ref(slot(node, 'dacc2'))}, "
            f"{ref(slot(node, 'w2'))}, {_opt(ref, slot(node, 'dw_mask'))}, {ref(slot(node, 'w_dw'))}, "
            f"{_opt(ref, slot(node, 'pw1_mask'))}, {ref(slot(node, 'w1'))}, {part}, {_opt(ref, slot(node, 'x'))}, "
            f"&state, {ref(output(node, 'scratch'))}, {_opt(ref, output(node, 'dx'))});")
    copies = [line for src, dst in state_pairs(node) for line in state_copy(ref, graph, src, dst)]
    sources = SOURCES + (["src/train_update.c"] if copies else [])
    return CCall([*copies, *block(decls, call)], [*arrays, *part_consts], sources)


@emitter("bias_assign")
def bias_assign(node: Node, graph: Graph, ref: Ref, const_name: ConstName) -> CCall:
    lines = [f"tte_state_copy({graph[node.inputs[0]].nbytes}, {ref(node.inputs[0])}, {ref(node.outputs[0])});"]
    if len(node.outputs) > 1:
        lines.append(f"tte_state_copy({graph[node.inputs[2]].nbytes}, {ref(node.inputs[2])}, {ref(node.outputs[1])});")
    return CCall(lines, [], ["src/train_update.c"])
