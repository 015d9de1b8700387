"""The float32 twin of an int8 IR graph in PyTorch: the reference that tte's int8 training is measured against.

`FloatNet(graph)` takes the graph after `apply_head` (e.g. `--head new:5`: a zero-initialized float head) and
holds every weight layer's real-valued weight and bias (int8 values times their scales) as PyTorch parameters.
Its forward pass is the int8 graph without rounding: every op output is clamped to the real range its int8
tensor can hold (the range that carries ReLU6 in these models), which is also where tte's backward masks cut
the gradient. `train_only(net, spec)` freezes all but the layers, biases and input channels of a tte update spec,
so the fp32 fine-tuning trains exactly the parameters the int8 train step does.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from tte.ir import Graph, Node
from tte.train.head import HEAD_OP
from tte.train.spec import UpdateSpec, weight_layers


def _real_weight(node: Node, graph: Graph) -> np.ndarray:
    """A weight layer's real weight in PyTorch layout: conv OIHW, depthwise [C, 1, KH, KW], dense [O, I]."""
    w = graph[node.inputs[1]]
    if node.op == HEAD_OP:
        return w.data.astype(np.float32)
    scale = np.asarray(w.quant.scale, np.float32)
    if node.op == "depthwise_conv2d":
        real = w.data.astype(np.float32) * scale.reshape(1, 1, 1, -1)
        return real.transpose(3, 0, 1, 2)
    real = w.data.astype(np.float32) * scale.reshape(-1, *[1] * (w.data.ndim - 1))
    return real.transpose(0, 3, 1, 2) if node.op == "conv2d" else real


def _real_bias(node: Node, graph: Graph) -> np.ndarray:
    w = graph[node.inputs[1]]
    out = w.shape[3] if node.op == "depthwise_conv2d" else w.shape[0]
    if len(node.inputs) < 3 or not node.inputs[2]:
        return np.zeros(out, np.float32)
    b = graph[node.inputs[2]]
    if node.op == HEAD_OP:
        return b.data.astype(np.float32)
    s_in = np.float64(graph[node.inputs[0]].quant.s)
    return (b.data.astype(np.float64) * s_in * np.asarray(w.quant.scale, np.float64)).astype(np.float32)


def _clamp_range(node: Node, graph: Graph) -> tuple[float, float] | None:
    """The real interval an int8 output can represent, intersected with the node's `act` clamp."""
    t = graph[node.outputs[0]]
    if t.dtype != "int8" or t.quant is None:
        return None
    lo, hi = node.attrs.get("act", (-128, 127))
    return (lo - t.quant.zp) * t.quant.s, (hi - t.quant.zp) * t.quant.s


class FloatNet(torch.nn.Module):
    """The graph's forward pass in float32 on NCHW tensors; parameters named after the weight layers."""

    def __init__(self, graph: Graph) -> None:
        super().__init__()
        self.graph = graph
        self.weights = torch.nn.ParameterDict()
        self.biases = torch.nn.ParameterDict()
        self.keys: dict[str, str] = {}
        for i, node in enumerate(weight_layers(graph)):
            key = f"l{i}"
            self.keys[node.name] = key
            self.weights[key] = torch.nn.Parameter(torch.from_numpy(_real_weight(node, graph).copy()))
            self.biases[key] = torch.nn.Parameter(torch.from_numpy(_real_bias(node, graph)))
        self.clamps = {n.name: _clamp_range(n, graph) for n in graph.nodes}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        env = {self.graph.inputs[0].tensor: x}
        for node in self.graph.nodes:
            y = self._op(node, [env[t] for t in node.inputs if t and t in env])
            rng = self.clamps[node.name]
            env[node.outputs[0]] = y if rng is None else torch.clamp(y, rng[0], rng[1])
        return env[self.graph.outputs[0].tensor].reshape(x.shape[0], -1)

    def _op(self, node: Node, args: list[torch.Tensor]) -> torch.Tensor:
        x = args[0]
        if node.op in ("conv2d", "depthwise_conv2d"):
            key = self.keys[node.name]
            top, left, bottom, right = node.attrs["pad"]
            groups = x.shape[1] if node.op == "depthwise_conv2d" else 1
            return F.conv2d(F.pad(x, (left, right, top, bottom)), self.weights[key], self.biases[key],
                            stride=tuple(node.attrs["stride"]), groups=groups)
        if node.op in ("fully_connected", HEAD_OP):
            key = self.keys[node.name]
            return F.linear(x.reshape(x.shape[0], -1), self.weights[key], self.biases[key])
        if node.op == "add":
            return x + args[1]
        if node.op == "mean":
            return x.mean(dim=(2, 3), keepdim=True)
        if node.op == "reshape":
            return x.reshape(x.shape[0], -1)
        raise NotImplementedError(f"FloatNet: op {node.op} ({node.name})")


def train_only(net: FloatNet, spec: UpdateSpec | None) -> list[torch.nn.Parameter]:
    """Freeze everything but what `spec` trains (None: train everything); returns the trainable parameters.

    A weight trained on part of its input channels gets a gradient hook that zeroes the other channels.
    """
    params: list[torch.nn.Parameter] = []
    for name, key in net.keys.items():
        w, b = net.weights[key], net.biases[key]
        lu = spec.layer(name) if spec is not None else None
        train_b = spec is None or (lu is not None and lu.bias)
        train_w = spec is None or (lu is not None and lu.weight)
        w.requires_grad_(train_w)
        b.requires_grad_(train_b)
        params += [p for p, on in ((w, train_w), (b, train_b)) if on]
        if train_w and lu is not None and not lu.full_weight:
            w.register_hook(_channel_mask(lu.in_channels, lu.channels, 0 if lu.op == "depthwise_conv2d" else 1,
                                          w.ndim))
    return params


def _channel_mask(n: int, channels: tuple[int, ...], axis: int, ndim: int):
    """A gradient hook keeping only `channels` of the input-channel `axis`."""
    shape = [1] * ndim
    shape[axis] = n
    mask = torch.zeros(n)
    mask[list(channels)] = 1.0
    mask = mask.reshape(shape)
    return lambda g: g * mask


def images_nchw(xq: np.ndarray, scale: float, zero_point: int) -> torch.Tensor:
    """int8 NHWC samples -> the same values dequantized, float32 NCHW (both nets see identical inputs)."""
    x = (xq.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
