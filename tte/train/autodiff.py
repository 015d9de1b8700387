"""build_training_graph: the train step as one IR graph (forward int8, loss, pruned fp32 backward with updates).

The result is a plain `Graph` that `tte.reference.run` executes once the trainable parameters (graph state,
constants whose current value the caller substitutes) are filled in:
- inputs: the model input, `tte:label` (int32 [1]) and `tte:lr` (float32 [1]);
- outputs: `tte:loss` (float32 [1]), then the new value of every state tensor (`TrainingGraph.state` pairs
  each state tensor with the output that replaces it: in C the update is in place, in SRAM).
Node order is the schedule: the forward pass (int8 nodes unchanged, except that nodes on the backward path emit
a 1-bit clamp mask, `<op>_mask`, and `gather_channels` saves the trained input channels of a trained weight),
the loss, then the backward pass in reverse order of the forward nodes. Per layer: mask -> bias update ->
input gradient (old weights) -> fused weight update. No gradient is computed below the lowest trained layer and
no weight gradient for a frozen weight. Gradients of tensors read by several nodes are summed (`grad_add`) in
the order the contributions appear. With `TrainOptions.fuse_blocks` (the default) the backward chain of each
inverted-residual block then becomes one `block_grad` node that runs channel by channel (fuse_block.py).

Gradient rules (op -> function emitting backward nodes) live in `GRAD_RULES`; add one with `@grad_rule(op)`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

import tte.train.forward_ops  # noqa: F401  (registers the mask variants)
import tte.train.grad_ops  # noqa: F401
import tte.train.update_ops  # noqa: F401
from tte.errors import TteError
from tte.ir import Graph, IOSpec, Node, QParams, Tensor
from tte.train.block_grad import BLOCK_GRAD
from tte.train.forward_ops import mask_bytes, mask_op, needs_mask
from tte.train.fp32 import seed_state
from tte.train.fuse_block import fuse_blocks
from tte.train.head import HEAD_OP
from tte.train.spec import LayerUpdate, UpdateSpec
from tte.train.update_ops import update_factors, written_channels

LABEL, LR, LOSS, RNG = "tte:label", "tte:lr", "tte:loss", "tte:rng"
ROUNDINGS = ("stochastic", "nearest")


@dataclass(frozen=True)
class TrainOptions:
    """How a train step updates: `head` (keep | fp32 | new:N), QAS on or off, rounding, RNG seed."""

    head: str = "keep"
    rounding: str = "stochastic"
    qas: bool = True
    seed: int = 1
    hard_swish_threshold: float = 0.0  # HardSwish's derivative is taken as the step x > threshold (a 1-bit mask)
    fuse_blocks: bool = True  # each inverted-residual block's backward as one per-channel node (fuse_block.py)

    def __post_init__(self) -> None:
        if self.rounding not in ROUNDINGS:
            raise TteError(f"unknown rounding '{self.rounding}'", hint="use stochastic or nearest")


@dataclass(frozen=True)
class TrainingGraph:
    """The train step program and what the runtime must know about it."""

    graph: Graph
    forward: Graph  # the inference graph (after apply_head) it was built from
    spec: UpdateSpec
    options: TrainOptions
    state: tuple[tuple[str, str], ...]  # (state tensor, output holding its value after the step)
    saved: Mapping[str, str]  # trained layer -> the activation it saved (trained input channels only)
    masks: Mapping[str, str]  # forward node -> its packed 1-bit mask
    grads: Mapping[str, str]  # activation -> the tensor holding its complete gradient dL/d(real value)
    logits: str
    num_forward: int  # nodes before the loss node

    @property
    def state_names(self) -> tuple[str, ...]:
        return tuple(s for s, _ in self.state)

    def backward_nodes(self) -> tuple[Node, ...]:
        return self.graph.nodes[self.num_forward + 1:]

    def written_slices(self) -> dict[str, tuple[int, ...] | None]:
        """For each state tensor, the last-axis indices the step writes (None: all of it).

        A weight trained on part of its input channels needs only that slice in SRAM; the rest stays in flash.
        """
        out: dict[str, tuple[int, ...] | None] = {s: None for s, _ in self.state}
        for n in self.backward_nodes():
            if n.op.endswith("weight_update") or (n.op == BLOCK_GRAD and n.inputs[2]):
                w = self.graph[n.inputs[2]]
                cols = tuple(int(c) for c in written_channels(n))
                out[n.inputs[2]] = None if len(cols) == w.shape[-1] else cols
        return out


Rule = Callable[["_Builder", Node, str], None]
GRAD_RULES: dict[str, Rule] = {}
# Ops whose gradient needs more than a 1-bit clamp mask from the forward pass (max_pool2d: the arg-max index of
# each window). saver(builder, node) returns the `<op>_mask` node to emit instead of `node`, having registered
# its saved output in builder.masks; defined next to the op's gradient rule (tte/train/op_grads.py).
FORWARD_SAVES: dict[str, Callable[[_Builder, Node], Node]] = {}


def grad_rule(*op_names: str) -> Callable[[Rule], Rule]:
    def deco(fn: Rule) -> Rule:
        for op in op_names:
            GRAD_RULES[op] = fn
        return fn

    return deco


def build_training_graph(graph: Graph, spec: UpdateSpec, options: TrainOptions | None = None) -> TrainingGraph:
    """The train step of `graph` (already through `apply_head`) for the parsed update `spec`."""
    options = options or TrainOptions()
    b = _Builder(graph, spec, options)
    return b.build()


class _Builder:
    def __init__(self, fwd: Graph, spec: UpdateSpec, options: TrainOptions) -> None:
        self.fwd, self.spec, self.opts = fwd, spec, options
        self.tensors: dict[str, Tensor] = dict(fwd.tensors)
        self.nodes: list[Node] = []
        self.trained: dict[str, LayerUpdate] = {lu.node: lu for lu in spec.layers}
        self.saved: dict[str, str] = {}
        self.masks: dict[str, str] = {}
        self.state: list[tuple[str, str]] = []
        self.grad: dict[str, str] = {}  # tensor -> its (partially) accumulated gradient tensor
        self.final_grads: dict[str, str] = {}  # tensor -> its complete gradient tensor
        self.rng = RNG
        self._uses_rng = False
        self._rng_count = 0
        self._sums: dict[str, int] = {}  # tensor -> contributions summed so far
        self.logits, keep = self._forward_nodes()
        self.depends = self._depends(keep)
        self.forward_nodes = keep

    # --- analysis -----------------------------------------------------------------------------------------------

    def _forward_nodes(self) -> tuple[str, list[Node]]:
        """The logits tensor (the input of a final softmax, if any) and the forward nodes it needs."""
        logits = self.fwd.outputs[0].tensor
        prod = self.fwd.producer(logits)
        if prod is not None and prod.op == "softmax":
            logits = prod.inputs[0]
        needed, keep = {logits}, []
        for n in reversed(self.fwd.nodes):
            if any(o in needed for o in n.outputs):
                keep.append(n)
                needed.update(t for t in n.inputs if t)
        return logits, keep[::-1]

    def _depends(self, nodes: list[Node]) -> dict[str, bool]:
        """Activation tensors that depend on a trained parameter: exactly those whose gradient is needed."""
        dep: dict[str, bool] = {}
        for n in nodes:
            d = n.name in self.trained or any(dep.get(t, False) for t in n.inputs if t)
            for o in n.outputs:
                dep[o] = d
        return dep

    # --- emission helpers ---------------------------------------------------------------------------------------

    def emit(self, node: Node) -> None:
        self.nodes.append(node)

    def tensor(self, name: str, shape: tuple[int, ...], dtype: str = "float32", quant: QParams | None = None) -> str:
        base, k = name, 1
        while name in self.tensors:
            k += 1
            name = f"{base}{k}"
        self.tensors[name] = Tensor(name, shape, dtype, quant)
        return name

    def grad_tensor(self, of: str) -> str:
        return self.tensor(f"{of}:grad", self.tensors[of].shape)

    def contribute(self, x: str, g: str) -> None:
        """Add g to the gradient of x (a sum when several nodes read x)."""
        if not self.depends.get(x, False):
            return
        if x not in self.grad:
            self.grad[x] = g
            return
        total = self.grad_tensor(x)
        self._sums[x] = self._sums.get(x, 1) + 1
        self.emit(Node("grad_add", f"{x}/grad_add{self._sums[x]}", (self.grad[x], g), (total,)))
        self.grad[x] = total

    def masked(self, node: Node, dy: str) -> str:
        """dL/d(pre-clamp value): dy where the clamp passed the value, 0 where it cut it."""
        mask = self.masks.get(node.name)
        if mask is None:
            return dy
        dacc = self.tensor(f"{node.name}:dacc", self.tensors[node.outputs[0]].shape)
        self.emit(Node("apply_mask", f"{node.name}/apply_mask", (dy, mask), (dacc,)))
        return dacc

    def _rng_io(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        if self.opts.rounding != "stochastic":
            return (), ()
        self._uses_rng = True
        self._rng_count += 1
        new = self.tensor(f"{RNG}:{self._rng_count}", (1,), "int32")
        old, self.rng = self.rng, new
        return (old,), (new,)

    def _new_state(self, name: str) -> str:
        t = self.tensors[name]
        new = self.tensor(f"{name}:new", t.shape, t.dtype, t.quant)
        self.state.append((name, new))
        return new

    # --- updates ------------------------------------------------------------------------------------------------

    def bias_update(self, node: Node, dacc: str) -> None:
        lu = self.trained.get(node.name)
        if lu is None or not lu.bias:
            return
        b = node.inputs[2]
        if node.op == HEAD_OP:
            self.emit(Node("bias_update_f32", f"{node.name}/bias_update", (dacc, b, LR), (self._new_state(b),)))
            return
        s_x, s_w = self._scales(node)
        attrs = {"factor": update_factors(s_x, s_w, "bias", self.opts.qas), "rounding": self.opts.rounding}
        new = self._new_state(b)
        rin, rout = self._rng_io()
        self.emit(Node("bias_update", f"{node.name}/bias_update", (dacc, b, LR, *rin), (new, *rout), attrs))

    def weight_update(self, node: Node, dacc: str) -> None:
        lu = self.trained.get(node.name)
        if lu is None or not lu.weight:
            return
        w, saved = node.inputs[1], self.saved[node.name]
        attrs = {k: node.attrs[k] for k in ("stride", "pad", "multiplier") if k in node.attrs}
        attrs["channels"] = lu.channels
        if node.op == HEAD_OP:
            self.emit(Node("fully_connected_f32_weight_update", f"{node.name}/weight_update",
                           (saved, dacc, w, LR), (self._new_state(w),), attrs))
            return
        s_x, s_w = self._scales(node)
        attrs.update(factor=update_factors(s_x, s_w, "weight", self.opts.qas), rounding=self.opts.rounding)
        new = self._new_state(w)
        rin, rout = self._rng_io()
        self.emit(Node(f"{node.op}_weight_update", f"{node.name}/weight_update", (saved, dacc, w, LR, *rin),
                       (new, *rout), attrs))

    def _scales(self, node: Node) -> tuple[float, np.ndarray]:
        w = self.tensors[node.inputs[1]]
        o = w.shape[-1] if node.op == "depthwise_conv2d" else w.shape[0]
        return self.tensors[node.inputs[0]].quant.s, np.broadcast_to(np.asarray(w.quant.scale, np.float32), (o,))

    # --- forward ------------------------------------------------------------------------------------------------

    def _emit_forward(self) -> list[Node]:
        emitted = []
        for n in self.forward_nodes:
            lu = self.trained.get(n.name)
            if lu is not None and lu.bias and (len(n.inputs) < 3 or not n.inputs[2]):
                n = self._with_zero_bias(n)
            if lu is not None and lu.weight:
                self.saved[n.name] = self._save_input(n, lu)
            if self.depends.get(n.outputs[0]) and n.op in FORWARD_SAVES:
                n = FORWARD_SAVES[n.op](self, n)
            elif self.depends.get(n.outputs[0]) and needs_mask(n):
                y = self.tensors[n.outputs[0]]
                mask = self.tensor(f"{n.name}:mask", (mask_bytes(y.shape),), "uint8")
                self.masks[n.name] = mask
                n = Node(mask_op(n.op), n.name, n.inputs, (*n.outputs, mask), n.attrs)
            self.emit(n)
            emitted.append(n)
        return emitted

    def _save_input(self, node: Node, lu: LayerUpdate) -> str:
        x = self.tensors[node.inputs[0]]
        if lu.full_weight:
            return x.name  # the activation itself stays alive until the update
        if node.op in ("fully_connected", HEAD_OP):
            shape = (x.shape[0], len(lu.channels))
        else:
            shape = (*x.shape[:-1], len(lu.channels))
        saved = self.tensor(f"{node.name}:saved", shape, "int8", x.quant)
        self.emit(Node("gather_channels", f"{node.name}/save", (x.name,), (saved,), {"channels": lu.channels}))
        return saved

    def _with_zero_bias(self, node: Node) -> Node:
        """A trained bias the model omits (zero, as TFLite drops it) becomes an explicit int32 tensor."""
        s_x, s_w = self._scales(node)
        o = len(s_w)
        q = QParams((np.float64(s_x) * s_w.astype(np.float64)).astype(np.float32), np.zeros(o, np.int64), 0)
        name = self.tensor(f"{node.name}:bias", (o,), "int32", q)
        self.tensors[name] = Tensor(name, (o,), "int32", q, np.zeros(o, np.int32))
        return Node(node.op, node.name, (node.inputs[0], node.inputs[1], name), node.outputs, node.attrs)

    # --- whole graph --------------------------------------------------------------------------------------------

    def build(self) -> TrainingGraph:
        for t, dtype in ((LABEL, "int32"), (LR, "float32"), (LOSS, "float32")):
            self.tensors[t] = Tensor(t, (1,), dtype)
        forward = self._emit_forward()
        num_forward = len(self.nodes)
        dlogits = self.grad_tensor(self.logits)
        self.emit(Node("softmax_cross_entropy", LOSS, (self.logits, LABEL), (LOSS, dlogits)))
        self.grad[self.logits] = dlogits
        for n in reversed(forward):
            y = n.outputs[0]
            if not self.depends.get(y) or y not in self.grad:
                continue
            base = n.op[:-5] if n.name in self.masks else n.op
            rule = GRAD_RULES.get(base)
            if rule is None:
                raise TteError("no gradient rule for this op, and a trained layer lies below it", node=n.name,
                               op=base, hint="train only layers above it (e.g. --update last:N)")
            self.final_grads[y] = self.grad.pop(y)
            rule(self, Node(base, n.name, n.inputs, n.outputs[:1], n.attrs), self.final_grads[y])
        if self._uses_rng:
            bits = np.array([seed_state(self.opts.seed)], np.uint32).view(np.int32)
            self.tensors[RNG] = Tensor(RNG, (1,), "int32", None, bits)
            self.state.append((RNG, self.rng))
        if self.opts.fuse_blocks:
            self.nodes = fuse_blocks(self.nodes, self.tensors, num_forward, LR)
        return self._finish(num_forward)

    def _finish(self, num_forward: int) -> TrainingGraph:
        fwd = self.fwd
        inputs = (*fwd.inputs, IOSpec(LABEL, (1,), "NHWC", False), IOSpec(LR, (1,), "NHWC", True))
        outputs = (IOSpec(LOSS, (1,), "NHWC", True),
                   *(IOSpec(new, self.tensors[new].shape, "NHWC", False) for _, new in self.state))
        g = Graph(f"{fwd.name}:train", self.tensors, (), inputs, outputs).with_nodes(self.nodes)
        g.validate()
        return TrainingGraph(g, fwd, self.spec, self.opts, tuple(self.state), dict(self.saved), dict(self.masks),
                             dict(self.final_grads), self.logits, num_forward)


# --- gradient rules ---------------------------------------------------------------------------------------------

_INPUT_GRAD = {"conv2d": "conv2d_input_grad", "depthwise_conv2d": "depthwise_conv2d_input_grad",
               "fully_connected": "fully_connected_input_grad", HEAD_OP: "fully_connected_input_grad"}


@grad_rule("conv2d", "depthwise_conv2d", "fully_connected", HEAD_OP)
def _weight_layer_rule(b: _Builder, node: Node, dy: str) -> None:
    dacc = b.masked(node, dy)
    b.bias_update(node, dacc)
    x = node.inputs[0]
    if b.depends.get(x):
        op = _INPUT_GRAD[node.op]
        attrs = {k: node.attrs[k] for k in ("stride", "pad", "multiplier") if k in node.attrs}
        dx = b.grad_tensor(x)
        b.emit(Node(op, f"{node.name}/input_grad", (dacc, node.inputs[1]), (dx,), attrs))
        b.contribute(x, dx)
    b.weight_update(node, dacc)


@grad_rule("add", "requantize")
def _pass_through_rule(b: _Builder, node: Node, dy: str) -> None:
    """y = a + b (real values) or a rescaled copy: every input receives the masked gradient."""
    dacc = b.masked(node, dy)
    for x in node.inputs[:2]:
        if x:
            b.contribute(x, dacc)


def _simple(op: str, attr_names: tuple[str, ...], masked: bool) -> Rule:
    def rule(b: _Builder, node: Node, dy: str) -> None:
        x = node.inputs[0]
        if not b.depends.get(x):
            return
        g = b.masked(node, dy) if masked else dy
        dx = b.grad_tensor(x)
        attrs = {k: node.attrs[k] for k in attr_names}
        b.emit(Node(op, f"{node.name}/grad", (g,), (dx,), attrs))
        b.contribute(x, dx)

    return rule


GRAD_RULES["mean"] = _simple("mean_grad", ("axes",), True)
GRAD_RULES["avg_pool2d"] = _simple("avg_pool2d_grad", ("kernel", "stride", "pad"), True)
GRAD_RULES["pad"] = _simple("pad_grad", ("pads",), False)
GRAD_RULES["reshape"] = _simple("reshape", (), False)


@grad_rule("transpose")
def _transpose_rule(b: _Builder, node: Node, dy: str) -> None:
    x = node.inputs[0]
    if b.depends.get(x):
        dx = b.grad_tensor(x)
        inverse = tuple(int(i) for i in np.argsort(node.attrs["perm"]))
        b.emit(Node("transpose", f"{node.name}/grad", (dy,), (dx,), {"perm": inverse}))
        b.contribute(x, dx)
