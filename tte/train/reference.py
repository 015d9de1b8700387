"""The training reference: run the train step graph in numpy with the parameters as mutable state.

    trainer = Trainer(graph, "sparse:scheme.json", TrainOptions(head="fp32"))
    loss = trainer.train_step(x_int8, label, lr=0.05)
    acc = trainer.accuracy(xs_int8, ys)

Every step runs `tte.reference.run` on the train step graph (`build_training_graph`) with the current parameter
values substituted for the state constants; the updated values come back as graph outputs. The arithmetic is
the specification the generated C must reproduce bit for bit (see tte/train/fp32.py for the float rules).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

import numpy as np

from tte import reference
from tte.errors import TteError
from tte.ir import Graph, IOSpec, Node, Tensor
from tte.train.autodiff import LABEL, LOSS, LR, TrainingGraph, TrainOptions, build_training_graph
from tte.train.block_grad import BLOCK_GRAD, chain_gradients
from tte.train.head import apply_head
from tte.train.spec import UpdateSpec, parse_head, parse_update
from tte.train.update_ops import real_gradient

_UPDATE_OPS = ("bias_update", "bias_update_f32", "conv2d_weight_update", "depthwise_conv2d_weight_update",
               "fully_connected_weight_update", "fully_connected_f32_weight_update")


def with_state(graph: Graph, state: Mapping[str, np.ndarray]) -> Graph:
    """`graph` with the current values of its state constants."""
    tensors = dict(graph.tensors)
    for name, value in state.items():
        t = tensors.get(name)
        if t is not None:
            tensors[name] = Tensor(t.name, t.shape, t.dtype, t.quant, value)
    return replace(graph, tensors=tensors)


def inference_graph(tg: TrainingGraph) -> Graph:
    """The forward part of the train step as a plain inference graph (masks and saved copies dropped).

    Unlike `tg.forward` it includes biases the train step added (a trained bias the model had omitted).
    """
    nodes = []
    for n in tg.graph.nodes[:tg.num_forward]:
        if n.op == "gather_channels":
            continue
        if n.name in tg.masks:
            n = Node(n.op[:-5], n.name, n.inputs, n.outputs[:1], n.attrs)
        nodes.append(n)
    out = tg.forward.outputs[0]
    if out.tensor != tg.logits:
        t = tg.graph[tg.logits]
        out = IOSpec(tg.logits, t.shape, out.layout, t.dtype == "float32")
    g = replace(tg.graph, name=tg.forward.name, inputs=tg.forward.inputs, outputs=(out,))
    return g.with_nodes(nodes)


@dataclass
class StepTrace:
    """One train step's loss, every tensor it computed, and the real-valued gradient of each updated parameter
    (weights: of the trained input channels only, in the layout the update writes)."""

    loss: float
    env: dict[str, np.ndarray]
    grads: dict[str, np.ndarray]


class Trainer:
    """Train an int8 graph in numpy, one labelled sample per step (batch 1)."""

    def __init__(self, graph: Graph, spec: str | UpdateSpec = "last:1", options: TrainOptions | None = None):
        self.options = options or TrainOptions()
        forward = apply_head(graph, parse_head(self.options.head))
        self.spec = parse_update(spec, forward)
        self.program = build_training_graph(forward, self.spec, self.options)
        self.inference = inference_graph(self.program)
        self._state = {name: np.array(self.program.graph[name].data) for name in self.program.state_names}
        self._input = forward.inputs[0].tensor
        self.num_classes = int(np.prod(self.program.graph[self.program.logits].shape))

    # --- stepping -----------------------------------------------------------------------------------------------

    def _feeds(self, x: np.ndarray, label: int, lr: float) -> dict[str, np.ndarray]:
        if not 0 <= int(label) < self.num_classes:
            raise TteError(f"label {label} is outside 0..{self.num_classes - 1}",
                           hint="labels must index the classifier outputs (see --head new:N)")
        return {self._input: self._x(x), LABEL: np.array([label], np.int32), LR: np.array([lr], np.float32)}

    def _x(self, x: np.ndarray) -> np.ndarray:
        t = self.program.graph[self._input]
        x = np.asarray(x)
        if x.dtype != np.int8 or x.size != t.size:
            raise TteError(f"input must be int8 with {t.size} values (shape {list(t.shape)}), "
                           f"got {x.dtype}{list(x.shape)}", hint="quantize the data with the model's input scale")
        return x.reshape(t.shape)

    def _run(self, x: np.ndarray, label: int, lr: float) -> dict[str, np.ndarray]:
        view = with_state(self.program.graph, self._state)
        return reference.run(view, self._feeds(x, label, lr), keep=True)

    def train_step(self, x: np.ndarray, label: int, lr: float) -> float:
        """One SGD step on one sample; returns the loss before the update."""
        env = self._run(x, label, lr)
        for name, new in self.program.state:
            self._state[name] = env[new]
        return float(env[LOSS][0])

    def trace_step(self, x: np.ndarray, label: int) -> StepTrace:
        """A step with lr = 0 (parameters unchanged) that keeps every tensor and the parameter gradients."""
        env = self._run(x, label, 0.0)
        view = with_state(self.program.graph, self._state)
        grads = {}
        for node in self.program.backward_nodes():
            if node.op in _UPDATE_OPS:
                param = node.inputs[1] if node.op.startswith("bias") else node.inputs[2]
                grads[param] = real_gradient(node, view, [env[t] for t in node.inputs])
            elif node.op == BLOCK_GRAD:  # a fused block backward: its chain's updates
                grads.update(chain_gradients(node, view, [env[t] if t else None for t in node.inputs]))
        return StepTrace(float(env[LOSS][0]), env, grads)

    # --- inference ----------------------------------------------------------------------------------------------

    def infer(self, x: np.ndarray) -> np.ndarray:
        """The float32 logits (dequantized for an int8 classifier)."""
        return self._infer_many([x])[0]

    def _infer_many(self, xs: Iterable[np.ndarray]) -> list[np.ndarray]:
        view = with_state(self.inference, self._state)
        out = view.outputs[0].tensor
        t = view[out]
        res = []
        for x in xs:
            y = reference.run(view, {self._input: self._x(x)})[out].reshape(-1)
            res.append(y.astype(np.float32) if t.dtype == "float32" else
                       (y.astype(np.float32) - np.float32(t.quant.zp)) * np.float32(t.quant.s))
        return res

    def accuracy(self, xs: np.ndarray, ys: np.ndarray) -> float:
        """Top-1 accuracy over int8 samples xs (first axis: samples) and integer labels ys."""
        logits = self._infer_many(list(xs))
        hits = sum(int(np.argmax(z)) == int(y) for z, y in zip(logits, ys, strict=True))
        return hits / max(1, len(logits))

    # --- parameters ---------------------------------------------------------------------------------------------

    def params(self) -> dict[str, np.ndarray]:
        """Copies of the trainable state (parameters and the RNG state) by tensor name."""
        return {k: v.copy() for k, v in self._state.items()}

    def set_params(self, params: Mapping[str, np.ndarray]) -> None:
        for name, value in params.items():
            if name not in self._state:
                raise TteError(f"'{name}' is not a trainable parameter of this train step",
                               hint="use names from Trainer.params()")
            old = self._state[name]
            value = np.asarray(value)
            if value.shape != old.shape:
                raise TteError(f"parameter '{name}': shape {list(value.shape)} != {list(old.shape)}")
            self._state[name] = value.astype(old.dtype)
