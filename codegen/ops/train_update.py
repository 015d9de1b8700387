"""Fused parameter updates of the train step -> C (tte/train/update_ops.py).

Emitter contracts (inputs -> outputs; attributes as tte/train builds them):
- `bias_update`: (dacc, b int32[O], lr, [rng]) -> (b_new, [rng_new]), attributes factor (per output channel),
  rounding -> tte_bias_update_s32_f32;
- `bias_update_f32`: (dacc, b float32[O], lr) -> b_new -> tte_bias_update_f32;
- `conv2d_weight_update` / `depthwise_conv2d_weight_update` / `fully_connected_weight_update`:
  (saved, dacc, w, lr, [rng]) -> (w_new, [rng_new]), attributes channels (trained input channels), factor,
  rounding, stride/pad/multiplier -> tte_<op>_update_weight_s8_f32. `w` is either the whole weight or only its
  trained channels (last axis == len(channels) [* multiplier]: the SRAM part of a split weight, train_split.py);
- `fully_connected_f32_weight_update`: (saved, dacc, w float32, lr) -> w_new -> tte_fully_connected_update_weight_f32.
The rng tensors (int32[1], the xorshift32 state) are present iff rounding == "stochastic".

In place: every update writes its parameter and the PRNG state in place. `inplace_outputs(node)` names the
(input, output) pairs; a planner that gives each pair the same memory (and the state tensors their SRAM home)
gets no copies. Where `ref(input) != ref(output)` (e.g. the test harness, whose state inputs are constants) the
emitter first copies the input into the output's buffer with tte_state_copy and updates that.
"""

from __future__ import annotations

from codegen.ops import CCall, ConstArray, ConstName, Ref, emitter
from codegen.ops._common import block, dims4, dims_literal, struct_literal
from codegen.ops.train_common import channel_array, float_array, float_literal, rng_ref, state_copy
from tte.errors import UnsupportedError
from tte.ir import Graph, Node
from tte.train.block_grad import STATE_PAIRS

BIAS_OPS = ("bias_update", "bias_update_f32")
WEIGHT_OPS = ("conv2d_weight_update", "depthwise_conv2d_weight_update", "fully_connected_weight_update",
              "fully_connected_f32_weight_update")


def inplace_outputs(node: Node) -> list[tuple[str, str]]:
    """(input, output) pairs of a node that updates tensors in place: its parameter and its PRNG state."""
    if node.op in STATE_PAIRS:  # the fused block backward (tte/train/block_grad.py)
        return STATE_PAIRS[node.op](node)
    if node.op in BIAS_OPS:
        param = 1
    elif node.op in WEIGHT_OPS:
        param = 2
    else:
        return []
    pairs = [(node.inputs[param], node.outputs[0])]
    if len(node.outputs) > 1:
        pairs.append((node.inputs[-1], node.outputs[1]))
    return pairs


def _call(node: Node, graph: Graph, ref: Ref, lines: list[str], consts: list[ConstArray], source: str) -> CCall:
    """The update's C preceded by the copies of its state into the new values' buffers, if any."""
    copies = [line for src, dst in inplace_outputs(node) for line in state_copy(ref, graph, src, dst)]
    sources = [source] + (["src/train_update.c"] if copies and source != "src/train_update.c" else [])
    return CCall([*copies, *lines], consts, sources)


@emitter("bias_update")
def bias_update(node: Node, graph: Graph, ref: Ref, const_name: ConstName) -> CCall:
    dacc, b = graph[node.inputs[0]], graph[node.inputs[1]]
    factor = float_array(const_name, "factor", node.attrs["factor"])
    if factor.values.size != b.size or dacc.shape[-1] != b.size:
        raise UnsupportedError(f"bias of {b.size} values, gradient {list(dacc.shape)}", node=node.name, op=node.op)
    decls = [f"static const tte_dims grad_dims = {dims_literal(dims4(dacc.shape))};"]
    call = (f"tte_bias_update_s32_f32({factor.name}, {ref(node.inputs[2])}, &grad_dims, {ref(dacc.name)}, "
            f"{rng_ref(node, ref)}, {ref(node.outputs[0])});")
    return _call(node, graph, ref, block(decls, call), [factor], "src/train_update.c")


@emitter("bias_update_f32")
def bias_update_f32(node: Node, graph: Graph, ref: Ref, const_name: ConstName) -> CCall:
    b = graph[node.inputs[1]]
    call = (f"tte_bias_update_f32({ref(node.inputs[2])}, {b.size}, {ref(node.inputs[0])}, "
            f"{ref(node.outputs[0])});")
    return _call(node, graph, ref, [call], [], "src/train_update.c")


def _update_params(node: Node, graph: Graph) -> str:
    zp = graph[node.inputs[0]].quant.zp
    return f"static const tte_update_params params = {struct_literal({'input_offset': -zp})};"


