"""fuse_blocks: the backward of each inverted-residual block as one `block_grad` node (tte/train/block_grad.py).

The pass looks in the train step's backward nodes for the unfused chain of a block pw1 (1x1 conv, stride 1)
-> depthwise (any kernel and stride, multiplier 1) -> pw2 (1x1 conv, stride 1):
    conv2d_input_grad (pw2) [conv2d_weight_update (pw2)] [apply_mask (dw)] [bias_update (dw)]
    depthwise_conv2d_input_grad (dw) [apply_mask (pw1)] [bias_update (pw1)] [conv2d_input_grad (pw1)]
    [conv2d_weight_update (pw1)]
with `grad_add` nodes allowed in between (they move after the fused node), and replaces it by one
`block_grad` node, then the pw2 weight update (it writes w2 in place, so it runs after the fused node has read
w2; its PRNG draws, first in the unfused order, are skipped by the fused node's streams), then a `bias_assign` per
trained bias. The chain's intermediate gradients (two fp32 tensors of the expanded width) disappear: that is the
point, they set the backward peak of sparse updates. The pw2 bias update (before its input gradient) stays
where it is. A chain is left as it is when the depthwise weight trains, a pointwise conv is not 1x1 stride 1, an
intermediate gradient has another reader, any other node interrupts it, the block is beyond the C kernel's
limits (block_grad.MAX_TAPS, MAX_WIDTH), or the pw2 weight trains in a way `_pw2_update_movable` rejects.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from tte.ir import Node, Tensor
from tte.train.block_grad import BIAS_ASSIGN, BLOCK_GRAD, INPUTS, MAX_TAPS, MAX_WIDTH

SKIPPABLE = ("grad_add",)  # nodes that may sit inside a chain; they read no chain tensor but the block's dx


@dataclass
class _Chain:
    """What matching found: the chain's nodes by role and the nodes to move after it."""

    members: list[int] = field(default_factory=list)
    moved: list[int] = field(default_factory=list)
    role: dict[str, Node] = field(default_factory=dict)
    inner: list[str] = field(default_factory=list)  # intermediate gradients (must have no other reader)


def fuse_blocks(nodes: list[Node], tensors: dict[str, Tensor], num_forward: int, lr: str) -> list[Node]:
    """The node list with every fusable block backward replaced (new tensors are added to `tensors`); `lr` is
    the learning-rate input."""
    forward = {n.name: n for n in nodes[:num_forward]}
    readers: dict[str, list[int]] = {}
    for k, n in enumerate(nodes):
        for t in n.inputs:
            if t:
                readers.setdefault(t, []).append(k)
    out: list[Node] = []
    k = 0
    while k < len(nodes):
        chain = _match(nodes, k, forward, tensors, readers) if k >= num_forward else None
        if chain is None:
            out.append(nodes[k])
            k += 1
            continue
        out.extend(_fused(chain, forward, tensors, lr))
        out.extend(nodes[j] for j in chain.moved)
        k = chain.members[-1] + 1
    return out


def _layer(node: Node) -> str:
    return node.name.rsplit("/", 1)[0]


def _pointwise(node: Node | None, tensors: Mapping[str, Tensor]) -> bool:
    """A 1x1, stride-1, unpadded convolution (forward node)."""
    if node is None or node.op.removesuffix("_mask") != "conv2d":
        return False
    w = tensors[node.inputs[1]]
    return (w.shape[1:3] == (1, 1) and tuple(node.attrs["stride"]) == (1, 1)
            and tuple(node.attrs["pad"]) == (0, 0, 0, 0))


