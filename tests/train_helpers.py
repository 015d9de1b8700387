"""Small int8 IR networks for the training tests, quantized post-training from float weights.

`NetBuilder` adds one layer at a time: it runs the float layer (torch, float64) on calibration data, picks the
output quantization from the observed range (ReLU6 clamps it to [0, 6]), quantizes weights per output channel
(symmetric int8) and biases (int32, scale s_in * s_w), and records the IR node. Everything is deterministic.
"""

from __future__ import annotations

import json

import numpy as np
import torch
import torch.nn.functional as F

from tte.ir import Graph, IOSpec, Node, QParams, Tensor
from tte.quant import activation_range


def act_quant(lo: float, hi: float) -> QParams:
    lo, hi = min(lo, 0.0), max(hi, 1e-3)
    scale = (hi - lo) / 255.0
    zp = int(np.clip(np.round(-128 - lo / scale), -128, 127))
    return QParams(np.float32(scale), zp)


def quantize(x: np.ndarray, q: QParams) -> np.ndarray:
    return np.clip(np.round(x / q.s) + q.zp, -128, 127).astype(np.int8)


def dequant(x: np.ndarray, q: QParams) -> np.ndarray:
    return (x.astype(np.float64) - q.zp) * q.s


class NetBuilder:
    """Builds an int8 NHWC graph layer by layer; `cal` is the float calibration batch at the current tensor."""

    def __init__(self, name: str, calib: np.ndarray, seed: int = 0) -> None:
        self.name, self.rng = name, np.random.default_rng(seed)
        self.tensors: dict[str, Tensor] = {}
        self.nodes: list[Node] = []
        q = act_quant(float(calib.min()), float(calib.max()))
        self.input = self._tensor("input", (1, *calib.shape[1:]), q)
        self.x = self.input
        self.cal = {self.x: dequant(quantize(calib, q), q)}
        self._n = 0

    def _tensor(self, name: str, shape: tuple[int, ...], q: QParams | None, data=None, dtype="int8") -> str:
        self.tensors[name] = Tensor(name, shape, dtype, q, data)
        return name

    def _uid(self, op: str) -> str:
        self._n += 1
        return f"{op}{self._n}"

    def _out(self, name: str, y: np.ndarray, act: str) -> tuple[str, tuple[int, int]]:
        lo, hi = float(y.min()), float(y.max())
        if act == "relu":
            lo = 0.0
        if act == "relu6":  # as in the paper's models: the int8 range is exactly [0, 6]
            lo, hi = 0.0, 6.0
        q = act_quant(lo, hi)
        t = self._tensor(f"{name}:out", (1, *y.shape[1:]), q)
        clamp = activation_range(act, q.s, q.zp)
        self.cal[t] = np.clip(y, (clamp[0] - q.zp) * q.s, (clamp[1] - q.zp) * q.s)
        self.x = t
        return t, clamp

    def _weights(self, name: str, w: np.ndarray, axis: int) -> str:
        other = tuple(a for a in range(w.ndim) if a != axis)
        s = np.maximum(np.abs(w).max(axis=other), 1e-8) / 127.0
        shape = [1] * w.ndim
        shape[axis] = -1
        wq = np.clip(np.round(w / s.reshape(shape)), -127, 127).astype(np.int8)
        q = QParams(s.astype(np.float32), np.zeros(s.size, np.int64), axis)
        return self._tensor(f"{name}:w", w.shape, q, wq)

    def _bias(self, name: str, b: np.ndarray, s_in: float, s_w: np.ndarray) -> str:
        s = (np.float64(s_in) * s_w.astype(np.float64)).astype(np.float32)
        bq = np.round(b / s).astype(np.int32)
        return self._tensor(f"{name}:b", b.shape, QParams(s, np.zeros(s.size, np.int64), 0), bq, "int32")

    def conv(self, cout: int, k: int, stride: int = 1, act: str = "relu6", w: np.ndarray | None = None,
             b: np.ndarray | None = None, pad: tuple[int, int, int, int] | None = None, name: str | None = None,
             depthwise: bool = False) -> str:
        """Conv (OHWI float weights `w`, or random); depthwise takes w [KH, KW, C]."""
        x = self.x
        cin = self.tensors[x].shape[3]
        name = name or self._uid("dw" if depthwise else "conv")
        if w is None:
            shape = (k, k, cin) if depthwise else (cout, k, k, cin)
            w = self.rng.normal(0, 1.0 / np.sqrt((1 if depthwise else cin) * k * k), shape)
            b = self.rng.normal(0, 0.1, cin if depthwise else cout)
        pad = pad if pad is not None else (k // 2,) * 4
        cal = torch.from_numpy(self.cal[x]).permute(0, 3, 1, 2)
        cal = F.pad(cal, (pad[1], pad[3], pad[0], pad[2]))
        if depthwise:
            wt = torch.from_numpy(np.asarray(w, np.float64)).permute(2, 0, 1)[:, None]
            y = F.conv2d(cal, wt, torch.from_numpy(b), stride=stride, groups=cin)
        else:
            wt = torch.from_numpy(np.asarray(w, np.float64)).permute(0, 3, 1, 2)
            y = F.conv2d(cal, wt, torch.from_numpy(np.asarray(b, np.float64)), stride=stride)
        wn = self._weights(name, (np.asarray(w)[None] if depthwise else np.asarray(w)), 3 if depthwise else 0)
        bn = self._bias(name, np.asarray(b, np.float64), self.tensors[x].quant.s, self.tensors[wn].quant.scale)
        out, clamp = self._out(name, y.permute(0, 2, 3, 1).numpy(), act)
        attrs = dict(stride=(stride, stride), pad=tuple(pad), act=clamp)
        if depthwise:
            attrs["multiplier"] = 1
        self.nodes.append(Node("depthwise_conv2d" if depthwise else "conv2d", name, (x, wn, bn), (out,), attrs))
        return out

    def depthwise(self, k: int, stride: int = 1, act: str = "relu6", **kw) -> str:
        return self.conv(0, k, stride, act, depthwise=True, **kw)

    def fc(self, cout: int, act: str = "none", w: np.ndarray | None = None, b: np.ndarray | None = None,
           name: str | None = None) -> str:
        x = self.x
        cin = self.tensors[x].size
        name = name or self._uid("fc")
        if w is None:
            w = self.rng.normal(0, 1.0 / np.sqrt(cin), (cout, cin))
            b = self.rng.normal(0, 0.1, cout)
        y = self.cal[x].reshape(len(self.cal[x]), -1) @ np.asarray(w, np.float64).T + np.asarray(b, np.float64)
        wn = self._weights(name, np.asarray(w), 0)
        bn = self._bias(name, np.asarray(b, np.float64), self.tensors[x].quant.s, self.tensors[wn].quant.scale)
        out, clamp = self._out(name, y, act)
        self.nodes.append(Node("fully_connected", name, (x, wn, bn), (out,), {"act": clamp}))
        return out

    def add(self, other: str, act: str = "none", name: str | None = None) -> str:
        x = self.x
        name = name or self._uid("add")
        out, clamp = self._out(name, self.cal[x] + self.cal[other], act)
        self.nodes.append(Node("add", name, (x, other), (out,), {"act": clamp}))
        return out

    def mean(self, keepdims: bool = True, name: str | None = None) -> str:
        x = self.x
        name = name or self._uid("mean")
        y = self.cal[x].mean(axis=(1, 2), keepdims=keepdims)
        out, _ = self._out(name, y, "none")
        self.nodes.append(Node("mean", name, (x,), (out,), {"axes": (1, 2), "keepdims": keepdims}))
        return out

    def avg_pool(self, k: int, stride: int, pad: tuple[int, int, int, int] = (0, 0, 0, 0), name: str | None = None,
                 act: tuple[int, int] | None = None) -> str:
        x = self.x
        name = name or self._uid("avgpool")
        q = self.tensors[x].quant
        cal = torch.from_numpy(self.cal[x]).permute(0, 3, 1, 2)
        y = F.avg_pool2d(cal, k, stride, padding=pad[0], count_include_pad=False).permute(0, 2, 3, 1).numpy()
        out = self._tensor(f"{name}:out", (1, *y.shape[1:]), q)
        self.cal[out], self.x = y, out
        attrs = dict(kernel=(k, k), stride=(stride, stride), pad=tuple(pad), act=act or (-128, 127))
        self.nodes.append(Node("avg_pool2d", name, (x,), (out,), attrs))
        return out

    def pad(self, pads: tuple[tuple[int, int], ...], name: str | None = None) -> str:
        x = self.x
        name = name or self._uid("pad")
        q = self.tensors[x].quant
        y = np.pad(self.cal[x], pads)
        out = self._tensor(f"{name}:out", (1, *y.shape[1:]), q)
        self.cal[out], self.x = y, out
        self.nodes.append(Node("pad", name, (x,), (out,), {"pads": tuple(tuple(p) for p in pads)}))
        return out

    def reshape(self, shape: tuple[int, ...], name: str | None = None) -> str:
        x = self.x
        name = name or self._uid("reshape")
        out = self._tensor(f"{name}:out", shape, self.tensors[x].quant)
        self.cal[out], self.x = self.cal[x].reshape(len(self.cal[x]), *shape[1:]), out
        self.nodes.append(Node("reshape", name, (x,), (out,)))
        return out

    def graph(self) -> Graph:
        inp = IOSpec(self.input, self.tensors[self.input].shape, "NHWC", False)
        out = IOSpec(self.x, self.tensors[self.x].shape, "NHWC", False)
        g = Graph(self.name, self.tensors, tuple(self.nodes), (inp,), (out,))
        g.validate()
        return g


def mobilenet_like(seed: int = 0, hw: int = 12, classes: int = 6) -> Graph:
    """conv3x3/2 -> 2 inverted-residual blocks (the second with an add) -> mean -> fc: names as in the paper models."""
    rng = np.random.default_rng(seed)
    nb = NetBuilder("mobilenet_like", rng.uniform(-1, 1, (16, hw, hw, 3)), seed)
    nb.conv(8, 3, 2, name="first_conv")
    for i, (expand, stride) in enumerate(((2, 2), (3, 1))):
        skip = nb.x
        nb.conv(8 * expand, 1, name=f"blocks.{i}.pointwise1")
        nb.depthwise(3, stride, name=f"blocks.{i}.depthwise")
        nb.conv(8, 1, act="none", name=f"blocks.{i}.pointwise2")
        if stride == 1:
            nb.add(skip, name=f"blocks.{i}.residual")
    nb.mean(keepdims=True, name="pool")
    nb.reshape((1, 8), name="flatten")
    nb.fc(classes, name="classifier")
    return nb.graph()


def host_and_emulator(out, data: list[str], capsys) -> tuple[dict, dict]:
    """The summaries (last JSON line) of `tte simulate OUT DATA` and `tte run OUT --emulator DATA`."""
    from tte.cli import main as tte_main

    capsys.readouterr()
    runs = []
    for cmd in (["simulate", str(out)], ["run", str(out), "--emulator"]):
        assert tte_main([*cmd, *data]) == 0
        runs.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1]))
    return runs[0], runs[1]
