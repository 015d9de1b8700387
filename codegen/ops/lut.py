"""lut -> tte_lut_s8 with the node's 256-entry table as a constant array."""

from __future__ import annotations

import numpy as np

from codegen.ops import CCall, ConstArray, ConstName, Ref, emitter
from codegen.ops._common import io
from tte.errors import UnsupportedError
from tte.ir import Graph, Node


@emitter("lut")
def lut(node: Node, graph: Graph, ref: Ref, const_name: ConstName) -> CCall:
    x, y = io(graph, node)
    table = np.asarray(node.attrs["table"], dtype=np.int64)
    if table.shape != (256,) or table.min() < -128 or table.max() > 127:
        raise UnsupportedError("lut table is not 256 int8 values", node=node.name, op=node.op,
                               hint="build tables with the op's reference on all 256 inputs")
    name = const_name("table")
    call = f"tte_lut_s8({name}, {y.size}, {ref(x.name)}, {ref(y.name)});"
    return CCall([call], [ConstArray(name, "int8_t", table.astype(np.int8))], ["src/lut.c"])
