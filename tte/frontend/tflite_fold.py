"""Import-time simplifications of TFLite idioms that have a better IR form.

- Shape arithmetic: Keras 3 with an open batch dimension converts Flatten/Reshape into
  SHAPE -> STRIDED_SLICE -> PACK -> RESHAPE. The shapes are static here (batch 1), so the integer ops are
  evaluated at import and the RESHAPE reads a constant.
- PAD before a VALID convolution (how TFLite expresses symmetric padding on stride-2 layers) becomes the
  convolution's own explicit padding, which the C kernels handle without a padded copy.
"""

from __future__ import annotations

import numpy as np

from tte.errors import UnsupportedError
from tte.frontend.tflite_model import Op, Subgraph
from tte.frontend.tflite_schema import fb
from tte.ir import Node, Tensor

FOLDABLE = ("SHAPE", "STRIDED_SLICE", "PACK", "CONCATENATION", "GATHER", "CAST", "EXPAND_DIMS", "SQUEEZE",
            "RESHAPE")
_INT_TYPES = ("INT32", "INT64")


def fold_shape_arithmetic(sg: Subgraph, ops: list[Op]) -> list[Op]:
    """Evaluate integer ops on constant (or static-shape) inputs; returns the operators that remain."""
    remaining = []
    for op in ops:
        if op.kind in FOLDABLE and len(op.outputs) == 1 and sg.type_name(op.outputs[0]) in _INT_TYPES:
            value = _evaluate(sg, op)
            if value is not None:
                out = op.outputs[0]
                sg.folded[out] = value.astype(np.int32 if sg.type_name(out) == "INT32" else np.int64)
                continue
        remaining.append(op)
    return remaining


def _evaluate(sg: Subgraph, op: Op) -> np.ndarray | None:
    """The op's value, or None when an input is not known at import time."""
    if op.kind == "SHAPE":
        return np.asarray(sg.shape(op.inputs[0]), dtype=np.int64) if op.inputs else None
    if any(i < 0 for i in op.inputs):
        return None
    args = [sg.value(i) for i in op.inputs]
    if not args or any(a is None or a.dtype.kind not in "iu" for a in args):
        return None
    a = [np.asarray(v, dtype=np.int64) for v in args]
    try:
        return _FOLDERS[op.kind](a, op.options)
    except (ValueError, IndexError, TypeError) as e:
        raise UnsupportedError(f"cannot evaluate the shape arithmetic ({e})", node=op.name, op=op.kind,
                               hint="convert the model with a fixed input shape") from None


def _strided_slice(a: list[np.ndarray], opts) -> np.ndarray:
    x, begin, end, strides = a[0], a[1].ravel(), a[2].ravel(), a[3].ravel()
    o = opts if isinstance(opts, fb.StridedSliceOptionsT) else fb.StridedSliceOptionsT()
    if o.ellipsisMask or o.newAxisMask or o.offset:
        raise ValueError("ellipsis/new-axis masks are not supported")
    if not len(begin) == len(end) == len(strides) <= x.ndim:
        raise ValueError("begin/end/strides lengths disagree")
    index: list[object] = []
    for d in range(len(begin)):
        if o.shrinkAxisMask >> d & 1:
            index.append(int(begin[d]))
            continue
        b = None if o.beginMask >> d & 1 else int(begin[d])
        e = None if o.endMask >> d & 1 else int(end[d])
        index.append(slice(b, e, int(strides[d]) or None))
    return np.asarray(x[tuple(index)])


def _axis(opts, cls, default: int = 0) -> int:
    return int(opts.axis) if isinstance(opts, cls) else default


_FOLDERS = {
    "STRIDED_SLICE": _strided_slice,
    "PACK": lambda a, o: np.stack(a, axis=_axis(o, fb.PackOptionsT)),
    "CONCATENATION": lambda a, o: np.concatenate([np.atleast_1d(v) for v in a],
                                                 axis=_axis(o, fb.ConcatenationOptionsT)),
    "GATHER": lambda a, o: np.take(a[0], a[1], axis=_axis(o, fb.GatherOptionsT)),
    "CAST": lambda a, o: a[0],
    "EXPAND_DIMS": lambda a, o: np.expand_dims(a[0], int(a[1].ravel()[0])),
    "SQUEEZE": lambda a, o: np.squeeze(a[0]),
    "RESHAPE": lambda a, o: a[0].reshape([int(d) for d in a[1].ravel()]) if len(a) > 1 else a[0],
}


def fuse_pads(nodes: list[Node], tensors: dict[str, Tensor], outputs: set[str]) -> list[Node]:
    """Fold a spatial zero-point PAD into the (VALID or SAME) convolution that alone reads it."""
    readers: dict[str, list[Node]] = {}
    for n in nodes:
        for t in n.inputs:
            readers.setdefault(t, []).append(n)
    fused: dict[str, Node] = {}  # pad output -> pad node, for pads folded into their reader
    result = []
    for n in nodes:
        if n.op == "pad" and _foldable_pad(n, tensors, readers, outputs):
            fused[n.outputs[0]] = n
            continue
        if n.op in ("conv2d", "depthwise_conv2d") and n.inputs[0] in fused:
            pad = fused.pop(n.inputs[0])
            (_, _), (pt, pb), (pl, pr), (_, _) = pad.attrs["pads"]
            ct, cl, cb, cr = n.attrs["pad"]
            n = Node(n.op, n.name, (pad.inputs[0], *n.inputs[1:]), n.outputs,
                     {**n.attrs, "pad": (ct + pt, cl + pl, cb + pb, cr + pr)})
        result.append(n)
    return result


def _foldable_pad(n: Node, tensors: dict[str, Tensor], readers: dict[str, list[Node]], outputs: set[str]) -> bool:
    x, y = tensors[n.inputs[0]], tensors[n.outputs[0]]
    users = readers.get(y.name, [])
    if y.name in outputs or len(users) != 1 or users[0].op not in ("conv2d", "depthwise_conv2d"):
        return False
    if users[0].inputs[0] != y.name or len(x.shape) != 4:
        return False
    pads = n.attrs["pads"]
    same_q = x.quant.zp == y.quant.zp and np.float32(x.quant.s) == np.float32(y.quant.s)
    value_is_zp = n.attrs.get("value", y.quant.zp) == y.quant.zp
    return same_q and value_is_zp and tuple(pads[0]) == (0, 0) and tuple(pads[3]) == (0, 0)
