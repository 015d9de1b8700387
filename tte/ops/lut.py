"""lut: any unary int8 -> int8 op with fixed quantization, as a 256-entry table built at compile time.

The table is computed by running the op's TFLite integer reference on all 256 inputs, so the C kernel (a table
lookup) is exact by construction. Table builders for specific activations live in `tte/ops/activations.py`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tte.ir import Graph, Node
from tte.ops import OpDef, register
from tte.ops import cases as C


def lut_reference(node: Node, graph: Graph, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    table = np.asarray(node.attrs["table"], dtype=np.int8)
    return [table[inputs[0].astype(np.int64) + 128]]


def lut_cases() -> list[Graph]:
    rng = np.random.default_rng(0)
    x = C.activation("lut_x", (1, 3, 3, 5), 0.1, 0)
    y = C.activation("lut_y", (1, 3, 3, 5), 0.05, -3)
    table = tuple(int(v) for v in rng.integers(-128, 128, 256))
    return [C.single_node("lut", "lut", [x], [y], table=table)]


register(OpDef("lut", lut_reference, cases=lut_cases))
