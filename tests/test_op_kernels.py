"""C kernels of the issue-8 ops against the numpy reference, bit for bit: the forward op cases (also run by
test_kernels.py) plus every train-step node of these ops (masks, arg-max codes, float32 gradients), each run
alone in C on the values the reference computed in a training step."""

from __future__ import annotations

import numpy as np
import pytest
from op_nets import activations_net, aifes_like, broadcast_add_net, se_concat_net

from tte.ir import Graph, IOSpec
from tte.testing.c_harness import run_c
from tte.train import Trainer, TrainOptions

TRAIN_OPS = ("max_pool2d_mask", "max_pool2d_grad", "lut_mask", "lut_step_grad", "lut_table_grad", "mul_mask",
             "sub_mask", "add_broadcast_mask", "mul_input_grad", "reduce_grad", "slice_f32", "slice_grad",
             "max_pool2d", "mul", "sub", "concat", "slice", "lut", "add_broadcast")


def _single(graph: Graph, node) -> Graph:
    names = [t for t in (*node.inputs, *node.outputs) if t]
    ins = tuple(IOSpec(t, graph[t].shape, "NHWC", False) for t in node.inputs if t and not graph[t].is_const)
    outs = tuple(IOSpec(t, graph[t].shape, "NHWC", False) for t in node.outputs)
    return Graph(node.name.replace("/", "_"), {t: graph[t] for t in names}, (node,), ins, outs)


@pytest.mark.parametrize("net", [aifes_like, activations_net, se_concat_net, broadcast_add_net],
                         ids=lambda f: f.__name__)
def test_train_step_nodes_match_reference(net) -> None:
    graph, x = net()
    tr = Trainer(graph, "full", TrainOptions(rounding="nearest"))
    env = tr.trace_step(x, 1).env
    g = tr.program.graph
    seen = set()
    for node in g.nodes:
        if node.op not in TRAIN_OPS:
            continue
        single = _single(g, node)
        got = run_c(single, {io.tensor: env[io.tensor] for io in single.inputs})
        for io in single.outputs:
            want = env[io.tensor]
            assert got[io.tensor].tobytes() == np.ascontiguousarray(want).tobytes(), \
                f"{node.name} ({node.op}): output {io.tensor} differs from the reference"
        seen.add(node.op)
    assert seen, "no node of the new ops was checked"
