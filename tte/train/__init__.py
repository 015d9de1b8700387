"""On-device training semantics (DESIGN.md sections 4-6): update spec, train step graph, numpy reference.

    from tte.train import Trainer, TrainOptions
    trainer = Trainer(graph, "mobiletl:2", TrainOptions(head="new:5", rounding="stochastic"))

Importing this package registers the training ops (mask variants, gradients, fused updates) in `tte.ops`.
"""

import tte.train.op_grads  # noqa: F401  (registers max_pool2d, lut, mul, sub, concat and slice gradients)
from tte.train.autodiff import GRAD_RULES, TrainingGraph, TrainOptions, build_training_graph, grad_rule
from tte.train.head import apply_head
from tte.train.memory import format_summary, memory_summary
from tte.train.reference import StepTrace, Trainer, inference_graph, with_state
from tte.train.spec import HeadSpec, LayerUpdate, UpdateSpec, parse_head, parse_update

__all__ = [
    "GRAD_RULES", "HeadSpec", "LayerUpdate", "StepTrace", "Trainer", "TrainOptions", "TrainingGraph", "UpdateSpec",
    "apply_head", "build_training_graph", "format_summary", "grad_rule", "inference_graph", "memory_summary",
    "parse_head", "parse_update", "with_state",
]
