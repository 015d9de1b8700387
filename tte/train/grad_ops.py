"""Backward ops of the train step (float32), with numpy references in the order a C kernel must follow.

Every gradient is dL/d(real value) of a tensor, float32, in the tensor's NHWC shape. Frozen int8 weights are
dequantized on the fly: a kernel first scales the output gradient per channel, das[p, o] = dacc[p, o] * s_w[o],
then sums das * (float)w_q. Orders (each sum from 0.0, left to right):
- conv2d_input_grad: dx[h, w, i] = sum over (kh, kw, o) of das[oh, ow, o] * w[o, kh, kw, i], taps whose output
  position exists only (the gather form: for each input element, kh, then kw, then o ascending);
- depthwise_conv2d_input_grad: dx[h, w, c] = sum over (kh, kw, m) of das[oh, ow, c*M + m] * w[kh, kw, c*M + m];
- fully_connected_input_grad (and the fp32 head's): dx[i] = sum over o of das[o] * w[o, i];
- avg_pool2d_grad: dx[h, w, c] = sum over (kh, kw) of dacc[oh, ow, c] * (1.0f / count[oh, ow]);
- mean_grad: dx = dacc * (1.0f / N) broadcast; pad_grad: the slice; apply_mask: dy where the bit is set, else 0;
- softmax_cross_entropy: z = dequantized logits, m = max z, e = exp_f32(z - m), S = sum e (ascending),
  dz = e / S - onehot(label), loss = log_f32(S) - (z[label] - m).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tte.ir import Graph, Node
from tte.ops import OpDef, register
from tte.ops.conv2d import out_size
from tte.train.forward_ops import unpack_mask
from tte.train.fp32 import F32, dequantize, exp_f32, f32, log_f32, ordered_sum


def _out(graph: Graph, node: Node, k: int = 0) -> tuple[int, ...]:
    return graph[node.outputs[k]].shape


def weight_scales(graph: Graph, w_name: str, channels: int) -> np.ndarray:
    """The per-output-channel float32 scales of a weight (per-tensor scales broadcast)."""
    q = graph[w_name].quant
    return np.broadcast_to(np.asarray(q.scale, np.float32), (channels,)).copy()


def logits_real(graph: Graph, name: str, value: np.ndarray) -> np.ndarray:
    t = graph[name]
    if t.dtype == "float32":
        return f32(value).reshape(-1)
    return dequantize(value.reshape(-1), t.quant.s, t.quant.zp)


def softmax_ce_reference(node: Node, graph: Graph, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    z = logits_real(graph, node.inputs[0], inputs[0])
    label = int(inputs[1].reshape(-1)[0])
    m = z.max()
    e = exp_f32(z - m)
    s = ordered_sum(e)
    dz = e / s
    dz[label] = dz[label] - F32(1.0)
    loss = log_f32(s) - (z[label] - m)
    return [f32(loss).reshape(1), dz.reshape(_out(graph, node, 1))]


def apply_mask_reference(node: Node, graph: Graph, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    dy = f32(inputs[0])
    bits = unpack_mask(inputs[1], dy.shape)
    return [np.where(bits, dy, F32(0.0)).astype(np.float32)]


def grad_add_reference(node: Node, graph: Graph, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    return [f32(inputs[0]) + f32(inputs[1])]


def _scatter_taps(das: np.ndarray, wt: np.ndarray, in_shape: tuple[int, ...], node: Node) -> np.ndarray:
    """dx [1, H, W, C] from per-tap terms: das [OH, OW, K] and wt [KH, KW, K, C], summed over (kh, kw, k)."""
    _, h, w, c = in_shape
    sh, sw = node.attrs["stride"]
    pt, pl, pb, pr = node.attrs["pad"]
    oh, ow = das.shape[:2]
    kh_n, kw_n = wt.shape[:2]
    dxp = np.zeros((h + pt + pb, w + pl + pr, c), np.float32)
    das_k = np.moveaxis(das, 2, 0)[..., None]  # [K, OH, OW, 1]
    for kh in range(kh_n):
        for kw in range(kw_n):
            rows = slice(kh, kh + sh * (oh - 1) + 1, sh)
            cols = slice(kw, kw + sw * (ow - 1) + 1, sw)
            terms = das_k * wt[kh, kw][:, None, None, :]  # [K, OH, OW, C]
            dxp[rows, cols] = ordered_sum(terms, init=dxp[rows, cols])
    return dxp[pt:pt + h, pl:pl + w][None]


def conv2d_input_grad_reference(node: Node, graph: Graph, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    dacc, wq = f32(inputs[0])[0], inputs[1]
    o = wq.shape[0]
    das = dacc * weight_scales(graph, node.inputs[1], o)
    wt = np.transpose(wq.astype(np.float32), (1, 2, 0, 3))  # [KH, KW, O, I]
    return [_scatter_taps(das, wt, _out(graph, node), node)]


def depthwise_input_grad_reference(node: Node, graph: Graph, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    dacc, wq = f32(inputs[0])[0], inputs[1]
    mult = int(node.attrs["multiplier"])
    _, kh, kw, cm = wq.shape
    das = dacc * weight_scales(graph, node.inputs[1], cm)
    oh, ow = das.shape[:2]
    c = cm // mult
    das_m = das.reshape(oh, ow, c, mult).transpose(0, 1, 3, 2)  # [OH, OW, M, C]
    wt = wq[0].astype(np.float32).reshape(kh, kw, c, mult).transpose(0, 1, 3, 2)  # [KH, KW, M, C]
    # Per tap and multiplier m, the term for channel c is das[.., c*M + m] * w[.., c*M + m] (a diagonal product).
    _, h, w, _ = _out(graph, node)
    sh, sw = node.attrs["stride"]
    pt, pl, pb, pr = node.attrs["pad"]
    dxp = np.zeros((h + pt + pb, w + pl + pr, c), np.float32)
    for i in range(kh):
        for j in range(kw):
            rows = slice(i, i + sh * (oh - 1) + 1, sh)
            cols = slice(j, j + sw * (ow - 1) + 1, sw)
            terms = np.moveaxis(das_m * wt[i, j][None, None], 2, 0)  # [M, OH, OW, C]
            dxp[rows, cols] = ordered_sum(terms, init=dxp[rows, cols])
    return [dxp[pt:pt + h, pl:pl + w][None]]


def fc_input_grad_reference(node: Node, graph: Graph, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    dacc, w = f32(inputs[0]).reshape(-1), inputs[1]
    o = w.shape[0]
    if w.dtype == np.float32:  # the fp32 head: real weights already
        das, wr = dacc, w
    else:
        q = graph[node.inputs[1]].quant
        das, wr = dacc * weight_scales(graph, node.inputs[1], o), w.astype(np.float32) - F32(q.zp)
    return [ordered_sum(das[:, None] * wr).reshape(_out(graph, node))]


def mean_grad_reference(node: Node, graph: Graph, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    shape = _out(graph, node)
    n = int(np.prod([shape[a] for a in node.attrs["axes"]]))
    inv = F32(1.0) / F32(n)
    dy = f32(inputs[0]).reshape(shape[0], 1, 1, shape[3])
    return [np.broadcast_to(dy * inv, shape).astype(np.float32)]


def avg_pool_grad_reference(node: Node, graph: Graph, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    dacc = f32(inputs[0])[0]
    _, h, w, c = _out(graph, node)
    kh, kw = node.attrs["kernel"]
    sh, sw = node.attrs["stride"]
    pt, pl, pb, pr = node.attrs["pad"]
    oh, ow = out_size(h, kh, sh, pt, pb), out_size(w, kw, sw, pl, pr)
    ones = np.pad(np.ones((h, w), np.int64), ((pt, pb), (pl, pr)))
    win = np.lib.stride_tricks.sliding_window_view(ones, (kh, kw))[::sh, ::sw][:oh, :ow]
    count = win.sum(axis=(2, 3)).astype(np.float32)
    dyn = dacc * (F32(1.0) / count)[..., None]
    dxp = np.zeros((h + pt + pb, w + pl + pr, c), np.float32)
    for i in range(kh):
        for j in range(kw):
            rows = slice(i, i + sh * (oh - 1) + 1, sh)
            cols = slice(j, j + sw * (ow - 1) + 1, sw)
            dxp[rows, cols] = dxp[rows, cols] + dyn
    return [dxp[pt:pt + h, pl:pl + w][None]]


def pad_grad_reference(node: Node, graph: Graph, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    dy = f32(inputs[0])
    idx = tuple(slice(b, dy.shape[a] - e) for a, (b, e) in enumerate(node.attrs["pads"]))
    return [np.ascontiguousarray(dy[idx])]


def _register() -> None:
    register(OpDef("softmax_cross_entropy", softmax_ce_reference))
    register(OpDef("apply_mask", apply_mask_reference))
    register(OpDef("grad_add", grad_add_reference))
    register(OpDef("conv2d_input_grad", conv2d_input_grad_reference,
                   lambda n, g: g[n.inputs[0]].size * int(np.prod(g[n.inputs[1]].shape[1:]))))
    register(OpDef("depthwise_conv2d_input_grad", depthwise_input_grad_reference,
                   lambda n, g: g[n.inputs[0]].size * int(np.prod(g[n.inputs[1]].shape[1:3]))))
    register(OpDef("fully_connected_input_grad", fc_input_grad_reference, lambda n, g: g[n.inputs[1]].size))
    register(OpDef("mean_grad", mean_grad_reference))
    register(OpDef("avg_pool2d_grad", avg_pool_grad_reference))
    register(OpDef("pad_grad", pad_grad_reference))


_register()
