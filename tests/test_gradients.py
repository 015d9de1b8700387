"""The reference's gradients against PyTorch autograd on the dequantized graph.

Torch recomputes every forward node in float64 from the dequantized int8 inputs and parameters; its output
takes the int8 reference's dequantized value (straight-through), with the gradient of the clamp given by the
reference's 1-bit mask. Autograd then gives dL/d(param) and dL/d(activation) at exactly the reference's operating
point; the float32 reference must agree to 1e-4 relative (to the largest magnitude of each gradient).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from train_helpers import NetBuilder

from tte.ir import Graph, Node
from tte.train import Trainer, TrainOptions
from tte.train.forward_ops import unpack_mask
from tte.train.head import HEAD_OP
from tte.train.spec import scheme_spec

RTOL = 1e-4


def _real(graph: Graph, name: str, value: np.ndarray) -> torch.Tensor:
    t = graph[name]
    if t.dtype == "float32":
        return torch.from_numpy(np.asarray(value, np.float64))
    q = t.quant
    scale = np.asarray(q.scale, np.float64)
    if q.axis is not None:
        shape = [1] * value.ndim
        shape[q.axis] = -1
        scale = scale.reshape(shape)
    return torch.from_numpy((value.astype(np.float64) - q.zero_point.reshape(scale.shape)) * scale)


def _bias_real(graph: Graph, node: Node, value: np.ndarray) -> torch.Tensor:
    x, w = graph[node.inputs[0]], graph[node.inputs[1]]
    o = value.shape[0]
    s = np.float64(x.quant.s) * np.broadcast_to(np.asarray(w.quant.scale, np.float64), (o,))
    return torch.from_numpy(value.astype(np.float64) * s)


def _nchw(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 3, 1, 2)


def _conv(node: Node, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, depthwise: bool) -> torch.Tensor:
    pt, pl, pb, pr = node.attrs["pad"]
    xp = F.pad(_nchw(x), (pl, pr, pt, pb))
    if depthwise:
        wt = w[0].permute(2, 0, 1)[:, None]
        y = F.conv2d(xp, wt, b, stride=node.attrs["stride"], groups=xp.shape[1])
    else:
        y = F.conv2d(xp, w.permute(0, 3, 1, 2), b, stride=node.attrs["stride"])
    return y.permute(0, 2, 3, 1)


def _avg_pool(node: Node, x: torch.Tensor) -> torch.Tensor:
    pt, pl, pb, pr = node.attrs["pad"]
    c = x.shape[3]
    k = torch.ones((c, 1, *node.attrs["kernel"]), dtype=x.dtype)
    summed = F.conv2d(F.pad(_nchw(x), (pl, pr, pt, pb)), k, stride=node.attrs["stride"], groups=c)
    ones = F.pad(torch.ones_like(_nchw(x)), (pl, pr, pt, pb))
    count = F.conv2d(ones, k, stride=node.attrs["stride"], groups=c)
    return (summed / count).permute(0, 2, 3, 1)


def _float_op(node: Node, graph: Graph, args: list[torch.Tensor]) -> torch.Tensor:
    op = node.op
    if op in ("conv2d", "depthwise_conv2d"):
        return _conv(node, *args, depthwise=op == "depthwise_conv2d")
    if op in ("fully_connected", HEAD_OP):
        return args[0].reshape(1, -1) @ args[1].reshape(args[1].shape[0], -1).T + args[2]
    if op == "add":
        return args[0] + args[1]
    if op == "mean":
        return args[0].mean(dim=(1, 2), keepdim=True)
    if op == "avg_pool2d":
        return _avg_pool(node, args[0])
    if op == "pad":
        pads = [p for pair in reversed(node.attrs["pads"]) for p in pair]
        return F.pad(args[0], pads)
    if op == "reshape":
        return args[0].reshape(graph[node.outputs[0]].shape)
    raise AssertionError(f"no torch op for {op}")


def torch_gradients(tr: Trainer, x: np.ndarray, label: int):
    """(trace, torch param grads by tensor name, torch activation grads by tensor name)."""
    trace = tr.trace_step(x, label)
    tg, env = tr.program, trace.env
    g = tg.graph
    leaves: dict[str, torch.Tensor] = {}
    vals: dict[str, torch.Tensor] = {tg.forward.inputs[0].tensor: _real(g, tg.forward.inputs[0].tensor, env[
        tg.forward.inputs[0].tensor])}
    for n in g.nodes[:tg.num_forward]:
        if n.op == "gather_channels":
            continue
        base = n.op[:-5] if n.name in tg.masks else n.op
        node = Node(base, n.name, n.inputs, n.outputs[:1], n.attrs)
        args = []
        for i, t in enumerate(n.inputs):
            if t in vals:
                args.append(vals[t])
                continue
            value = env[t]
            real = _bias_real(g, n, value) if i == 2 and g[t].dtype == "int32" else _real(g, t, value)
            leaves[t] = real.clone().requires_grad_(True)
            args.append(leaves[t])
        pre = _float_op(node, g, args).reshape(g[n.outputs[0]].shape)
        if n.name in tg.masks:
            pre = pre * torch.from_numpy(unpack_mask(env[tg.masks[n.name]], pre.shape).astype(np.float64))
        y = pre + (_real(g, n.outputs[0], env[n.outputs[0]]) - pre).detach()
        y.retain_grad()
        vals[n.outputs[0]] = y
    logits = vals[tg.logits].reshape(1, -1)
    loss = F.cross_entropy(logits, torch.tensor([label]))
    loss.backward()
    assert abs(loss.item() - trace.loss) < 1e-5 * max(1.0, abs(loss.item()))
    acts = {t: v.grad.numpy() for t, v in vals.items() if v.grad is not None}
    return trace, {k: v.grad.numpy() for k, v in leaves.items() if v.grad is not None}, acts


def _close(ours: np.ndarray, ref: np.ndarray, what: str) -> float:
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} != {ref.shape}"
    scale = np.abs(ref).max()
    assert scale > 0, f"{what}: the reference gradient is all zero (a test that cannot fail)"
    err = np.abs(ours - ref).max() / scale
    assert err <= RTOL, f"{what}: relative error {err:.2e}"
    return err


def check_against_torch(tr: Trainer, x: np.ndarray, label: int) -> dict[str, float]:
    trace, params, acts = torch_gradients(tr, x, label)
    errors = {}
    tg = tr.program
    for n in tg.backward_nodes():
        if not n.op.endswith("update") and not n.op.endswith("update_f32"):
            continue
        name = n.inputs[1] if n.op.startswith("bias") else n.inputs[2]
        ref = params[name]
        if not n.op.startswith("bias"):
            ch = np.asarray(n.attrs["channels"])
            ref = ref[..., ch] if n.op != "depthwise_conv2d_weight_update" else ref[0][..., ch]
        errors[name] = _close(trace.grads[name], ref, name)
    for t, ref in acts.items():
        ours = trace.env.get(tg.grads.get(t, ""))
        if ours is not None and np.abs(ref).max() > 0:
            errors[f"d/{t}"] = _close(ours, ref, f"d/{t}")
    return errors


# --- graphs -------------------------------------------------------------------------------------------------------


def _input(nb: NetBuilder, seed: int) -> np.ndarray:
    q = nb.tensors[nb.input].quant
    x = np.random.default_rng(seed).uniform(-1, 1, nb.tensors[nb.input].shape)
    return np.clip(np.round(x / q.s) + q.zp, -128, 127).astype(np.int8)


def conv_stride2_net() -> tuple[Graph, np.ndarray]:
    """conv3x3/2 -> conv3x3 -> conv1x1 -> mean -> fc: kxk, stride 2, 1x1, mean, FC."""
    rng = np.random.default_rng(1)
    nb = NetBuilder("conv_s2", rng.uniform(-1, 1, (8, 9, 9, 3)), 1)
    nb.conv(6, 3, 2, act="relu6", name="c0")
    nb.conv(8, 3, 1, act="relu", name="c1")
    nb.conv(8, 1, 1, act="none", name="c2")
    nb.mean(keepdims=False, name="gap")
    nb.fc(5, name="fc")
    return nb.graph(), _input(nb, 11)


def depthwise_add_net() -> tuple[Graph, np.ndarray]:
    """conv1x1 -> depthwise3x3 -> conv1x1 -> add -> avg pool (narrow clamp) -> reshape -> fc."""
    rng = np.random.default_rng(2)
    nb = NetBuilder("dw_add", rng.uniform(-1, 1, (8, 6, 6, 4)), 2)
    skip = nb.conv(4, 1, act="relu6", name="stem")
    nb.conv(8, 1, act="relu6", name="expand")
    nb.depthwise(3, 1, act="relu6", name="dw")
    nb.conv(4, 1, act="none", name="project")
    nb.add(skip, act="relu", name="res")
    nb.avg_pool(2, 2, name="pool", act=(-100, 100))
    nb.reshape((1, 36), name="flat")
    nb.fc(6, name="fc")
    return nb.graph(), _input(nb, 12)


def pad_pool_net() -> tuple[Graph, np.ndarray]:
    """depthwise/2 -> pad -> conv3x3 valid -> avg pool 3x3/2 with padding -> mean -> fc."""
    rng = np.random.default_rng(3)
    nb = NetBuilder("pad_pool", rng.uniform(-1, 1, (8, 10, 10, 3)), 3)
    nb.depthwise(3, 2, act="relu6", name="dw")
    nb.pad(((0, 0), (1, 2), (2, 1), (0, 0)), name="pad")
    nb.conv(5, 3, 1, act="relu6", pad=(0, 0, 0, 0), name="c")
    nb.avg_pool(3, 2, pad=(1, 1, 1, 1), name="pool")
    nb.mean(keepdims=True, name="gap")
    nb.reshape((1, 5), name="flat")
    nb.fc(4, name="fc")
    return nb.graph(), _input(nb, 13)


NETS = {"conv_stride2": conv_stride2_net, "depthwise_add": depthwise_add_net, "pad_pool": pad_pool_net}


@pytest.mark.parametrize("net", sorted(NETS))
def test_full_update_gradients_match_torch(net):
    graph, x = NETS[net]()
    tr = Trainer(graph, "full", TrainOptions(rounding="nearest"))
    errors = check_against_torch(tr, x, label=1)
    # every trained parameter and every activation gradient was compared
    n_params = sum(1 for lu in tr.spec.layers for _ in range(lu.bias + lu.weight))
    assert sum(1 for k in errors if not k.startswith("d/")) == n_params
    assert any(k.startswith("d/") for k in errors)


def test_partial_channels_and_depthwise_ratio_match_torch():
    graph, x = depthwise_add_net()
    spec = scheme_spec({"bias": ["dw"], "weights": {"expand": [0, 2], "dw": 0.5, "project": 0.25},
                        "classifier": "full"}, graph)
    tr = Trainer(graph, spec, TrainOptions())
    errors = check_against_torch(tr, x, label=4)
    assert tr.program.graph["expand:saved"].shape == (1, 6, 6, 2)
    assert {"expand:w", "dw:w", "dw:b", "project:w", "fc:w", "fc:b"} <= set(errors)


@pytest.mark.parametrize("head", ["fp32", "new:3"])
def test_fp32_head_gradients_match_torch(head):
    graph, x = conv_stride2_net()
    tr = Trainer(graph, "last:2", TrainOptions(head=head))
    if head == "new:3":  # a zero head passes no gradient down: give it weights first
        w = np.random.default_rng(0).normal(0, 0.5, tr.params()["fc:w_f32"].shape).astype(np.float32)
        tr.set_params({"fc:w_f32": w})
    errors = check_against_torch(tr, x, label=2)
    assert {"fc:w_f32", "fc:b_f32", "c2:w", "c2:b"} <= set(errors)


def test_loss_gradient_is_softmax_minus_onehot():
    graph, x = conv_stride2_net()
    tr = Trainer(graph, "last:1", TrainOptions())
    trace = tr.trace_step(x, 3)
    z = torch.tensor(tr.infer(x).astype(np.float64), requires_grad=True)
    loss = F.cross_entropy(z[None], torch.tensor([3]))
    loss.backward()
    _close(trace.env[tr.program.grads[tr.program.logits]].reshape(-1), z.grad.numpy(), "dlogits")
    assert abs(trace.loss - loss.item()) < 1e-6 * max(1, loss.item())


def test_fully_connected_on_a_feature_map_with_partial_channels():
    """FC reading a [1, H, W, C] map directly: its input channels are the flattened features."""
    rng = np.random.default_rng(4)
    nb = NetBuilder("fc_map", rng.uniform(-1, 1, (8, 6, 6, 2)), 4)
    nb.conv(3, 3, 2, act="relu6", name="c")
    nb.fc(4, name="fc")
    graph = nb.graph()
    spec = scheme_spec({"bias": ["c"], "weights": {"fc": 0.5, "c": [1]}}, graph)
    tr = Trainer(graph, spec, TrainOptions())
    errors = check_against_torch(tr, _input(nb, 14), label=0)
    assert tr.program.graph[tr.program.saved["fc"]].shape == (1, 14)
    assert {"c:w", "c:b", "fc:w"} <= set(errors)
