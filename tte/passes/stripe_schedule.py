"""The geometry of a striped stage (tte/passes/stripes.py): which rows each layer of each stripe computes and
reads, the scratch slots that hold a stripe's intermediates, and where the stage output may overlap its input.

A stage is a small graph from one input to one output whose nodes are convolutions, depthwise convolutions and
same-shape adds (a residual block: the block input's rows are kept in a slot until the add reads them). For a
stripe of output rows, the rows each tensor needs are found from the output back: a convolution needs the input
rows its kernel window covers, an add the same rows of both inputs; a tensor read by two layers keeps the union.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from tte.ir import Graph, Node, Tensor

CONV_OPS = ("conv2d", "depthwise_conv2d")
SLOT_NAMES = "abcdefghijklmnop"


@dataclass(frozen=True)
class StripeCall:
    """One layer of one stripe: output rows [out_rows) from rows [in_rows) of its data inputs (half-open,
    whole-tensor rows; an add reads its output rows of both inputs)."""

    node: Node
    in_rows: tuple[int, int]
    out_rows: tuple[int, int]


def data_inputs(node: Node) -> tuple[str, ...]:
    """The activation inputs of a stage layer (a convolution's first input, both inputs of an add)."""
    return tuple(node.inputs[:1]) if node.op in CONV_OPS else tuple(t for t in node.inputs if t)


def _geometry(node: Node, sub: Graph) -> tuple[int, int, int, int]:
    """(kernel height, stride, top padding, input height) of a conv or depthwise node."""
    kh = sub[node.inputs[1]].shape[1]
    return kh, int(node.attrs["stride"][0]), int(node.attrs["pad"][0]), sub[node.inputs[0]].shape[1]


def input_rows(node: Node, sub: Graph, rows: tuple[int, int]) -> tuple[int, int]:
    """The input rows that output rows [a, b) read (clipped to the image: the rest is padding)."""
    if node.op not in CONV_OPS:
        return rows
    kh, s, pt, h = _geometry(node, sub)
    a, b = rows
    return max(0, a * s - pt), min(h, (b - 1) * s - pt + kh)


def schedule(sub: Graph, rows: int, rolling: bool = False) -> list[list[StripeCall]]:
    """The calls of every stripe, in execution order: stripes top to bottom, layers in graph order. A layer
    computes every row its readers in the stripe need; `rolling`: only the rows no earlier stripe made (the
    rows still needed stay in the slot, `line_buffers`)."""
    return line_buffers(sub, rows, rolling).calls


@dataclass(frozen=True)
class LineBuffers:
    """The stripes of a stage and where each intermediate's rows sit in its slot.

    `calls`: per stripe, the layer calls (StripeCall). `base`: per stripe, the whole-tensor row at row 0 of each
    intermediate's slot. `shifts`: per stripe, before its calls, (tensor, rows dropped, rows kept): the kept rows
    move down to row 0 of the slot (rolling stripes only). `held`: per intermediate, the most rows its slot holds.
    `kept`: the intermediates whose rows outlive a stripe (each needs a slot of its own)."""

    calls: list[list[StripeCall]]
    base: list[dict[str, int]]
    shifts: list[list[tuple[str, int, int]]]
    held: dict[str, int]
    kept: frozenset[str]


def line_buffers(sub: Graph, rows: int, rolling: bool = False) -> LineBuffers:
    """The stripe schedule of a stage of stripe height `rows` (memoized per stage graph: the slots, the output
    offset, the MACs and the C all ask for it, for every option of every plan of a scheme search)."""
    key = (id(sub), rows, rolling)
    hit = _LINES.get(key)
    if hit is None or hit[0] is not sub:
        if len(_LINES) >= 1024:
            _LINES.pop(next(iter(_LINES)))
        hit = _LINES[key] = (sub, _line_buffers(sub, rows, rolling))  # keeps `sub` (and its id) alive
    return hit[1]


_LINES: dict[tuple[int, int, bool], tuple[Graph, LineBuffers]] = {}


def _line_buffers(sub: Graph, rows: int, rolling: bool) -> LineBuffers:
    """`line_buffers`, computed.

    Recomputing (default): each stripe makes every row its readers need, overlapping rows again, so a slot holds
    one stripe's rows of one tensor. Rolling (the line buffers of streaming image pipelines): each stripe makes
    only the rows past those made before (rows [done, needed end)); the rows a later read still needs stay in the
    slot and move down to its start before the next stripe, so no row is computed twice (the stage's MACs are
    the layers' own) at the price of a slot of its own per tensor whose rows outlive a stripe."""
    out = sub.outputs[0].tensor
    out_h = sub[out].shape[1]
    done: dict[str, int] = {}
    calls: list[list[StripeCall]] = []
    made: list[dict[str, int]] = []  # per stripe: rows [0, done) made of each intermediate before it
    for o0 in range(0, out_h, rows):
        need = {out: (o0, min(out_h, o0 + rows))}
        made.append(dict(done))
        stripe = []
        for node in reversed(sub.nodes):
            t = node.outputs[0]
            if t not in need:
                continue
            a, b = need[t]
            if rolling and t != out:
                a = done.get(t, 0)  # from the first row not made yet: the made rows stay contiguous
                if a >= b:
                    continue
            read = input_rows(node, sub, (a, b))
            for u in data_inputs(node):
                lo, hi = need.get(u, read)
                need[u] = (min(lo, read[0]), max(hi, read[1]))
            stripe.append(StripeCall(node, read, (a, b)))
        calls.append(stripe[::-1])
        if rolling:
            done.update({c.node.outputs[0]: c.out_rows[1] for c in stripe})
    return _windows(sub, calls, made, rolling)


def _windows(sub: Graph, calls: list[list[StripeCall]], made: list[dict[str, int]], rolling: bool) -> LineBuffers:
    """The slot windows of `line_buffers`: a slot starts at the first row any later read needs (or at the first
    row made in the stripe, when that is lower)."""
    inter = {n.outputs[0] for n in sub.nodes} - {sub.outputs[0].tensor}
    first_read: list[dict[str, int]] = [{} for _ in calls]
    future: dict[str, int] = {}
    for k in range(len(calls) - 1, -1, -1):  # the lowest row read in stripe k or after
        for c in calls[k]:
            for u in data_inputs(c.node):
                if u in inter:
                    future[u] = min(future.get(u, c.in_rows[0]), c.in_rows[0])
        first_read[k] = dict(future)
    base: list[dict[str, int]] = []
    shifts: list[list[tuple[str, int, int]]] = []
    held: dict[str, int] = {}
    kept: set[str] = set()
    for k, stripe in enumerate(calls):
        starts = {c.node.outputs[0]: c.out_rows[0] for c in stripe if c.node.outputs[0] in inter}
        ends = {c.node.outputs[0]: c.out_rows[1] for c in stripe if c.node.outputs[0] in inter}
        now, moves = {}, []
        for t in inter:
            if not rolling:
                now[t] = starts.get(t, 0)
            else:
                now[t] = min(first_read[k].get(t, made[k].get(t, 0)), made[k].get(t, 0))  # new rows start there
                keep = made[k].get(t, 0) - now[t]
                if keep > 0:
                    kept.add(t)
                    if k and now[t] > base[k - 1][t]:
                        moves.append((t, now[t] - base[k - 1][t], keep))
            held[t] = max(held.get(t, 0), ends.get(t, made[k].get(t, 0)) - now[t])
        base.append(now)
        shifts.append(sorted(moves))
    return LineBuffers(calls, base, shifts, held, frozenset(kept))


def row_bytes(sub: Graph, tensor: str) -> int:
    _, _, w, c = sub[tensor].shape
    return w * c


def scratch_slots(sub: Graph, rows: int, rolling: bool = False) -> tuple[dict[str, int], list[int]]:
    """The slot of each intermediate tensor and the bytes of each slot. A tensor whose rows outlive a stripe
    (rolling) has a slot of its own; any other takes the first slot whose tensor was last read before it is made
    (a chain alternates between two slots: a, b, a, ...)."""
    lines = line_buffers(sub, rows, rolling)
    made = {n.outputs[0]: i for i, n in enumerate(sub.nodes)}
    last = {t: max(i for i, n in enumerate(sub.nodes) if t in data_inputs(n)) for t in list(made)[:-1]}
    slot_of = {t: k for k, t in enumerate(t for t in last if t in lines.kept)}
    busy = [len(sub.nodes)] * len(slot_of)  # per slot: the last reader of its current tensor (kept: never free)
    for t in (t for t in last if t not in lines.kept):
        free = next((k for k, until in enumerate(busy) if until < made[t]), None)
        if free is None:
            free = len(busy)
            busy.append(0)
        busy[free] = last[t]
        slot_of[t] = free
    sizes = [0] * len(busy)
    for t, slot in slot_of.items():
        sizes[slot] = max(sizes[slot], lines.held[t] * row_bytes(sub, t))
    return slot_of, sizes


def output_offset(sub: Graph, rows: int, alignment: int = 16, rolling: bool = False) -> int | None:
    """Where the stage output may start relative to its input's first byte (0, or below it when the first
    stripes consume no input rows), such that no stripe writes output rows over input rows that are read later
    (by a later stripe, or by a layer of its own that runs at or after the write: a one-layer stage reads and
    writes in one call). None when the two could share no byte."""
    stripes = schedule(sub, rows, rolling)
    x, y = sub.inputs[0].tensor, sub.outputs[0].tensor
    rx, ry = row_bytes(sub, x), row_bytes(sub, y)
    reads = [[(i, c.in_rows[0]) for i, c in enumerate(s) if x in data_inputs(c.node)] for s in stripes]
    room = []
    for k, stripe in enumerate(stripes):
        at = len(stripe) - 1  # the call that writes the output rows
        later = [r for i, r in reads[k] if i >= at] + [r for s in reads[k + 1:] for _, r in s]
        if later:
            room.append(min(later) * rx - stripe[at].out_rows[1] * ry)
    offset = min(0, min(room, default=0)) // alignment * alignment
    return offset if offset > -sub[y].nbytes else None


def call_graph(call: StripeCall, sub: Graph) -> tuple[Node, Graph]:
    """The layer of one stripe call as a node of its own over sub-tensors `<t>@in` (the rows it reads of each
    data input t) and `<t>@out` (its output rows): the kernels need no change, only dims and the top/bottom
    padding that remains."""
    node = call.node
    (c, d), (a, b) = call.in_rows, call.out_rows
    attrs = dict(node.attrs)
    if node.op in CONV_OPS:
        kh, s, pt, _ = _geometry(node, sub)
        top = pt - a * s + c
        bottom = max(0, (b - a - 1) * s + kh - top - (d - c))
        attrs["pad"] = (top, node.attrs["pad"][1], bottom, node.attrs["pad"][3])
    ins = data_inputs(node)
    tensors = {t: sub[t] for t in node.inputs if t and t not in ins}
    names = {t: f"{t}@in" for t in ins}
    for t in ins:
        tensors[names[t]] = Tensor(names[t], (1, d - c, *sub[t].shape[2:]), sub[t].dtype, sub[t].quant)
    y, yt = f"{node.outputs[0]}@out", sub[node.outputs[0]]
    tensors[y] = Tensor(y, (1, b - a, *yt.shape[2:]), yt.dtype, yt.quant)
    one = replace(node, inputs=tuple(names.get(t, t) for t in node.inputs), outputs=(y,), attrs=attrs)
    return one, Graph(sub.name, tensors, (one,), (), ())
