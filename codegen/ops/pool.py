"""avg_pool2d -> tte_avg_pool2d_s8; mean -> tte_mean_s8."""

from __future__ import annotations

import numpy as np

from codegen.ops import CCall, ConstName, Ref, emitter
from codegen.ops._common import act_fields, block, check_shifts, dims4, dims_literal, io, struct_literal
from tte.errors import UnsupportedError
from tte.ir import Graph, Node
from tte.ops.pool import mean_params

MEAN_LIMIT = 1 << 23  # reduced elements: the int32 sum of int8 values stays exact


@emitter("avg_pool2d")
def avg_pool2d(node: Node, graph: Graph, ref: Ref, const_name: ConstName) -> CCall:
    x, y = io(graph, node)
    kh, kw = (int(k) for k in node.attrs["kernel"])
    sh, sw = (int(s) for s in node.attrs["stride"])
    pt, pl, pb, pr = (int(p) for p in node.attrs["pad"])
    if max(pt, pb) >= kh or max(pl, pr) >= kw:
        raise UnsupportedError(f"padding {node.attrs['pad']} not smaller than the kernel {kh}x{kw}",
                               node=node.name, op=node.op, hint="windows would be empty")
    if x.quant.s != y.quant.s or x.quant.zp != y.quant.zp:
        raise UnsupportedError("input and output quantization differ", node=node.name, op=node.op,
                               hint="TFLite's int8 AVERAGE_POOL_2D needs equal scale and zero point")
    params = {"kernel_h": kh, "kernel_w": kw, "stride_h": sh, "stride_w": sw, "pad_top": pt, "pad_left": pl,
              **act_fields(node)}
    decls = [
        f"static const tte_pool_params params = {struct_literal(params)};",
        f"static const tte_dims in_dims = {dims_literal(x.shape)}, out_dims = {dims_literal(y.shape)};",
    ]
    call = f"tte_avg_pool2d_s8(&params, &in_dims, {ref(x.name)}, &out_dims, {ref(y.name)});"
    return CCall(block(decls, call), [], ["src/avg_pool2d.c"])


def _mean_dims(node: Node, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """{outer, reduced, 1, inner} for reduced axes that are contiguous."""
    axes = sorted({int(a) % len(shape) for a in node.attrs["axes"]})
    if axes != list(range(axes[0], axes[-1] + 1)):
        raise UnsupportedError(f"mean over non-adjacent axes {axes}", node=node.name, op=node.op,
                               hint="transpose the reduced axes next to each other")
    outer = int(np.prod(shape[: axes[0]], dtype=np.int64))
    reduced = int(np.prod(shape[axes[0]: axes[-1] + 1], dtype=np.int64))
    inner = int(np.prod(shape[axes[-1] + 1:], dtype=np.int64))
    return outer, reduced, 1, inner


@emitter("mean")
def mean(node: Node, graph: Graph, ref: Ref, const_name: ConstName) -> CCall:
    return mean_call(node, graph, ref)


def mean_call(node: Node, graph: Graph, ref: Ref, variant: str = "", extra_args: str = "",
              source: str = "src/mean.c") -> CCall:
    """`tte_mean{variant}_s8`; `extra_args` follow the output (the mask variant's bits)."""
    x, y = io(graph, node)
    dims = _mean_dims(node, x.shape)
    if dims[1] >= MEAN_LIMIT:
        raise UnsupportedError(f"mean over {dims[1]} elements", node=node.name, op=node.op,
                               hint=f"at most {MEAN_LIMIT - 1} are supported")
    m, s = mean_params(x.quant.s, y.quant.s, dims[1])
    check_shifts(node, [s])
    params = {"input_offset": -x.quant.zp, "output_offset": y.quant.zp, "multiplier": m, "shift": s}
    decls = [
        f"static const tte_mean_params params = {struct_literal(params)};",
        f"static const tte_dims in_dims = {dims_literal(dims4(dims))};",
    ]
    call = f"tte_mean{variant}_s8(&params, &in_dims, {ref(x.name)}, {ref(y.name)}{extra_args});"
    return CCall(block(decls, call), [], [source])
