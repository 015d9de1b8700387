"""The node table of a profiling build: what each `TTE_PROFILE_BEGIN(k)` / `TTE_PROFILE_END(k)` id measures.

The generated C wraps every node's statements in these hooks (codegen/templates/model.c.j2): ids 0 .. N-1 are
the nodes of `<name>_infer` in order, then those of `<name>_train_step`. The table goes into the output folder
as `profile.json`, so bench/node_profile.py can name the per-node instruction counts the firmware sends back.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tte import ops
from tte.ir import Graph

if TYPE_CHECKING:
    from codegen.emit import NodeCode

PROFILE_FILE = "profile.json"
_CALL = re.compile(r"\b(tte_\w+)\s*\(")


def kernels(lines: Sequence[str]) -> list[str]:
    """The runtime functions a node's statements call, in first-call order."""
    found: list[str] = []
    for line in lines:
        for name in _CALL.findall(line):
            if name not in found:
                found.append(name)
    return found


def _macs(node: Any, graph: Graph) -> int:
    try:
        return int(ops.get(node.op).macs(node, graph))
    except (KeyError, ValueError, TypeError):  # an op without a MAC rule counts none
        return 0


def node_rows(codes: Sequence[NodeCode], graph: Graph, call: str, first_id: int) -> list[dict[str, Any]]:
    """One row per node: its profile id, entry point, source name, op, kernels and MACs."""
    rows = []
    for k, code in enumerate(codes):
        node = code.node
        rows.append({"id": first_id + k, "call": call, "name": node.name, "op": node.op,
                     "kernel": "+".join(kernels(code.lines)) or "-", "macs": _macs(node, graph)})
    return rows


def profile_json(name: str, infer: tuple[Sequence[NodeCode], Graph],
                 train: tuple[Sequence[NodeCode], Graph] | None = None) -> str:
    """profile.json: the model name and the node table (inference nodes first, then the train step's)."""
    rows = node_rows(infer[0], infer[1], "infer", 0)
    if train is not None:
        rows += node_rows(train[0], train[1], "train", len(rows))
    return json.dumps({"model": name, "nodes": rows}, indent=1) + "\n"
