"""Run an IR graph in numpy, bit-exact with TFLite Micro's int8 kernels."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from tte import ops
from tte.ir import Graph


def run(graph: Graph, inputs: Mapping[str, np.ndarray] | np.ndarray, keep: bool = False) -> dict[str, np.ndarray]:
    """Execute `graph` on int8 NHWC inputs (by tensor name, or one array for a single-input graph).

    Returns the graph outputs by tensor name, or every computed tensor when `keep` is set.
    """
    if not isinstance(inputs, Mapping):
        inputs = {graph.inputs[0].tensor: inputs}
    env: dict[str, np.ndarray] = {}
    for io in graph.inputs:
        x = np.asarray(inputs[io.tensor])
        t = graph[io.tensor]
        if x.shape != t.shape or x.dtype != np.dtype(t.dtype):
            raise ValueError(f"input {io.tensor}: expected {t.dtype}{list(t.shape)}, got {x.dtype}{list(x.shape)}")
        env[io.tensor] = x
    for name, t in graph.tensors.items():
        if t.is_const:
            env[name] = t.data
    for node in graph.nodes:
        args = [env[t] if t else None for t in node.inputs]
        outs = ops.get(node.op).reference(node, graph, args)
        for name, value in zip(node.outputs, outs, strict=True):
            expect = graph[name]
            assert value.shape == expect.shape, f"{node.name}: {name} {value.shape} != {expect.shape}"
            env[name] = value
    if keep:
        return env
    return {io.tensor: env[io.tensor] for io in graph.outputs}
