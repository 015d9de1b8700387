"""Gradients through max_pool2d, activation tables, mul, sub, concat and slice against PyTorch autograd.

As in test_gradients.py: torch recomputes every forward node in float64 from the dequantized int8 values; each
output takes the int8 reference's value (straight-through); clamps pass the gradient by the reference's 1-bit
mask. Max pooling routes to torch's own arg-max, activation tables use torch's derivative (HardSwish: the step
at the threshold, the documented approximation). The float32 reference must agree to 1e-4 relative.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from op_nets import activations_net, aifes_like, broadcast_add_net, se_concat_net
from test_gradients import _bias_real, _close, _float_op, _real

from tte.ir import Graph, Node
from tte.train import Trainer, TrainOptions
from tte.train.forward_ops import unpack_mask

CLAMP_MASKED = ("conv2d", "depthwise_conv2d", "fully_connected", "add", "mean", "avg_pool2d", "requantize", "mul",
                "sub", "add_broadcast")


class _StepHardSwish(torch.autograd.Function):
    """HardSwish forward, the step x > threshold as its derivative (what tte trains with)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, threshold: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.threshold = threshold
        return x * F.relu6(x + 3) / 6

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        (x,) = ctx.saved_tensors
        return g * (x > ctx.threshold).to(g.dtype), None


def _lut(node: Node, x: torch.Tensor, threshold: float) -> torch.Tensor:
    kind = node.attrs["source_op"]
    if kind == "hard_swish":
        return _StepHardSwish.apply(x, threshold)
    fns = {"logistic": torch.sigmoid, "tanh": torch.tanh, "relu": F.relu, "relu6": F.relu6,
           "leaky_relu": lambda v: F.leaky_relu(v, float(node.attrs["alpha"]))}
    return fns[kind](x)


def _op(node: Node, graph: Graph, args: list[torch.Tensor], threshold: float) -> torch.Tensor:
    if node.op == "max_pool2d":
        pt, pl, pb, pr = node.attrs["pad"]
        xp = F.pad(args[0].permute(0, 3, 1, 2), (pl, pr, pt, pb), value=-1e9)
        y = F.max_pool2d(xp, node.attrs["kernel"], node.attrs["stride"]).permute(0, 2, 3, 1)
        q = graph[node.outputs[0]].quant
        lo, hi = ((v - q.zp) * float(q.s) for v in node.attrs["act"])
        return torch.clamp(y, lo, hi)
    if node.op == "lut":
        return _lut(node, args[0], threshold)
    if node.op in ("mul", "sub", "add_broadcast"):
        return {"mul": torch.mul, "sub": torch.sub, "add_broadcast": torch.add}[node.op](args[0], args[1])
    if node.op == "concat":
        return torch.cat(args, dim=node.attrs["axis"])
    if node.op == "slice":
        idx = tuple(slice(b, b + n) for b, n in zip(node.attrs["begin"], node.attrs["size"], strict=True))
        return args[0][idx]
    if node.op == "requantize":
        return args[0]
    return _float_op(node, graph, args)


def torch_gradients(tr: Trainer, x: np.ndarray, label: int):
    trace = tr.trace_step(x, label)
    tg, env = tr.program, trace.env
    g = tg.graph
    inp = tg.forward.inputs[0].tensor
    vals: dict[str, torch.Tensor] = {inp: _real(g, inp, env[inp])}
    leaves: dict[str, torch.Tensor] = {}
    for n in g.nodes[:tg.num_forward]:
        if n.op == "gather_channels":
            continue
        base = n.op[:-5] if n.name in tg.masks else n.op
        node = Node(base, n.name, n.inputs, n.outputs[:1], n.attrs)
        args = []
        for i, t in enumerate(n.inputs):
            if t not in vals:
                real = _bias_real(g, n, env[t]) if i == 2 and g[t].dtype == "int32" else _real(g, t, env[t])
                leaves[t] = real.clone().requires_grad_(True)
                vals[t] = leaves[t]
            args.append(vals[t])
        pre = _op(node, g, args, tr.options.hard_swish_threshold).reshape(g[n.outputs[0]].shape)
        if n.name in tg.masks and base in CLAMP_MASKED:
            pre = pre * torch.from_numpy(unpack_mask(env[tg.masks[n.name]], pre.shape).astype(np.float64))
        y = pre + (_real(g, n.outputs[0], env[n.outputs[0]]) - pre).detach()
        y.retain_grad()
        vals[n.outputs[0]] = y
    loss = F.cross_entropy(vals[tg.logits].reshape(1, -1), torch.tensor([label]))
    loss.backward()
    assert abs(loss.item() - trace.loss) < 1e-5 * max(1.0, abs(loss.item()))
    params = {k: v.grad.numpy() for k, v in leaves.items() if v.grad is not None}
    acts = {t: v.grad.numpy() for t, v in vals.items() if v.grad is not None and t not in leaves}
    return trace, params, acts


