"""Inference clean-up passes: dead nodes, identity reshapes, unknown ops."""

from __future__ import annotations

import numpy as np
import pytest

from tte.errors import UnsupportedError
from tte.ir import Graph, IOSpec, Node
from tte.ops import cases as C
from tte.passes.normalize import normalize
from tte.reference import run


def _graph(extra: tuple[Node, ...] = ()) -> Graph:
    x = C.activation("x", (1, 2, 2, 3), 0.1, 0)
    same = C.activation("same", (1, 2, 2, 3), 0.1, 0)
    y = C.activation("y", (1, 2, 2, 3), 0.05, 1)
    dead = C.activation("dead", (1, 12), 0.1, 0)
    nodes = (
        Node("reshape", "noop", ("x",), ("same",)),
        Node("reshape", "unused", ("x",), ("dead",)),
        Node("requantize", "rq", ("same",), ("y",)),
        *extra,
    )
    return Graph("g", {t.name: t for t in (x, same, y, dead)}, nodes, (IOSpec("x", x.shape),), (IOSpec("y", y.shape),))


def test_normalize_drops_dead_nodes_and_identity_reshapes():
    g = _graph()
    n = normalize(g)
    assert [node.name for node in n.nodes] == ["rq"]
    assert n.nodes[0].inputs == ("x",)
    assert "same" not in n.tensors and "dead" not in n.tensors
    x = np.random.default_rng(0).integers(-128, 128, (1, 2, 2, 3)).astype(np.int8)
    np.testing.assert_array_equal(run(n, x)["y"], run(g, x)["y"])


def test_normalize_rejects_unknown_ops():
    g = _graph((Node("fancy_op", "f", ("y",), ("y2",)),))
    with pytest.raises(UnsupportedError, match="node 'f' \\(fancy_op\\): op is not supported"):
        normalize(g)
