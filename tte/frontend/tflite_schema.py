"""What the TFLite reader (`tte.frontend.tflite`) and writer (`tte.testing.tflite_writer`) share.

The flatbuffer schema comes from the tflite-micro package (generated Python, no TensorFlow needed). This module
holds the enum tables and TFLite's SAME padding rule, so that the two directions cannot drift apart.
"""

from __future__ import annotations

from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

__all__ = ["fb", "OP_NAMES", "ACTIVATIONS", "ACTIVATION_CODES", "TYPE_NAMES", "same_pads"]

# Builtin operator code -> name ("CONV_2D"), for messages and dispatch.
OP_NAMES: dict[int, str] = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}

# Fused activation code -> the name tte.quant.activation_range takes (TANH and SIGN_BIT are not clamps).
ACTIVATIONS: dict[int, str] = {
    fb.ActivationFunctionType.NONE: "none",
    fb.ActivationFunctionType.RELU: "relu",
    fb.ActivationFunctionType.RELU_N1_TO_1: "relu_n1_to_1",
    fb.ActivationFunctionType.RELU6: "relu6",
}
ACTIVATION_CODES: dict[str, int] = {v: k for k, v in ACTIVATIONS.items()}

TYPE_NAMES: dict[int, str] = {v: k for k, v in vars(fb.TensorType).items() if not k.startswith("_")}


def same_pads(size: int, k: int, stride: int, out: int) -> tuple[int, int]:
    """TFLite SAME padding for one spatial axis: total = max((out-1)*stride + k - in, 0), before = total // 2."""
    total = max((out - 1) * stride + k - size, 0)
    return total // 2, total - total // 2