def check(tr: Trainer, x: np.ndarray, label: int) -> dict[str, float]:
    trace, params, acts = torch_gradients(tr, x, label)
    errors = {}
    for name, ours in trace.grads.items():  # a full update: every input channel (depthwise: [KH, KW, C])
        errors[name] = _close(ours, params[name].reshape(np.shape(ours)), name)
    for t, ref in acts.items():
        ours = trace.env.get(tr.program.grads.get(t, ""))
        if ours is not None and np.abs(ref).max() > 0:
            errors[f"d/{t}"] = _close(ours, ref, f"d/{t}")
    return errors


NETS = {"aifes_like": aifes_like, "activations": activations_net, "se_concat": se_concat_net,
        "broadcast_add": broadcast_add_net}


@pytest.mark.parametrize("net", sorted(NETS))
def test_full_update_gradients_match_torch(net: str) -> None:
    graph, x = NETS[net]()
    tr = Trainer(graph, "full", TrainOptions(rounding="nearest"))
    errors = check(tr, x, label=1)
    n_params = sum(lu.bias + lu.weight for lu in tr.spec.layers)
    assert sum(1 for k in errors if not k.startswith("d/")) == n_params
    # the gradient reached the input side of every op of the issue
    ops = {n.op.removesuffix("_mask") for n in tr.program.graph.nodes[:tr.program.num_forward]}
    for op in ops & {"max_pool2d", "lut", "mul", "sub", "add_broadcast", "concat", "slice"}:
        node = next(n for n in graph.nodes if n.op == op)
        assert f"d/{node.inputs[0]}" in errors, f"no gradient checked below {op} '{node.name}'"


def test_saved_state_is_compact() -> None:
    """Max pool saves arg-max codes (2 bits per output for 2x2, 4 bits for 3x3 with padding); step-derivative
    tables save 1-bit masks; sigmoid / tanh keep their int8 input (a table gradient)."""
    graph, _ = aifes_like()
    tg = Trainer(graph, "full").program
    pool1, pool2 = tg.graph["pool1:argmax"], tg.graph["pool2:argmax"]
    assert pool1.size * 8 == 2 * tg.graph["pool1:out"].size
    assert pool2.size == (4 * tg.graph["pool2:out"].size + 7) // 8
    graph, _ = activations_net()
    tg = Trainer(graph, "full").program
    ops = {n.name: n.op for n in tg.graph.nodes}
    assert {ops[k] for k in ("relu", "relu6", "leaky_relu", "hard_swish")} == {"lut_mask"}
    assert ops["logistic"] == ops["tanh"] == "lut"
    assert ops["logistic/grad"] == "lut_table_grad" and ops["relu/grad"] == "lut_step_grad"


def test_hard_swish_threshold_is_an_option() -> None:
    graph, x = activations_net()
    masks = []
    for t in (0.0, -0.3):
        tr = Trainer(graph, "full", TrainOptions(rounding="nearest", hard_swish_threshold=t))
        check(tr, x, label=2)
        masks.append(tr.trace_step(x, 2).env[tr.program.masks["hard_swish"]])
    assert not np.array_equal(*masks)


def test_trains_through_the_new_ops() -> None:
    """A few SGD steps on one sample lower its loss (sanity of signs and scales)."""
    graph, x = se_concat_net()
    tr = Trainer(graph, "full", TrainOptions(rounding="nearest"))
    first = tr.train_step(x, 0, 0.05)
    for _ in range(10):
        last = tr.train_step(x, 0, 0.05)
    assert last < first
