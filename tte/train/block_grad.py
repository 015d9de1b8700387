"""`block_grad`: the backward of an inverted-residual block (1x1 conv -> depthwise -> 1x1 conv) as one op.

tte/train/fuse_block.py puts it in place of the unfused chain
    pw2 input grad -> dw mask -> dw bias update -> dw input grad -> pw1 mask -> pw1 bias update
    -> pw1 input grad -> pw1 weight update
whose every step is independent per expanded channel c except the pw1 input gradient (a sum over c). A kernel can
therefore run the chain channel by channel with O(H*W) floats of scratch instead of two fp32 tensors of the
expanded width. The numpy reference below *is* the unfused chain (the same references run in the same order),
so the fused op has exactly the unfused semantics, PRNG draws included.

Inputs (fixed slots, '' when absent; `INPUTS` names them):
    0 dacc2   float32 [1, H2, W2, O]   the pw2 gradient after its mask (dL/d pre-clamp pw2 accumulator)
    1 w1      int8 [C, 1, 1, I]        the pw1 weight as compiled (read for the input gradient)
    2 w1_state                         the same tensor when the pw1 weight trains ('' otherwise): the weight
                                       the update writes (train_split replaces it by its SRAM part)
    3 w2      int8 [O, 1, 1, C]
    4 dw_mask uint8                    the depthwise clamp mask, or ''
    5 w_dw    int8 [1, KH, KW, C]      (multiplier 1)
    6 b_dw    int32 [C] or ''          trained depthwise bias
    7 pw1_mask uint8 or ''
    8 b1      int32 [C] or ''          trained pw1 bias
    9 x       int8 [1, H1, W1, S]      the saved pw1 input (trained channels), '' when the weight is frozen
   10 lr      float32 [1]
   11 rng     int32 [1] or ''          the xorshift32 state before the chain's first draw
   (12 w1_sram: added by codegen/ops/train_split.py for the C code only)
Outputs, in this order, each only when it exists: w1_new (the state update), rng_new (when w1 trains:
the state after the chain), dx float32 [1, H1, W1, I] (the block input's gradient), b_dw_next, b1_next (the new
bias values, committed to the state by `bias_assign`), rng_next (when w1 is frozen: committed by the last
`bias_assign`), scratch (float32, the C kernel's working memory; the reference leaves it zero).
Attributes: layers (pw2, dw, pw1 names), dw_stride, dw_pad, rounding, dw_bias_factor, b1_factor, w1_factor,
channels (the pw1 weight's trained input channels, () when frozen), outputs (the names of the outputs present,
in the order above), in_shape (the block input's shape [1, H1, W1, I]), rng_skip (the draws of a trained pw2
weight's update, which runs right after this node but draws first in the unfused order: the chain starts that
many draws after the entry state).

`bias_assign` (value, state[, rng_value, rng_state]) -> (state_new[, rng_new]) copies a new bias (and the PRNG
state) computed by `block_grad` into the trainable state (one parameter per update node, as the C side
expects: codegen/ops/train_update.inplace_outputs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from tte import ops
from tte.ir import Graph, Node, Tensor
from tte.ops import OpDef, register
from tte.train.update_ops import real_gradient

BLOCK_GRAD = "block_grad"
BIAS_ASSIGN = "bias_assign"
INPUTS = ("dacc2", "w1", "w1_state", "w2", "dw_mask", "w_dw", "b_dw", "pw1_mask", "b1", "x", "lr", "rng")
SLOT = {name: k for k, name in enumerate(INPUTS)}
OUTPUTS = ("w1_new", "rng_new", "dx", "b_dw_next", "b1_next", "rng_next", "scratch")
PW = {"stride": (1, 1), "pad": (0, 0, 0, 0)}
# The C kernel's limits (runtime_c/include/tte_block_grad.h): depthwise taps, block input width.
MAX_TAPS, MAX_WIDTH = 64, 128


def slot(node: Node, name: str) -> str:
    """The tensor in input slot `name` ('' when absent)."""
    k = SLOT[name]
    return node.inputs[k] if len(node.inputs) > k else ""


def output(node: Node, name: str) -> str:
    """The tensor of output `name` ('' when the node has no such output)."""
    present = node.attrs["outputs"]
    return node.outputs[present.index(name)] if name in present else ""


def draw_counts(node: Node, graph: Graph) -> tuple[int, int, int]:
    """PRNG draws of the dw bias, pw1 bias and pw1 weight updates (0 for a part not trained or no stochastic
    rounding), in the unfused draw order."""
    if node.attrs["rounding"] != "stochastic":
        return 0, 0, 0
    c = graph[slot(node, "w_dw")].shape[-1]
    return (c if slot(node, "b_dw") else 0, c if slot(node, "b1") else 0,
            c * len(node.attrs["channels"]) if slot(node, "w1_state") else 0)


# --- the chain, rebuilt from the fused node ---------------------------------------------------------------------


def _chain(node: Node, graph: Graph) -> tuple[list[Node], dict[str, Tensor]]:
    """The unfused nodes (over private intermediate tensors) and those tensors."""
    pw2, dw, pw1 = node.attrs["layers"]
    s = {k: slot(node, k) for k in INPUTS}
    c = graph[s["w_dw"]].shape[-1]
    g1_shape = (*graph[s["dacc2"]].shape[:3], c)
    x_shape = (*node.attrs["in_shape"][:3], c)
    tmp = {name: Tensor(name, shape, "float32") for name, shape in
           ((f"{node.name}|g2", g1_shape), (f"{node.name}|dacc_dw", g1_shape), (f"{node.name}|g1", x_shape),
            (f"{node.name}|dacc1", x_shape))}
    g2, dacc_dw, g1, dacc1 = tmp
    rng_now = s["rng"]
    if node.attrs.get("rng_skip", 0) and rng_now:  # the pw2 weight update's draws come first (_run_chain)
        rng_now = f"{node.name}|rng_start"
        tmp[rng_now] = Tensor(rng_now, (1,), "int32")
    nodes = [Node("conv2d_input_grad", f"{pw2}/input_grad", (s["dacc2"], s["w2"]), (g2,), PW)]
    rounding = node.attrs["rounding"]

    def rng_io(tag: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        nonlocal rng_now
        if rounding != "stochastic":
            return (), ()
        new = f"{node.name}|rng_{tag}"
        tmp[new] = Tensor(new, (1,), "int32")
        old, rng_now = rng_now, new
        return (old,), (new,)

    def masked(mask: str, dy: str, out: str, layer: str) -> str:
        if not mask:
            return dy
        nodes.append(Node("apply_mask", f"{layer}/apply_mask", (dy, mask), (out,)))
        return out

    def bias(b: str, dacc: str, layer: str, factor: tuple[float, ...]) -> None:
        if b:
            out = f"{node.name}|{layer}:bias"
            tmp[out] = Tensor(out, graph[b].shape, "int32", graph[b].quant)
            rin, rout = rng_io(layer)
            nodes.append(Node("bias_update", f"{layer}/bias_update", (dacc, b, s["lr"], *rin), (out, *rout),
                              {"factor": factor, "rounding": rounding}))

    d_dw = masked(s["dw_mask"], g2, dacc_dw, dw)
    bias(s["b_dw"], d_dw, dw, node.attrs["dw_bias_factor"])
    nodes.append(Node("depthwise_conv2d_input_grad", f"{dw}/input_grad", (d_dw, s["w_dw"]), (g1,),
                      {"stride": node.attrs["dw_stride"], "pad": node.attrs["dw_pad"], "multiplier": 1}))
    d1 = masked(s["pw1_mask"], g1, dacc1, pw1)
    bias(s["b1"], d1, pw1, node.attrs["b1_factor"])
    dx = output(node, "dx")
    if dx:
        nodes.append(Node("conv2d_input_grad", f"{pw1}/input_grad", (d1, s["w1"]), (dx,), PW))
    if s["w1_state"]:
        rin, rout = rng_io("w1")
        attrs = {**PW, "channels": node.attrs["channels"], "factor": node.attrs["w1_factor"], "rounding": rounding}
        nodes.append(Node("conv2d_weight_update", f"{pw1}/weight_update", (s["x"], d1, s["w1_state"], s["lr"], *rin),
                          (output(node, "w1_new"), *rout), attrs))
    return nodes, tmp


def _run_chain(node: Node, graph: Graph, inputs: Sequence[np.ndarray]
               ) -> tuple[list[Node], Graph, dict[str, np.ndarray]]:
    """The unfused chain, the graph with its tensors, and every value it computed."""
    nodes, tmp = _chain(node, graph)
    sub = replace(graph, tensors={**graph.tensors, **tmp})
    env = {t: v for t, v in zip(node.inputs, inputs, strict=False) if t}
    skip = int(node.attrs.get("rng_skip", 0))
    if skip and slot(node, "rng"):
        entry = int(np.asarray(env[slot(node, "rng")]).view(np.uint32)[0])
        env[f"{node.name}|rng_start"] = np.array([jump(entry, skip)], np.uint32).view(np.int32)
    for n in nodes:
        outs = ops.get(n.op).reference(n, sub, [env[t] if t else None for t in n.inputs])
        env.update(zip(n.outputs, outs, strict=True))
    return nodes, sub, env


def block_grad_reference(node: Node, graph: Graph, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The unfused chain's references, run in order (see the module doc)."""
    nodes, _, env = _run_chain(node, graph, inputs)
    pw2, dw, pw1 = node.attrs["layers"]
    last_rng = next((n.outputs[1] for n in reversed(nodes) if len(n.outputs) > 1), "")
    values = {"w1_new": output(node, "w1_new"), "rng_new": last_rng, "dx": output(node, "dx"),
              "b_dw_next": f"{node.name}|{dw}:bias", "b1_next": f"{node.name}|{pw1}:bias", "rng_next": last_rng}
    out = []
    for name in node.attrs["outputs"]:
        if name == "scratch":
            out.append(np.zeros(graph[output(node, "scratch")].shape, np.float32))
        else:
            out.append(env[values[name]])
    return out


