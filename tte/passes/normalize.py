"""Inference clean-up passes: drop dead nodes and identity reshapes, and check every op is known.

Each pass is a pure function Graph -> Graph; `normalize` runs them in order.
"""

from __future__ import annotations

from tte import ops
from tte.errors import UnsupportedError
from tte.ir import Graph, Node


def check_ops(graph: Graph) -> Graph:
    """Fail with a user error naming the first node whose op tte does not know."""
    for node in graph.nodes:
        if node.op not in ops.OPS:
            raise UnsupportedError("op is not supported", node=node.name, op=node.op,
                                   hint=f"supported ops: {', '.join(sorted(ops.OPS))}")
    return graph


def drop_dead_nodes(graph: Graph) -> Graph:
    """Remove nodes none of whose outputs reaches a graph output."""
    needed = {io.tensor for io in graph.outputs}
    keep: list[Node] = []
    for node in reversed(graph.nodes):
        if any(t in needed for t in node.outputs):
            keep.append(node)
            needed.update(t for t in node.inputs if t)
    if len(keep) == len(graph.nodes):
        return graph
    return graph.with_nodes(reversed(keep))


def drop_identity_reshapes(graph: Graph) -> Graph:
    """Remove reshapes that keep the shape (their readers read the input instead), unless they make an output."""
    outputs = {io.tensor for io in graph.outputs}
    rename: dict[str, str] = {}
    nodes: list[Node] = []
    for node in graph.nodes:
        node = _renamed(node, rename)
        src, dst = (node.inputs[0], node.outputs[0]) if node.op == "reshape" else ("", "")
        if node.op == "reshape" and dst not in outputs and graph[src].shape == graph[dst].shape:
            rename[dst] = src
            continue
        nodes.append(node)
    if not rename:
        return graph
    return graph.with_nodes(nodes)


def _renamed(node: Node, rename: dict[str, str]) -> Node:
    if not any(t in rename for t in node.inputs):
        return node
    return Node(node.op, node.name, tuple(rename.get(t, t) for t in node.inputs), node.outputs, node.attrs)


def normalize(graph: Graph) -> Graph:
    """The inference passes in order; the result is validated."""
    for step in (check_ops, drop_identity_reshapes, drop_dead_nodes):
        graph = step(graph)
    graph.validate()
    return graph
