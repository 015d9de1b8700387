"""Small, realistic int8 IR models for tests and demos, built in code (seeded, no files).

- `mobilenetv2(...)`: a MobileNetV2-style network: 3x3 stride-2 stem, inverted-residual blocks (1x1 expand +
  ReLU6, depthwise k x k + ReLU6, 1x1 linear projection, residual add when stride 1 and channels match), a 1x1
  head conv, global average pooling (mean) and a fully connected classifier.
- `mobilenetv2_block(...)`: one inverted-residual block on its own.
- `small_cnn(...)`: conv, conv, average pool, fully connected: the smallest "real" model.

Weights are He-normal, quantized symmetric per channel; each layer's output quantization is calibrated on the
reference outputs for random inputs (0.1 / 99.9 percentiles, min / max for small tensors, ReLU6 ranges capped
at 6 as TF does), so the activations use the int8 range instead of saturating. Node names follow the paper
models (`first_conv`, `blocks.<i>.pointwise1|depthwise|pointwise2|residual`, `pool`, `classifier`); each node's
output tensor has the node's name, so a TFLite round trip (which names nodes after their output) keeps them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tte.ir import Graph, IOSpec, Node, QParams, Tensor
from tte.ops import OPS
from tte.quant import activation_range


@dataclass(frozen=True)
class Block:
    """One inverted-residual block: expansion ratio, output channels, depthwise kernel, stride."""

    expand: int
    out: int
    kernel: int
    stride: int


TINY_BLOCKS = (Block(1, 8, 3, 1), Block(3, 12, 5, 2), Block(3, 12, 7, 1), Block(4, 16, 3, 2), Block(4, 16, 5, 1))


class GraphBuilder:
    """Adds layers one by one and calibrates each output quantization on the layer's reference outputs."""

    def __init__(self, name: str, seed: int = 0, samples: int = 8, pad_mode: str = "symmetric"):
        if pad_mode not in ("symmetric", "same"):
            raise ValueError(f"pad_mode {pad_mode}")
        self.name, self.pad_mode, self.samples = name, pad_mode, samples
        self.rng = np.random.default_rng(seed)
        self.tensors: dict[str, Tensor] = {}
        self.nodes: list[Node] = []
        self.values: dict[str, list[np.ndarray]] = {}  # calibration activations, one array per sample
        self.inputs: list[str] = []

    def input(self, name: str, shape: tuple[int, ...], scale: float = 1 / 128, zp: int = 0) -> str:
        self.tensors[name] = Tensor(name, shape, "int8", QParams(scale, zp))
        self.values[name] = [self.rng.integers(-128, 128, shape).astype(np.int8) for _ in range(self.samples)]
        self.inputs.append(name)
        return name

    def conv(self, name: str, x: str, cout: int, k: int, stride: int = 1, act: str = "none",
             depthwise: bool = False, multiplier: int = 1) -> str:
        """conv2d, or depthwise_conv2d (cout = input channels * multiplier), padded as `pad_mode` says."""
        xt = self.tensors[x]
        _, h, w, cin = xt.shape
        pads = [self._pads(n, k, stride) for n in (h, w)]
        pad = (pads[0][0], pads[1][0], pads[0][1], pads[1][1])
        oh, ow = ((n + a + b - k) // stride + 1 for n, (a, b) in zip((h, w), pads, strict=True))
        if depthwise:
            cout = cin * multiplier
            wt = self._weights(f"{name}.weight", (1, k, k, cout), 3, fan_in=k * k)
        else:
            wt = self._weights(f"{name}.weight", (cout, k, k, cin), 0, fan_in=k * k * cin)
        b = self._bias(f"{name}.bias", xt, wt)
        op = "depthwise_conv2d" if depthwise else "conv2d"
        attrs = {"stride": (stride, stride), "pad": pad, **({"multiplier": multiplier} if depthwise else {})}
        return self._layer(op, name, [xt, wt, b], (1, oh, ow, cout), attrs, act)

    def fully_connected(self, name: str, x: str, cout: int, act: str = "none") -> str:
        xt = self.tensors[x]
        wt = self._weights(f"{name}.weight", (cout, xt.size), 0, fan_in=xt.size)
        return self._layer("fully_connected", name, [xt, wt, self._bias(f"{name}.bias", xt, wt)], (1, cout), {}, act)

    def add(self, name: str, a: str, b: str, act: str = "none") -> str:
        ta, tb = self.tensors[a], self.tensors[b]
        return self._layer("add", name, [ta, tb], ta.shape, {}, act)

    def avg_pool(self, name: str, x: str, k: int, stride: int) -> str:
        """VALID average pooling; it keeps the input quantization (TFLite rescales nothing)."""
        xt = self.tensors[x]
        oh, ow = ((n - k) // stride + 1 for n in xt.shape[1:3])
        attrs = {"kernel": (k, k), "stride": (stride, stride), "pad": (0, 0, 0, 0), "act": (-128, 127)}
        return self._fixed("avg_pool2d", name, xt, (1, oh, ow, xt.shape[3]), xt.quant, attrs)

    def pad(self, name: str, x: str, pads: tuple[tuple[int, int], ...], value: int | None = None) -> str:
        xt = self.tensors[x]
        shape = tuple(d + a + b for d, (a, b) in zip(xt.shape, pads, strict=True))
        attrs = {"pads": pads, **({} if value is None else {"value": value})}
        return self._fixed("pad", name, xt, shape, xt.quant, attrs)

    def reshape(self, name: str, x: str, shape: tuple[int, ...]) -> str:
        return self._fixed("reshape", name, self.tensors[x], shape, self.tensors[x].quant, {})

    def transpose(self, name: str, x: str, perm: tuple[int, ...]) -> str:
        xt = self.tensors[x]
        return self._fixed("transpose", name, xt, tuple(xt.shape[p] for p in perm), xt.quant, {"perm": perm})

    def requantize(self, name: str, x: str, scale: float, zp: int) -> str:
        return self._fixed("requantize", name, self.tensors[x], self.tensors[x].shape, QParams(scale, zp), {})

    def softmax(self, name: str, x: str, beta: float = 1.0) -> str:
        xt = self.tensors[x]
        return self._fixed("softmax", name, xt, xt.shape, QParams(1 / 256, -128), {"beta": beta})

    def activation(self, name: str, x: str, kind: str) -> str:
        """hard_swish (output calibrated), logistic or tanh (TFLite's fixed output quantization) as a lut."""
        from tte.ops.activations import lut_node

        xt = self.tensors[x]
        fixed = {"logistic": QParams(1 / 256, -128), "tanh": QParams(1 / 128, 0)}
        if kind in fixed:
            q = fixed[kind]
        else:
            real = (np.stack(self.values[x]).astype(np.float64) - xt.quant.zp) * xt.quant.s
            real = real * np.clip(real + 3, 0, 6) / 6  # hard_swish in float, to choose the output range
            lo, hi = min(real.min(), 0.0), max(real.max(), 1e-3)
            q = QParams(np.float32((hi - lo) / 255), int(np.clip(np.round(-128 - lo * 255 / (hi - lo)), -128, 127)))
        attrs = dict(lut_node(kind, name, xt, Tensor(name, xt.shape, "int8", q)).attrs)
        return self._fixed("lut", name, xt, xt.shape, q, attrs)

    def mean(self, name: str, x: str) -> str:
        xt = self.tensors[x]
        return self._layer("mean", name, [xt], (1, xt.shape[3]), {"axes": (1, 2), "keepdims": False}, None)

    def graph(self, outputs: Sequence[str], float_io: bool = False) -> Graph:
        ins = tuple(IOSpec(t, self.tensors[t].shape, "NHWC", float_io) for t in self.inputs)
        outs = tuple(IOSpec(t, self.tensors[t].shape, "NHWC", float_io) for t in outputs)
        g = Graph(self.name, self.tensors, self.nodes, ins, outs)
        g.validate()
        return g.with_nodes(g.nodes)

    # --- internals ----------------------------------------------------------------------------------
    def _pads(self, n: int, k: int, stride: int) -> tuple[int, int]:
        if self.pad_mode == "symmetric":
            return k // 2, k // 2
        out = -(-n // stride)
        total = max((out - 1) * stride + k - n, 0)
        return total // 2, total - total // 2

    def _weights(self, name: str, shape: tuple[int, ...], axis: int, fan_in: int) -> Tensor:
        real = self.rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
        other = tuple(a for a in range(len(shape)) if a != axis)
        scale = (np.abs(real).max(axis=other) / 127.0).astype(np.float32)
        shape_b = [-1 if a == axis else 1 for a in range(len(shape))]
        q = np.clip(np.round(real / scale.reshape(shape_b)), -127, 127).astype(np.int8)
        t = Tensor(name, shape, "int8", QParams(scale, np.zeros(scale.size, np.int64), axis), q)
        self.tensors[name] = t
        return t

    def _bias(self, name: str, x: Tensor, w: Tensor) -> Tensor:
        s = (np.float64(x.quant.s) * w.quant.scale.astype(np.float64)).astype(np.float32)
        q = np.round(self.rng.normal(0.0, 0.1, s.size) / s).astype(np.int64)
        t = Tensor(name, (s.size,), "int32", QParams(s, np.zeros(s.size, np.int64), 0 if s.size > 1 else None), q)
        self.tensors[name] = t
        return t

    def _fixed(self, op: str, name: str, x: Tensor, shape: tuple[int, ...], q: QParams, attrs: dict) -> str:
        """A one-input layer whose output quantization is given, not calibrated."""
        y = Tensor(name, shape, "int8", q)
        node, outs = self._run(op, name, [x], y, attrs)
        self.tensors[name], self.values[name] = y, outs
        self.nodes.append(node)
        return name

    def _run(self, op: str, name: str, ins: list[Tensor], y: Tensor, attrs: dict) -> tuple[Node, list[np.ndarray]]:
        node = Node(op, name, tuple(t.name for t in ins), (y.name,), attrs)
        tensors = {**{t.name: t for t in ins}, y.name: y}
        g = Graph(name, tensors, (node,), (), ())
        ref = OPS[op].reference
        outs = [ref(node, g, [t.data if t.is_const else self.values[t.name][i] for t in ins])[0]
                for i in range(self.samples)]
        return node, outs

    def _layer(self, op: str, name: str, ins: list[Tensor], shape: tuple[int, ...], attrs: dict,
               act: str | None) -> str:
        """Calibrate the output quantization, then add the node with its final quantization and clamp."""
        real = self._real_outputs(op, name, ins, shape, attrs)
        tail = 0.1 if real.size >= 1000 else 0.0  # few values (logits): keep the extremes in range
        lo, hi = float(np.percentile(real, tail)), float(np.percentile(real, 100 - tail))
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        if act in ("relu", "relu6"):
            lo = 0.0
        if act == "relu6":
            hi = min(hi, 6.0)
        scale = float(np.float32(max(hi - lo, 1e-3) / 255.0))
        zp = int(np.clip(np.round(-128 - lo / scale), -128, 127))
        y = Tensor(name, shape, "int8", QParams(scale, zp))
        full = {**attrs, "act": activation_range(act, scale, zp)} if act is not None else attrs
        node, outs = self._run(op, name, ins, y, full)
        self.tensors[name], self.values[name] = y, outs
        self.nodes.append(node)
        return name

    def _real_outputs(self, op: str, name: str, ins: list[Tensor], shape: tuple[int, ...], attrs: dict
                      ) -> np.ndarray:
        """The layer's real-valued outputs before any clamp, found with probe scales until none saturates."""
        scale = 1.0
        for _ in range(40):
            probe = Tensor(name, shape, "int8", QParams(scale, 0))
            full = {**attrs, "act": (-128, 127)} if op != "mean" else attrs
            q = np.stack(self._run(op, name, ins, probe, full)[1]).astype(np.float64)
            peak = np.abs(q).max()
            if peak >= 127:
                scale *= 8.0
            elif peak < 32:
                scale *= max(peak, 0.5) / 100.0
            else:
                return q * scale
        raise RuntimeError(f"calibration of {name} did not converge")


def inverted_residual(b: GraphBuilder, prefix: str, x: str, block: Block) -> str:
    """1x1 expand + ReLU6 (skipped for expansion 1), depthwise + ReLU6, 1x1 projection, residual add."""
    cin = b.tensors[x].shape[3]
    h = x
    if block.expand != 1:
        h = b.conv(f"{prefix}.pointwise1", h, cin * block.expand, 1, act="relu6")
    h = b.conv(f"{prefix}.depthwise", h, 0, block.kernel, block.stride, act="relu6", depthwise=True)
    h = b.conv(f"{prefix}.pointwise2", h, block.out, 1)
    if block.stride == 1 and block.out == cin:
        h = b.add(f"{prefix}.residual", x, h)
    return h


def mobilenetv2(name: str = "mbv2_tiny", input_hw: tuple[int, int] = (32, 32), in_ch: int = 3, stem: int = 8,
                blocks: Sequence[Block] = TINY_BLOCKS, last: int = 32, classes: int = 10, seed: int = 0,
                float_io: bool = False, pad_mode: str = "symmetric") -> Graph:
    """A MobileNetV2-style classifier (defaults: 32x32x3 input, 5 blocks with 3x3/5x5/7x7 depthwise, 10
    classes). `pad_mode` "symmetric" pads k//2 on every side like the paper models (TFLite needs PAD ops on
    stride 2), "same" uses TFLite's SAME rule."""
    b = GraphBuilder(name, seed, pad_mode=pad_mode)
    h = b.input("input", (1, *input_hw, in_ch))
    h = b.conv("first_conv", h, stem, 3, 2, act="relu6")
    for i, block in enumerate(blocks):
        h = inverted_residual(b, f"blocks.{i}", h, block)
    if last:
        h = b.conv("last_conv", h, last, 1, act="relu6")
    h = b.mean("pool", h)
    h = b.fully_connected("classifier", h, classes)
    return b.graph([h], float_io)


def mobilenetv2_block(hw: tuple[int, int] = (12, 12), cin: int = 8, block: Block = Block(4, 8, 3, 1),
                      seed: int = 0, pad_mode: str = "symmetric", name: str = "mbv2_block") -> Graph:
    """One inverted-residual block on an int8 input (residual when stride 1 and channels match)."""
    b = GraphBuilder(name, seed, pad_mode=pad_mode)
    h = inverted_residual(b, "block", b.input("input", (1, *hw, cin)), block)
    return b.graph([h])


def small_cnn(name: str = "small_cnn", input_hw: tuple[int, int] = (16, 16), in_ch: int = 1, classes: int = 4,
              seed: int = 0, float_io: bool = False) -> Graph:
    """conv 3x3 + ReLU, conv 3x3 stride 2 + ReLU6, 2x2 average pool, fully connected."""
    b = GraphBuilder(name, seed, pad_mode="same")
    h = b.conv("conv1", b.input("input", (1, *input_hw, in_ch)), 8, 3, act="relu")
    h = b.conv("conv2", h, 16, 3, 2, act="relu6")
    h = b.avg_pool("pool", h, 2, 2)
    h = b.fully_connected("classifier", h, classes)
    return b.graph([h], float_io)


def op_zoo(name: str = "op_zoo", seed: int = 0, float_io: bool = False) -> Graph:
    """One small graph through every op the TFLite writer expresses (for fuzzing, round trips, codegen):
    conv, PAD with a value, average pool, hard_swish + logistic luts into an add, depthwise with multiplier 2,
    mean, transpose, reshape, requantize, fully connected, tanh, softmax."""
    b = GraphBuilder(name, seed, pad_mode="same")
    h = b.conv("conv", b.input("input", (1, 8, 8, 3)), 6, 3, act="relu6")
    h = b.pad("pad", h, ((0, 0), (0, 1), (0, 1), (0, 0)), value=-100)
    pool = b.avg_pool("pool", h, 3, 2)
    h = b.add("add", b.activation("hard_swish", pool, "hard_swish"), b.activation("logistic", pool, "logistic"))
    h = b.conv("depthwise", h, 0, 3, act="relu", depthwise=True, multiplier=2)
    m = b.mean("mean", h)
    h = b.transpose("transpose", h, (0, 3, 1, 2))
    h = b.reshape("flatten", h, (1, b.tensors[h].size))
    h = b.requantize("requantize", h, float(b.tensors[h].quant.s) * 1.5, 3)
    h = b.fully_connected("fc", h, 12)
    h = b.softmax("softmax", b.activation("tanh", h, "tanh"))
    return b.graph([h, m], float_io)