def chain_gradients(node: Node, graph: Graph, inputs: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """dL/d(real parameter) of every parameter the fused node updates, by state tensor (as
    `tte.train.Trainer.trace_step` reports the unfused updates')."""
    nodes, sub, env = _run_chain(node, graph, inputs)
    grads = {}
    for n in nodes:
        if n.op in ("bias_update", "conv2d_weight_update"):
            param = n.inputs[1] if n.op == "bias_update" else n.inputs[2]
            grads[param] = real_gradient(n, sub, [env[t] for t in n.inputs])
    return grads


def block_grad_macs(node: Node, graph: Graph) -> int:
    nodes, tmp = _chain(node, graph)
    sub = replace(graph, tensors={**graph.tensors, **tmp})
    return sum(ops.get(n.op).macs(n, sub) for n in nodes)


def state_pairs(node: Node) -> list[tuple[str, str]]:
    """(state input, output holding its new value) pairs of a block_grad or bias_assign node: the C code writes
    the new value in place (codegen/ops/train_update.inplace_outputs). One parameter per node, then the PRNG."""
    if node.op == BIAS_ASSIGN:
        pairs = [(node.inputs[1], node.outputs[0])]
        return pairs + ([(node.inputs[3], node.outputs[1])] if len(node.outputs) > 1 else [])
    pairs = []
    if output(node, "w1_new"):
        pairs.append((slot(node, "w1_state"), output(node, "w1_new")))
    if output(node, "rng_new"):
        pairs.append((slot(node, "rng"), output(node, "rng_new")))
    return pairs


STATE_PAIRS = {BLOCK_GRAD: state_pairs, BIAS_ASSIGN: state_pairs}


def bias_assign_reference(node: Node, graph: Graph, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    return [np.asarray(inputs[0]), *([np.asarray(inputs[2])] if len(node.outputs) > 1 else [])]


# --- xorshift32 jump-ahead (linear over GF(2)) ------------------------------------------------------------------


def _step(x: int) -> int:
    x ^= (x << 13) & 0xFFFFFFFF
    x ^= x >> 17
    return x ^ ((x << 5) & 0xFFFFFFFF)


def _apply(matrix: Sequence[int], x: int) -> int:
    out = 0
    for b in range(32):
        if (x >> b) & 1:
            out ^= matrix[b]
    return out


def jump_matrix(n: int) -> tuple[int, ...]:
    """The 32 columns of xorshift32^n: column b = the state n steps after the state 1 << b, so the state n draws
    ahead of x is the XOR of the columns of x's set bits."""
    result = tuple(1 << b for b in range(32))
    power = tuple(_step(1 << b) for b in range(32))
    while n:
        if n & 1:
            result = tuple(_apply(power, v) for v in result)
        power = tuple(_apply(power, v) for v in power)
        n >>= 1
    return result


def jump(state: int, n: int) -> int:
    """The xorshift32 state after n draws from `state`."""
    return _apply(jump_matrix(n), int(state) & 0xFFFFFFFF)


def _register() -> None:
    register(OpDef(BLOCK_GRAD, block_grad_reference, block_grad_macs))
    register(OpDef(BIAS_ASSIGN, bias_assign_reference))


_register()
