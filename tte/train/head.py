"""`--head fp32 | new:N`: the classifier as a float32 layer (the paper found an fp32 head worth +2.3%).

`apply_head` replaces the last weight layer (a fully connected layer, or a 1x1 convolution on a 1x1 map) by a
`fully_connected_f32` node of the same name: int8 input, float32 weights [O, I] and bias [O], float32 output.
`fp32` starts from the dequantized int8 weights, `new:N` from zeros with N outputs. Only reshapes may follow
the head; their outputs become float32 too.

fully_connected_f32 (order fixed for the C runtime): x_real[i] = (float)(x[i] - zp) * s_x;
y[o] = (sum over i ascending of x_real[i] * w[o, i], from 0.0) + b[o].
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from tte.errors import TteError
from tte.ir import Graph, IOSpec, Node, Tensor
from tte.ops import OpDef, register
from tte.train.fp32 import dequantize, f32, ordered_sum
from tte.train.spec import HeadSpec, parse_head, weight_layers

HEAD_OP = "fully_connected_f32"
SHAPE_OPS = ("reshape",)


def fc_f32_reference(node: Node, graph: Graph, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    xq = graph[node.inputs[0]].quant
    w, b = inputs[1], inputs[2]
    x = dequantize(inputs[0].reshape(-1), xq.s, xq.zp)
    acc = ordered_sum(x[:, None] * f32(w).T)
    return [(acc + f32(b)).reshape(graph[node.outputs[0]].shape)]


register(OpDef(HEAD_OP, fc_f32_reference, lambda n, g: g[n.inputs[1]].size))


def apply_head(graph: Graph, head: str | HeadSpec) -> Graph:
    """The graph with its classifier kept (int8), converted to fp32, or replaced by a fresh fp32 layer."""
    head = parse_head(head)
    if head.kind == "keep":
        return graph
    layers = weight_layers(graph)
    if not layers:
        raise TteError("--head: the model has no weight layer to use as the classifier")
    last = layers[-1]
    if last.op == HEAD_OP and head.kind == "fp32":
        return graph
    _check_head(last, graph)
    tail = _tail(last, graph)
    w, xt = graph[last.inputs[1]], graph[last.inputs[0]]
    outs = w.shape[0] if head.kind == "fp32" else head.classes
    if head.kind == "fp32":
        wf, bf = _dequantized(last, graph)
    else:
        wf, bf = np.zeros((outs, xt.size), np.float32), np.zeros(outs, np.float32)
    tensors = dict(graph.tensors)
    w_name, b_name = f"{last.name}:w_f32", f"{last.name}:b_f32"
    tensors[w_name] = Tensor(w_name, wf.shape, "float32", None, wf)
    tensors[b_name] = Tensor(b_name, bf.shape, "float32", None, bf)
    for t in (last.outputs[0], *(n.outputs[0] for n in tail)):
        old = graph[t]
        tensors[t] = Tensor(t, (*old.shape[:-1], outs), "float32")
    node = Node(HEAD_OP, last.name, (last.inputs[0], w_name, b_name), last.outputs, {"fresh": head.kind == "new"})
    nodes = [node if n is last else n for n in graph.nodes]
    outputs = tuple(IOSpec(io.tensor, (*io.shape[:-1], outs), io.layout, True) if io.tensor in tensors and
                    tensors[io.tensor].dtype == "float32" else io for io in graph.outputs)
    return replace(graph.with_nodes(nodes, tensors), outputs=outputs)


def _check_head(last: Node, graph: Graph) -> None:
    x = graph[last.inputs[0]]
    if last.op == "fully_connected":
        return
    if last.op == "conv2d" and graph[last.inputs[1]].shape[1:3] == (1, 1) and x.shape[1:3] == (1, 1):
        return
    raise TteError("cannot become an fp32 head: it must be fully connected or a 1x1 conv on a 1x1 map",
                   node=last.name, op=last.op, hint="use --head keep")


def _tail(last: Node, graph: Graph) -> list[Node]:
    """The shape-only nodes between the classifier and the graph output."""
    tail, t = [], last.outputs[0]
    outputs = {io.tensor for io in graph.outputs}
    while t not in outputs:
        users = graph.consumers(t)
        if len(users) != 1 or users[0].op not in SHAPE_OPS:
            op = users[0].op if users else "nothing"
            raise TteError(f"the classifier output feeds {op}; an fp32 head must end the graph (reshapes only)",
                           node=last.name, op=last.op, hint="use --head keep")
        tail.append(users[0])
        t = users[0].outputs[0]
    return tail


def _dequantized(last: Node, graph: Graph) -> tuple[np.ndarray, np.ndarray]:
    """The int8 layer's real weights [O, I] and bias [O] in float32."""
    x, w = graph[last.inputs[0]], graph[last.inputs[1]]
    o = w.shape[0]
    s_w = np.broadcast_to(np.asarray(w.quant.scale, np.float32), (o,))
    wq = w.data.reshape(o, -1).astype(np.float32) - np.float32(w.quant.zp)
    wf = wq * s_w[:, None]
    bf = np.zeros(o, np.float32)
    if len(last.inputs) > 2 and last.inputs[2]:
        s_b = f32(np.float32(x.quant.s) * s_w)
        bf = graph[last.inputs[2]].data.astype(np.float32) * s_b
    return wf.astype(np.float32), bf.astype(np.float32)