def _geom(node: Node) -> str:
    sh, sw = (int(s) for s in node.attrs["stride"])
    pt, pl = (int(p) for p in node.attrs["pad"][:2])
    fields = {"stride_h": sh, "stride_w": sw, "pad_top": pt, "pad_left": pl,
              "ch_mult": int(node.attrs.get("multiplier", 1))}
    return f"static const tte_conv_geom geom = {struct_literal(fields)};"


def _check_layout(node: Node, graph: Graph, saved_channels: int) -> None:
    """The saved input holds the trained channels, and the weight either exactly those (times the multiplier) or
    all channels (a bug in the graph, not a user error, otherwise)."""
    w, chans = graph[node.inputs[2]], node.attrs["channels"]
    mult = int(node.attrs.get("multiplier", 1))
    dense = w.shape[-1] == len(chans) * mult
    if saved_channels != len(chans) or (not dense and (max(chans) + 1) * mult > w.shape[-1]):
        raise UnsupportedError(f"saved input of {saved_channels} channels / weight {list(w.shape)} do not match the "
                               f"{len(chans)} trained channels", node=node.name, op=node.op)


def _conv_update(node: Node, graph: Graph, ref: Ref, const_name: ConstName, fn: str) -> CCall:
    saved, dacc, w = (graph[t] for t in node.inputs[:3])
    _check_layout(node, graph, saved.shape[-1])
    factor = float_array(const_name, "factor", node.attrs["factor"])
    chans = channel_array(node, const_name, "channels", node.attrs["channels"])
    decls = [
        _update_params(node, graph),
        _geom(node),
        f"static const tte_dims in_dims = {dims_literal(saved.shape)}, grad_dims = {dims_literal(dacc.shape)},"
        f" filter_dims = {dims_literal(w.shape)};",
    ]
    call = (f"{fn}(&params, &geom, {factor.name}, {ref(node.inputs[3])}, &in_dims, {ref(saved.name)}, &grad_dims, "
            f"{ref(dacc.name)}, {chans.name}, &filter_dims, {rng_ref(node, ref)}, {ref(node.outputs[0])});")
    return _call(node, graph, ref, block(decls, call), [factor, chans], "src/train_conv_update.c")


@emitter("conv2d_weight_update")
def conv2d_weight_update(node: Node, graph: Graph, ref: Ref, const_name: ConstName) -> CCall:
    return _conv_update(node, graph, ref, const_name, "tte_conv2d_update_weight_s8_f32")


@emitter("depthwise_conv2d_weight_update")
def depthwise_conv2d_weight_update(node: Node, graph: Graph, ref: Ref, const_name: ConstName) -> CCall:
    return _conv_update(node, graph, ref, const_name, "tte_depthwise_conv2d_update_weight_s8_f32")


def _fc_dims(node: Node, graph: Graph) -> tuple[int, str]:
    """(trained input count, filter_dims declaration) of a fully connected update (batch 1)."""
    saved, dacc, w = (graph[t] for t in node.inputs[:3])
    _check_layout(node, graph, saved.size)
    if dacc.size != w.shape[0]:
        raise UnsupportedError(f"gradient of {dacc.size} values for weights {list(w.shape)}", node=node.name,
                               op=node.op, hint="the train step supports batch 1")
    return saved.size, f"static const tte_dims filter_dims = {dims_literal((w.shape[0], 1, 1, w.shape[1]))};"


@emitter("fully_connected_weight_update")
def fully_connected_weight_update(node: Node, graph: Graph, ref: Ref, const_name: ConstName) -> CCall:
    t, filter_decl = _fc_dims(node, graph)
    factor = float_array(const_name, "factor", node.attrs["factor"])
    chans = channel_array(node, const_name, "channels", node.attrs["channels"])
    call = (f"tte_fully_connected_update_weight_s8_f32(&params, {factor.name}, {ref(node.inputs[3])}, {t}, "
            f"{ref(node.inputs[0])}, {ref(node.inputs[1])}, {chans.name}, &filter_dims, {rng_ref(node, ref)}, "
            f"{ref(node.outputs[0])});")
    decls = [_update_params(node, graph), filter_decl]
    return _call(node, graph, ref, block(decls, call), [factor, chans], "src/train_fc.c")


@emitter("fully_connected_f32_weight_update")
def fully_connected_f32_weight_update(node: Node, graph: Graph, ref: Ref, const_name: ConstName) -> CCall:
    t, filter_decl = _fc_dims(node, graph)
    q = graph[node.inputs[0]].quant
    chans = channel_array(node, const_name, "channels", node.attrs["channels"])
    decls = [f"static const tte_dequant_params in_q = {{{-q.zp}, {float_literal(q.s)}}};", filter_decl]
    call = (f"tte_fully_connected_update_weight_f32(&in_q, {ref(node.inputs[3])}, {t}, {ref(node.inputs[0])}, "
            f"{ref(node.inputs[1])}, {chans.name}, &filter_dims, {ref(node.outputs[0])});")
    return _call(node, graph, ref, block(decls, call), [chans], "src/train_fc.c")
