"""Formatting helpers shared by the emitters: C literals for dims and parameter structs, requantization arrays."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from codegen.ops import ConstArray, ConstName, Ref
from tte.errors import UnsupportedError
from tte.ir import Graph, Node, Tensor

MAX_SHIFT = 31  # the runtime's left shift is done on uint32: larger ones are not meaningful


def dims4(shape: Sequence[int]) -> tuple[int, int, int, int]:
    """A shape of rank <= 4 as NHWC dims, with leading 1s."""
    if len(shape) > 4:
        raise ValueError(f"rank {len(shape)} > 4")
    return tuple([1] * (4 - len(shape)) + [int(d) for d in shape])  # type: ignore[return-value]


def dims_literal(dims: Sequence[int]) -> str:
    return "{" + ", ".join(str(int(d)) for d in dims) + "}"


def struct_literal(fields: dict[str, int | str]) -> str:
    """A designated initializer: {.a = 1, .b = 2}."""
    return "{" + ", ".join(f".{k} = {v}" for k, v in fields.items()) + "}"


def block(decls: list[str], call: str) -> list[str]:
    """A C block with its static const parameters and the kernel call, indented by four spaces."""
    return ["{", *(f"    {d}" for d in decls), f"    {call}", "}"]


def optional_ref(node: Node, index: int, ref: Ref) -> str:
    """The pointer of an optional input (a bias), or NULL when absent."""
    if len(node.inputs) > index and node.inputs[index]:
        return ref(node.inputs[index])
    return "NULL"


def requant_arrays(node: Node, const_name: ConstName, m: np.ndarray, sh: np.ndarray, per_channel: bool
                   ) -> tuple[list[ConstArray], str]:
    """The multiplier/shift arrays of a conv or FC node and the `tte_requant` initializer that points at them."""
    m, sh = np.atleast_1d(m), np.atleast_1d(sh)
    if not per_channel:
        m, sh = m[:1], sh[:1]
    check_shifts(node, sh)
    mult, shift = const_name("multiplier"), const_name("shift")
    consts = [ConstArray(mult, "int32_t", m.astype(np.int32)), ConstArray(shift, "int32_t", sh.astype(np.int32))]
    return consts, f"{{{mult}, {shift}, {int(per_channel)}}}"


def check_shifts(node: Node, shifts: np.ndarray | Sequence[int]) -> None:
    if int(np.max(shifts)) > MAX_SHIFT:
        raise UnsupportedError(
            "requantization scale ratio >= 2^31 (input or weight scale far larger than the output scale)",
            node=node.name, op=node.op, hint="check the model's quantization parameters",
        )


def check_symmetric(node: Node, w: Tensor) -> None:
    """Conv weights must be symmetric (zero point 0), as TFLite's int8 scheme requires."""
    if np.any(w.quant.zero_point != 0):
        raise UnsupportedError("weights with a non-zero zero point", node=node.name, op=node.op,
                               hint="quantize the weights symmetrically (int8, zero point 0)")


def check_limit(node: Node, what: str, value: int, limit: int) -> None:
    if value >= limit:
        raise UnsupportedError(f"{what} = {value} exceeds the runtime's int32 accumulation limit {limit - 1}",
                               node=node.name, op=node.op, hint="split the layer")


def act_fields(node: Node) -> dict[str, int]:
    lo, hi = node.attrs["act"]
    return {"act_min": int(lo), "act_max": int(hi)}


def io(graph: Graph, node: Node) -> tuple[Tensor, Tensor]:
    """The node's first input and first output."""
    return graph[node.inputs[0]], graph[node.outputs[0]]
