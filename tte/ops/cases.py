"""Helpers to build the small single-op IR graphs that op modules list as test cases.

A case is a plain `Graph`: the oracle tests write it as a .tflite file for tflite-micro, the kernel tests run it
through the C runtime, and both compare with `tte.reference`. Cases are deterministic (seeded).
"""

from __future__ import annotations

import numpy as np

from tte.ir import Graph, IOSpec, Node, QParams, Tensor


def activation(name: str, shape: tuple[int, ...], scale: float, zp: int) -> Tensor:
    return Tensor(name, shape, "int8", QParams(scale, zp))


def conv_weights(name: str, shape: tuple[int, ...], axis: int, rng: np.random.Generator) -> Tensor:
    """Symmetric per-channel int8 weights with realistic, varied per-channel scales."""
    w = rng.integers(-127, 128, size=shape, dtype=np.int64)
    scales = rng.uniform(0.002, 0.03, size=shape[axis]).astype(np.float32)
    return Tensor(name, shape, "int8", QParams(scales, np.zeros(shape[axis], np.int64), axis), w)


def bias(name: str, n: int, s_in: float, s_w: np.ndarray, rng: np.random.Generator) -> Tensor:
    real = rng.normal(0, 0.5, size=n)
    s = (np.float64(s_in) * np.asarray(s_w, np.float64)).astype(np.float32)
    q = np.round(real / s).astype(np.int64)
    return Tensor(name, (n,), "int32", QParams(s, np.zeros(n, np.int64), 0 if n > 1 else None), q)


def single_node(op: str, name: str, inputs: list[Tensor], outputs: list[Tensor], **attrs) -> Graph:
    """A graph with one node; non-constant inputs become graph inputs (int8, NHWC)."""
    tensors = {t.name: t for t in (*inputs, *outputs)}
    node = Node(op, name, tuple(t.name for t in inputs), tuple(t.name for t in outputs), attrs)
    ins = tuple(IOSpec(t.name, t.shape, "NHWC", is_float=False) for t in inputs if not t.is_const)
    outs = tuple(IOSpec(t.name, t.shape, "NHWC", is_float=False) for t in outputs)
    return Graph(name, tensors, (node,), ins, outs)


def random_inputs(graph: Graph, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {io.tensor: rng.integers(-128, 128, size=graph[io.tensor].shape).astype(np.int8) for io in graph.inputs}
