"""concat and slice: int8 byte moves that keep the quantization (TFLite's CONCATENATION, SPLIT, SPLIT_V,
SLICE, STRIDED_SLICE).

TFLite's int8 kernels copy bytes: every input of a CONCATENATION and the output share scale and zero point (the
converter ensures it); an importer meeting different quantizations puts a `requantize` in front. A SPLIT is one
`slice` per output.
- concat: inputs joined along `axis` (IR axis, any rank <= 4).
- slice: `begin`, `size`, `strides` per axis (strides > 0): output[i] = x[begin + i * stride].
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tte.ir import Graph, Node
from tte.ops import OpDef, register
from tte.ops import cases as C


def concat_reference(node: Node, graph: Graph, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    return [np.concatenate([np.asarray(x) for x in inputs], axis=int(node.attrs["axis"]))]


def slice_index(node: Node) -> tuple[slice, ...]:
    begin, size = node.attrs["begin"], node.attrs["size"]
    strides = node.attrs.get("strides") or (1,) * len(begin)
    return tuple(slice(b, b + (n - 1) * s + 1, s) for b, n, s in zip(begin, size, strides, strict=True))


def slice_reference(node: Node, graph: Graph, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    return [np.ascontiguousarray(inputs[0][slice_index(node)])]


def concat_cases() -> list[Graph]:
    out = []
    for name, shapes, axis in (("concat_c", [(1, 4, 4, 3), (1, 4, 4, 5)], 3),
                               ("concat_h3", [(1, 2, 3, 4), (1, 3, 3, 4), (1, 1, 3, 4)], 1),
                               ("concat_2d", [(1, 6), (1, 4)], 1)):
        xs = [C.activation(f"{name}_x{i}", s, 0.05, -3) for i, s in enumerate(shapes)]
        shape = list(shapes[0])
        shape[axis] = sum(s[axis] for s in shapes)
        out.append(C.single_node("concat", name, xs, [C.activation(f"{name}_y", tuple(shape), 0.05, -3)], axis=axis))
    return out


def slice_cases() -> list[Graph]:
    out = []
    for name, shape, begin, size, strides in (
            ("slice_c", (1, 4, 4, 8), (0, 0, 0, 2), (1, 4, 4, 3), None),
            ("slice_hw", (1, 6, 5, 3), (0, 1, 2, 0), (1, 4, 2, 3), None),
            ("slice_strided", (1, 7, 6, 4), (0, 1, 0, 1), (1, 3, 3, 2), (1, 2, 2, 2)),
            ("slice_2d", (1, 10), (0, 3), (1, 5), None)):
        x = C.activation(f"{name}_x", shape, 0.1, 4)
        y = C.activation(f"{name}_y", size, 0.1, 4)
        attrs = {"begin": begin, "size": size, "strides": strides or (1,) * len(shape)}
        out.append(C.single_node("slice", name, [x], [y], **attrs))
    return out


register(OpDef("concat", concat_reference, cases=concat_cases))
register(OpDef("slice", slice_reference, cases=slice_cases))
