"""Small int8 IR networks with the ops of issue 8 (max pool, activation tables, SE multiply, sub, broadcast add,
concat, slice), built like train_helpers.NetBuilder: float layers on calibration data, post-training quantization."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from train_helpers import NetBuilder, act_quant

from tte.ir import Node, QParams
from tte.ops.activations import hard_swish_table, logistic_table, tanh_table
from tte.ops.relu_tables import relu_lut_node
from tte.quant import activation_range

FLOAT = {
    "logistic": lambda x: 1 / (1 + np.exp(-x)),
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0),
    "relu6": lambda x: np.clip(x, 0, 6),
    "leaky_relu": lambda x: np.where(x > 0, x, 0.2 * x),
    "hard_swish": lambda x: x * np.clip(x + 3, 0, 6) / 6,
}
FIXED_Q = {"logistic": QParams(np.float32(1 / 256), -128), "tanh": QParams(np.float32(1 / 128), 0)}


class OpNetBuilder(NetBuilder):
    """NetBuilder plus max_pool, activation tables, mul / sub, concat and slice."""

    def max_pool(self, k: int, stride: int, pad: tuple[int, int, int, int] = (0, 0, 0, 0), act: str = "none",
                 name: str | None = None) -> str:
        x = self.x
        name = name or self._uid("maxpool")
        q = self.tensors[x].quant
        cal = F.pad(torch.from_numpy(self.cal[x]).permute(0, 3, 1, 2), (pad[1], pad[3], pad[0], pad[2]),
                    value=-1e9)
        y = F.max_pool2d(cal, k, stride).permute(0, 2, 3, 1).numpy()
        out = self._tensor(f"{name}:out", (1, *y.shape[1:]), q)
        self.cal[out], self.x = y, out
        attrs = dict(kernel=(k, k), stride=(stride, stride), pad=pad, act=activation_range(act, q.s, q.zp))
        self.nodes.append(Node("max_pool2d", name, (x,), (out,), attrs))
        return out

    def act(self, kind: str, name: str | None = None) -> str:
        x = self.x
        name = name or self._uid(kind)
        y = FLOAT[kind](self.cal[x])
        if kind in FIXED_Q:
            q = FIXED_Q[kind]
        elif kind == "relu6":
            q = self.tensors[x].quant
        else:
            q = act_quant(float(y.min()), float(y.max()))
        xt = self.tensors[x]
        out = self._tensor(f"{name}:out", xt.shape, q)
        yt = self.tensors[out]
        if kind in ("relu", "relu6", "leaky_relu"):
            node = relu_lut_node(kind, name, xt, yt, alpha=0.2)
        else:
            table = {"logistic": logistic_table, "tanh": tanh_table, "hard_swish": hard_swish_table}[kind]
            node = Node("lut", name, (x,), (out,), {"table": table(xt.quant, q, name), "source_op": kind})
        self.nodes.append(node)
        self.cal[out], self.x = y, out
        return out

    def binary(self, op: str, a: str, b: str, act: str = "none", name: str | None = None) -> str:
        name = name or self._uid(op)
        y = {"mul": np.multiply, "sub": np.subtract, "add_broadcast": np.add}[op](self.cal[a], self.cal[b])
        out, clamp = self._out(name, y, act)
        self.nodes.append(Node(op, name, (a, b), (out,), {"act": clamp}))
        return out

    def concat(self, xs: list[str], name: str | None = None) -> str:
        """Channel concatenation; inputs of another quantization are requantized first (as the importers do)."""
        name = name or self._uid("concat")
        y = np.concatenate([self.cal[x] for x in xs], axis=3)
        q = act_quant(float(y.min()), float(y.max()))
        same = []
        for i, x in enumerate(xs):
            t = self._tensor(f"{name}:in{i}", self.tensors[x].shape, q)
            self.nodes.append(Node("requantize", f"{name}/requantize{i}", (x,), (t,)))
            same.append(t)
        out = self._tensor(f"{name}:out", (1, *y.shape[1:]), q)
        self.nodes.append(Node("concat", name, tuple(same), (out,), {"axis": 3}))
        self.cal[out], self.x = y, out
        return out

    def slice(self, begin: tuple[int, ...], size: tuple[int, ...], name: str | None = None) -> str:
        x = self.x
        name = name or self._uid("slice")
        idx = tuple(slice(b, b + n) for b, n in zip(begin[1:], size[1:], strict=True))
        y = self.cal[x][(slice(None), *idx)]
        out = self._tensor(f"{name}:out", size, self.tensors[x].quant)
        self.nodes.append(Node("slice", name, (x,), (out,), {"begin": begin, "size": size,
                                                              "strides": (1,) * len(size)}))
        self.cal[out], self.x = y, out
        return out


def quantized_input(nb: NetBuilder, seed: int) -> np.ndarray:
    q = nb.tensors[nb.input].quant
    x = np.random.default_rng(seed).uniform(-1, 1, nb.tensors[nb.input].shape)
    return np.clip(np.round(x / q.s) + q.zp, -128, 127).astype(np.int8)


def aifes_like(seed: int = 0) -> tuple:
    """conv3x3 - relu - maxpool - conv3x3 - relu - maxpool (padded, odd size) - dense."""
    rng = np.random.default_rng(seed)
    nb = OpNetBuilder("aifes_like", rng.uniform(-1, 1, (8, 11, 11, 1)), seed)
    nb.conv(4, 3, act="relu", pad=(0, 0, 0, 0), name="conv1")
    nb.max_pool(2, 2, name="pool1")
    nb.conv(6, 3, act="relu", name="conv2")
    nb.max_pool(3, 2, pad=(1, 1, 1, 1), name="pool2")
    nb.reshape((1, 2 * 2 * 6), name="flat")
    nb.fc(5, name="dense")
    return nb.graph(), quantized_input(nb, 21)


def activations_net(seed: int = 1) -> tuple:
    """Every activation table between 1x1 convs."""
    rng = np.random.default_rng(seed)
    nb = OpNetBuilder("acts", rng.uniform(-1, 1, (8, 5, 5, 3)), seed)
    for kind in ("logistic", "tanh", "relu", "leaky_relu", "relu6", "hard_swish"):
        nb.conv(4, 1, act="none", name=f"c_{kind}")
        nb.act(kind, name=kind)
    nb.mean(keepdims=False, name="gap")
    nb.fc(4, name="fc")
    return nb.graph(), quantized_input(nb, 22)


def se_concat_net(seed: int = 2) -> tuple:
    """A squeeze-and-excitation block (mean -> 1x1 conv -> sigmoid -> broadcast mul), a concat with another
    branch, a channel slice, a sub, then mean -> fc."""
    rng = np.random.default_rng(seed)
    nb = OpNetBuilder("se_concat", rng.uniform(-1, 1, (8, 6, 6, 3)), seed)
    x = nb.conv(6, 3, act="relu6", name="stem")
    nb.mean(keepdims=True, name="squeeze")
    nb.conv(6, 1, act="none", name="excite")
    gate = nb.act("logistic", name="gate")
    se = nb.binary("mul", x, gate, name="scale")
    nb.x = x
    other = nb.conv(4, 1, act="relu", name="branch")
    cat = nb.concat([se, other], name="cat")
    nb.x = cat
    left = nb.slice((0, 0, 0, 0), (1, 6, 6, 5), name="left")
    nb.x = cat
    right = nb.slice((0, 0, 0, 5), (1, 6, 6, 5), name="right")
    nb.binary("sub", left, right, name="diff")
    nb.mean(keepdims=False, name="gap")
    nb.fc(3, name="fc")
    return nb.graph(), quantized_input(nb, 23)


def broadcast_add_net(seed: int = 5) -> tuple:
    """A per-channel offset computed from the image (mean -> 1x1 conv) added to the map by a broadcasting add
    with ReLU, and a [1, 1, 1, 1] scalar branch added on the left, then mean -> fc."""
    rng = np.random.default_rng(seed)
    nb = OpNetBuilder("bcast_add", rng.uniform(-1, 1, (8, 6, 6, 3)), seed)
    x = nb.conv(6, 3, act="none", name="stem")
    nb.mean(keepdims=True, name="squeeze")
    offset = nb.conv(6, 1, act="none", name="offset")
    y = nb.binary("add_broadcast", x, offset, act="relu", name="shift")
    nb.mean(keepdims=True, name="squeeze2")
    scalar = nb.conv(1, 1, act="none", name="scalar")
    nb.binary("add_broadcast", scalar, y, name="shift2")
    nb.mean(keepdims=False, name="gap")
    nb.fc(3, name="fc")
    return nb.graph(), quantized_input(nb, 26)


def mobilenet_v3_block(seed: int = 3) -> tuple:
    """stem conv/2 -> HardSwish -> expand 1x1 -> depthwise 3x3 -> HardSwish -> SE (mean, 1x1 relu, 1x1,
    Sigmoid, broadcast Mul) -> project 1x1 -> residual add -> mean -> fc."""
    rng = np.random.default_rng(seed)
    nb = OpNetBuilder("mbv3_block", rng.uniform(-1, 1, (8, 12, 12, 3)), seed)
    nb.conv(8, 3, 2, act="none", name="stem")
    skip = nb.act("hard_swish", name="stem_hswish")
    nb.conv(16, 1, act="relu", name="expand")
    nb.depthwise(3, 1, act="none", name="dw")
    x = nb.act("hard_swish", name="dw_hswish")
    nb.mean(keepdims=True, name="se_squeeze")
    nb.conv(4, 1, act="relu", name="se_reduce")
    nb.conv(16, 1, act="none", name="se_expand")
    gate = nb.act("logistic", name="se_gate")
    nb.binary("mul", x, gate, name="se_scale")
    nb.conv(8, 1, act="none", name="project")
    nb.add(skip, name="residual")
    nb.mean(keepdims=False, name="pool")
    nb.fc(4, name="classifier")
    return nb.graph(), quantized_input(nb, 24)


def ds_cnn(seed: int = 4) -> tuple:
    """A DS-CNN keyword-spotting net on 49x10 MFCC-like input: conv 10x4/2 -> 2 x (depthwise 3x3, pointwise)
    with ReLU -> mean -> fc over 12 keywords."""
    rng = np.random.default_rng(seed)
    nb = OpNetBuilder("ds_cnn", rng.uniform(-1, 1, (8, 49, 10, 1)), seed)
    w = rng.normal(0, 0.5, (16, 10, 4, 1))
    nb.conv(16, 0, 2, act="relu", w=w, b=rng.normal(0, 0.1, 16), pad=(4, 1, 5, 2), name="conv1")
    for i in range(2):
        nb.depthwise(3, 1, act="relu", name=f"dw{i}")
        nb.conv(16, 1, act="relu", name=f"pw{i}")
    nb.mean(keepdims=False, name="pool")
    nb.fc(12, name="fc")
    return nb.graph(), quantized_input(nb, 25)