def _match(nodes: list[Node], k: int, forward: Mapping[str, Node], tensors: Mapping[str, Tensor],
           readers: Mapping[str, list[int]]) -> _Chain | None:
    n2 = nodes[k]
    if n2.op != "conv2d_input_grad" or not _pointwise(forward.get(_layer(n2)), tensors):
        return None
    chain = _Chain([k], role={"pw2_grad": n2})
    steps = iter(range(k + 1, len(nodes)))
    cur = n2.outputs[0]
    j = next(steps, None)

    def take(op: str, role: str, where: int = 0) -> bool:
        """Take nodes[j] (skipping grad_adds) when it is `op` reading `cur` at input `where`."""
        nonlocal j
        while j is not None and nodes[j].op in SKIPPABLE and cur not in nodes[j].inputs:
            chain.moved.append(j)
            j = next(steps, None)
        if j is None or nodes[j].op != op or nodes[j].inputs[where] != cur:
            return False
        chain.members.append(j)
        chain.role[role] = nodes[j]
        j = next(steps, None)
        return True

    if j is not None and nodes[j].op == "conv2d_weight_update" and nodes[j].inputs[1] == n2.inputs[0]:
        chain.role["pw2_weight"] = nodes[j]  # runs right after the fused node (it writes w2 in place)
        chain.members.append(j)
        j = next(steps, None)
    chain.inner.append(cur)
    if take("apply_mask", "dw_mask"):
        cur = chain.role["dw_mask"].outputs[0]
        chain.inner.append(cur)
    take("bias_update", "dw_bias")
    if not take("depthwise_conv2d_input_grad", "dw_grad"):
        return None
    dw = forward.get(_layer(chain.role["dw_grad"]))
    if dw is None or int(dw.attrs.get("multiplier", 1)) != 1:
        return None
    cur = chain.role["dw_grad"].outputs[0]
    chain.inner.append(cur)
    if take("apply_mask", "pw1_mask"):
        cur = chain.role["pw1_mask"].outputs[0]
        chain.inner.append(cur)
    found = [take("bias_update", "pw1_bias"), take("conv2d_input_grad", "pw1_grad"),
             take("conv2d_weight_update", "pw1_weight", 1)]
    chain.moved = [m for m in chain.moved if m < chain.members[-1]]
    if not any(found) or not _consistent(chain, forward, tensors, readers):
        return None
    return chain


def _consistent(chain: _Chain, forward: Mapping[str, Node], tensors: Mapping[str, Tensor],
                readers: Mapping[str, list[int]]) -> bool:
    """Layer names agree, pw1 is pointwise and feeds the depthwise, intermediates have no reader outside."""
    r = chain.role
    layers = {"dw_mask": "dw", "dw_bias": "dw", "dw_grad": "dw", "pw1_mask": "pw1", "pw1_bias": "pw1",
              "pw1_grad": "pw1", "pw1_weight": "pw1"}
    names: dict[str, set[str]] = {"dw": set(), "pw1": set()}
    for role, layer in layers.items():
        if role in r:
            names[layer].add(_layer(r[role]))
    if len(names["dw"]) != 1 or len(names["pw1"]) != 1:
        return False
    pw1 = forward.get(next(iter(names["pw1"])))
    dw = forward[next(iter(names["dw"]))]
    if not _pointwise(pw1, tensors) or pw1.outputs[0] != dw.inputs[0]:
        return False
    _, kh, kw, _ = tensors[dw.inputs[1]].shape
    if kh * kw > MAX_TAPS or tensors[dw.inputs[0]].shape[2] > MAX_WIDTH:  # the C kernel's limits
        return False
    if "pw1_weight" in r and tuple(r["pw1_weight"].attrs["stride"]) != (1, 1):
        return False
    if "pw2_weight" in r and not _pw2_update_movable(r, tensors):
        return False
    members = set(chain.members)
    return not any(set(readers.get(t, [])) - members for t in chain.inner)


def _pw2_update_movable(r: Mapping[str, Node], tensors: Mapping[str, Tensor]) -> bool:
    """A trained pw2 weight is updated after the fused node; that needs its whole weight (the fused node reads it
    from one array), a frozen pw1 weight (the fused node then owns no parameter) and, with stochastic rounding, a
    trained bias in the chain (whose bias_assign restores the PRNG state the unfused chain leaves)."""
    wu = r["pw2_weight"]
    whole = len(wu.attrs["channels"]) == tensors[wu.inputs[2]].shape[-1]
    stochastic = wu.attrs["rounding"] == "stochastic"
    return whole and "pw1_weight" not in r and (not stochastic or "dw_bias" in r or "pw1_bias" in r)


