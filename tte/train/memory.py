"""memory_summary: what a train step keeps beyond inference, by category and by layer (for report.json)."""

from __future__ import annotations

from typing import Any

from tte import ops
from tte.ir import Graph, Node
from tte.train.autodiff import RNG, TrainingGraph
from tte.train.head import HEAD_OP
from tte.train.spec import LayerUpdate


def _param_bytes(node: Node, graph: Graph, lu: LayerUpdate) -> tuple[int, int]:
    """(trained weight bytes, trained bias bytes) of one layer: only the trained input channels stay in SRAM."""
    w = graph[node.inputs[1]]
    item = 4 if node.op == HEAD_OP else 1
    if node.op == "depthwise_conv2d":
        mult = int(node.attrs.get("multiplier", 1))
        per_channel = w.shape[1] * w.shape[2] * mult
    else:
        per_channel = w.size // w.shape[-1]
    wbytes = per_channel * len(lu.channels) * item
    o = w.shape[-1] if node.op == "depthwise_conv2d" else w.shape[0]
    return wbytes, (4 * o if lu.bias else 0)


def memory_summary(tg: TrainingGraph) -> dict[str, Any]:
    """Saved activations, masks, trainable parameters (trained channels only), gradient tensors, backward MACs.

    Bytes unless named otherwise. `layers` lists every node that trains something, saves an activation or keeps
    a mask. `gradient_bytes_total` sums all fp32 gradient tensors (the memory planner overlaps most of them);
    `largest_gradients` names the biggest.
    """
    g = tg.graph
    nodes = {n.name: n for n in g.nodes[:tg.num_forward]}
    layers = []
    for name in sorted(set(tg.saved) | set(tg.masks) | {lu.node for lu in tg.spec.layers},
                       key=lambda k: list(nodes).index(k)):
        node, lu = _base(nodes[name], tg), tg.spec.layer(name)
        wbytes, bbytes = _param_bytes(node, g, lu) if lu is not None else (0, 0)
        layers.append({
            "node": name,
            "op": node.op,
            "trains": lu.describe() if lu is not None else "",
            "channels": f"{len(lu.channels)}/{lu.in_channels}" if lu is not None and lu.weight else "",
            "param_bytes": wbytes + bbytes,
            "saved_activation_bytes": g[tg.saved[name]].nbytes if name in tg.saved else 0,
            "mask_bytes": g[tg.masks[name]].nbytes if name in tg.masks else 0,
        })
    new_state = {new for _, new in tg.state}
    grads = sorted({(g[t].nbytes, t) for n in tg.backward_nodes() for t in n.outputs
                    if g[t].dtype == "float32" and t not in new_state}, reverse=True)
    macs = sum(ops.get(n.op).macs(n, g) for n in tg.backward_nodes())
    return {
        "update": tg.spec.text,
        "head": tg.options.head,
        "trained_layers": len(tg.spec.layers),
        "trained_params": int(sum(_count(_base(nodes[lu.node], tg), g, lu) for lu in tg.spec.layers)),
        "trainable_param_bytes": sum(layer["param_bytes"] for layer in layers),
        "optimizer_state_bytes": g[RNG].nbytes if RNG in g.tensors else 0,
        "saved_activation_bytes": sum(layer["saved_activation_bytes"] for layer in layers),
        "mask_bytes": sum(layer["mask_bytes"] for layer in layers),
        "gradient_bytes_total": sum(b for b, _ in grads),
        "largest_gradients": [{"tensor": t, "bytes": b} for b, t in grads[:5]],
        "macs_backward": int(macs),
        "backward_nodes": len(tg.backward_nodes()),
        "layers": layers,
    }


def _base(node: Node, tg: TrainingGraph) -> Node:
    """The forward node under its own op name (not the mask-emitting variant)."""
    if node.name not in tg.masks:
        return node
    return Node(node.op.removesuffix("_mask"), node.name, node.inputs, node.outputs[:1], node.attrs)


def _count(node: Node, graph: Graph, lu: LayerUpdate) -> int:
    wbytes, bbytes = _param_bytes(node, graph, lu)
    item = 4 if node.op == HEAD_OP else 1
    return wbytes // item + bbytes // 4


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as a small text table."""
    lines = [f"update {summary['update']} (head {summary['head']}): {summary['trained_params']} trained params, "
             f"{summary['trainable_param_bytes']} B params, {summary['saved_activation_bytes']} B saved activations, "
             f"{summary['mask_bytes']} B masks, {summary['macs_backward']} backward MACs"]
    lines.append(f"{'node':<28} {'op':<18} {'trains':<22} {'params':>7} {'saved':>7} {'mask':>6}")
    for layer in summary["layers"]:
        lines.append(f"{layer['node'][:28]:<28} {layer['op'][:18]:<18} {layer['trains'][:22]:<22} "
                     f"{layer['param_bytes']:>7} {layer['saved_activation_bytes']:>7} {layer['mask_bytes']:>6}")
    return "\n".join(lines)