def _fused(chain: _Chain, forward: Mapping[str, Node], tensors: dict[str, Tensor], lr: str) -> list[Node]:
    """The block_grad node and its bias_assign nodes for a matched chain."""
    r = chain.role
    dw_name = _layer(r["dw_grad"])
    pw1_name = _layer(next(r[k] for k in ("pw1_mask", "pw1_bias", "pw1_grad", "pw1_weight") if k in r))
    pw1, dw = forward[pw1_name], forward[dw_name]
    updates = [r[k] for k in ("dw_bias", "pw1_bias", "pw1_weight") if k in r]
    wu, wu2 = r.get("pw2_weight"), r.get("pw2_weight")
    wu = r.get("pw1_weight")
    first = wu2 or (updates[0] if updates else None)
    rounding = first.attrs["rounding"] if first is not None else "nearest"
    stochastic = rounding == "stochastic" and bool(updates)  # draws in the fused node
    slots = {
        "dacc2": r["pw2_grad"].inputs[0], "w1": pw1.inputs[1], "w1_state": wu.inputs[2] if wu else "",
        "w2": r["pw2_grad"].inputs[1], "dw_mask": r["dw_mask"].inputs[1] if "dw_mask" in r else "",
        "w_dw": r["dw_grad"].inputs[1], "b_dw": r["dw_bias"].inputs[1] if "dw_bias" in r else "",
        "pw1_mask": r["pw1_mask"].inputs[1] if "pw1_mask" in r else "",
        "b1": r["pw1_bias"].inputs[1] if "pw1_bias" in r else "", "x": wu.inputs[0] if wu else "",
        "lr": lr, "rng": first.inputs[-1] if stochastic else "",  # the state before the first draw
    }
    rng_out = updates[-1].outputs[1] if stochastic else ""
    outs: dict[str, str] = {}
    if wu:
        outs["w1_new"] = wu.outputs[0]
        if stochastic:
            outs["rng_new"] = rng_out
    if "pw1_grad" in r:
        outs["dx"] = r["pw1_grad"].outputs[0]
    assigns = []
    for role, key in (("dw_bias", "b_dw_next"), ("pw1_bias", "b1_next")):
        if role in r:
            b = r[role].inputs[1]
            outs[key] = _new_tensor(tensors, f"{b}:next", tensors[b].shape, "int32")
            assigns.append((r[role], outs[key]))
    if stochastic and not wu:
        outs["rng_next"] = _new_tensor(tensors, f"{pw1_name}:rng_next", (1,), "int32")
    x_shape = tensors[pw1.inputs[0]].shape
    s_count = len(wu.attrs["channels"]) if wu else 0
    _, kh, kw, _ = tensors[slots["w_dw"]].shape
    floats = scratch_floats(tensors[slots["dacc2"]].shape, x_shape, s_count, kh * kw)
    outs["scratch"] = _new_tensor(tensors, f"{pw1_name}:block_scratch", (floats,), "float32")
    attrs = {
        "layers": (_layer(r["pw2_grad"]), dw_name, pw1_name),
        "dw_stride": tuple(dw.attrs["stride"]), "dw_pad": tuple(dw.attrs["pad"]), "rounding": rounding,
        "dw_bias_factor": r["dw_bias"].attrs["factor"] if "dw_bias" in r else (),
        "b1_factor": r["pw1_bias"].attrs["factor"] if "pw1_bias" in r else (),
        "w1_factor": wu.attrs["factor"] if wu else (), "channels": tuple(wu.attrs["channels"]) if wu else (),
        "outputs": tuple(outs), "in_shape": tuple(x_shape),
        "rng_skip": _draws(wu2, tensors) if stochastic and wu2 else 0,
    }
    fused = Node(BLOCK_GRAD, f"{pw1_name}/block_grad", tuple(slots[k] for k in INPUTS), tuple(outs.values()), attrs)
    result = [fused, *([wu2] if wu2 else [])]
    rng_before = wu2.outputs[1] if stochastic and wu2 else slots["rng"]  # the state array when the commit runs
    for i, (upd, value) in enumerate(assigns):
        extra_in, extra_out = (), ()
        if "rng_next" in outs and i == len(assigns) - 1:
            extra_in, extra_out = (outs["rng_next"], rng_before), (rng_out,)
        result.append(Node(BIAS_ASSIGN, upd.name, (value, upd.inputs[1], *extra_in), (upd.outputs[0], *extra_out)))
    return result


def scratch_floats(grad_shape: tuple[int, ...], x_shape: tuple[int, ...], trained: int, taps: int) -> int:
    """The C kernel's scratch (floats): for a group of 4 channels their dw output and pw1 output gradients, pw1
    weight rows, weight gradients, pw2 weight columns and depthwise taps (runtime_c/src/train_block_grad.c,
    tte_block_grad_scratch_floats)."""
    p2 = grad_shape[1] * grad_shape[2]
    p1, i = x_shape[1] * x_shape[2], x_shape[3]
    return 4 * (p2 + p1 + i + trained + grad_shape[3] + taps)


def _draws(update: Node, tensors: Mapping[str, Tensor]) -> int:
    """PRNG draws of a conv weight update: one per written element."""
    w = tensors[update.inputs[2]]
    return w.size // w.shape[-1] * len(update.attrs["channels"])


def _new_tensor(tensors: dict[str, Tensor], name: str, shape: tuple[int, ...], dtype: str) -> str:
    base, k = name, 1
    while name in tensors:
        k += 1
        name = f"{base}{k}"
    tensors[name] = Tensor(name, shape, dtype)
    return name
