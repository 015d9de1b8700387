"""`tte run --emulator`: run a compiled model's firmware in QEMU on a data set and measure it.

The samples are quantized on the host exactly as `tte.host` does, packed into one file that the firmware reads
through semihosting (targets/harness/tte_harness.c) straight into the model's input buffers; the firmware writes
the int8 outputs back to a file and prints its measurements (SysTick ticks around each model call, stack
high-water mark). `train_emulator` does the same for a model with a train step (tte/targets/training.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tte.errors import TteError
from tte.host import IOInfo
from tte.host import read_meta as read_model_meta
from tte.targets.boards import QEMU_INSTRUCTIONS_PER_TICK
from tte.targets.build import BuildResult, build
from tte.targets.project import configure_harness, read_meta
from tte.targets.qemu import run_qemu
from tte.targets.training import DEFAULT_LR, TrainRun, check_labels, run_training

_RESULT = re.compile(r"^TTE_RESULT (.*)$", re.MULTILINE)
SECONDS_PER_SAMPLE = 5.0  # generous QEMU time per model call, on top of the base timeout


@dataclass(frozen=True)
class EmulatorRun:
    """The outputs of every sample (one int8 array per model output, samples first) and the summary."""

    outputs: tuple[np.ndarray, ...]
    summary: dict[str, Any]


def load_samples(path: str | os.PathLike, inputs: tuple[IOInfo, ...]) -> tuple[list[np.ndarray], np.ndarray | None]:
    """The inputs (one array per model input, samples first, as in the file) and labels of an .npz file.

    Keys: `x` (one model input) or `x0`, `x1`, ... (several), optional `y` (integer labels). Each sample is
    float data in the model's layout or int8 NHWC, with the batch axis being the sample axis.
    """
    path = Path(path)
    if not path.is_file():
        raise TteError(f"{path}: no such data file", hint="give an .npz with arrays x (samples) and y (labels)")
    try:
        data = dict(np.load(path, allow_pickle=False))
    except Exception as e:  # noqa: BLE001 - any unreadable file is the user's
        raise TteError(f"{path}: not a readable .npz file ({e})") from None
    keys = ["x"] if len(inputs) == 1 else [f"x{i}" for i in range(len(inputs))]
    if len(inputs) == 1 and "x" not in data and len([k for k in data if k != "y"]) == 1:
        keys = [next(k for k in data if k != "y")]
    missing = [k for k in keys if k not in data]
    if missing:
        raise TteError(f"{path}: no array {', '.join(missing)} (it has {', '.join(sorted(data)) or 'none'})",
                       hint=f"store the samples as {', '.join(keys)} and the labels as y")
    xs = [data[k] for k in keys]
    if len({len(x) for x in xs}) != 1:
        raise TteError(f"{path}: the input arrays have different numbers of samples")
    y = data.get("y")
    if y is not None and len(y) != len(xs[0]):
        raise TteError(f"{path}: {len(y)} labels for {len(xs[0])} samples")
    return xs, y


def pack_samples(xs: list[np.ndarray], inputs: tuple[IOInfo, ...], count: int) -> bytes:
    """The first `count` samples as the firmware reads them: every input's int8 NHWC bytes, in input order."""
    chunks = []
    for i in range(count):
        for x, io in zip(xs, inputs, strict=True):
            chunks.append(io.to_int8(x[i:i + 1]).tobytes())
    return b"".join(chunks)


def parse_result(text: str) -> dict[str, int]:
    """The firmware's TTE_RESULT line as a dict of integers."""
    lines = _RESULT.findall(text)
    if not lines:
        raise RuntimeError(f"the firmware printed no TTE_RESULT line:\n{text[-2000:]}")
    return {k: int(v) for k, v in (item.split("=", 1) for item in lines[-1].split())}


def run_samples(out: Path, fw: BuildResult, packed: bytes, count: int, timeout: float) -> tuple[bytes, dict]:
    """Run the firmware on `count` packed samples; its raw output bytes and its TTE_RESULT figures."""
    with tempfile.TemporaryDirectory(prefix="tte-run-") as tmp:
        (Path(tmp) / "samples.bin").write_bytes(packed)
        run = run_qemu(fw.elf, timeout, ["infer", "samples.bin", "outputs.bin"], board=fw.board, cwd=tmp)
        if not run.ok:
            raise TteError(f"{out}: {run.message}", hint="see the firmware output above" if run.output else None)
        result = parse_result(run.output)
        raw = (Path(tmp) / "outputs.bin").read_bytes()
    if result["samples"] != count:
        raise RuntimeError(f"the firmware ran {result['samples']} of {count} samples")
    result["qemu_seconds"] = run.seconds
    return raw, result


def split_outputs(raw: bytes, outputs: tuple[IOInfo, ...], count: int,
                  dtypes: Sequence[str] | None = None) -> tuple[np.ndarray, ...]:
    """The firmware's output file as one array per output (int8, or float32 for an fp32 head), samples first."""
    kinds = [np.dtype("<f4") if d == "float32" else np.dtype(np.int8) for d in dtypes or ["int8"] * len(outputs)]
    per_sample = sum(io.size * k.itemsize for io, k in zip(outputs, kinds, strict=True))
    flat = np.frombuffer(raw, dtype=np.uint8).reshape(count, per_sample)
    arrays, offset = [], 0
    for io, kind in zip(outputs, kinds, strict=True):
        nbytes = io.size * kind.itemsize
        part = np.ascontiguousarray(flat[:, offset:offset + nbytes]).view(kind)
        arrays.append(part.reshape(count, *io.shape[1:]).copy())
        offset += nbytes
    return tuple(arrays)


def run_emulator(out: str | os.PathLike, data: str | os.PathLike, steps: int | None = None,
                 timeout: float | None = None, eval_data: str | os.PathLike | None = None) -> EmulatorRun:
    """Build the inference firmware in `out`, run the first `steps` samples of `data` (all by default) in QEMU.

    (`eval_data`, when given, is run instead of `data`.) Returns the int8 outputs and a summary with the
    measured figures; `out/report.json` gets them too.
    """
    out, model, inputs = _model(out)
    outputs = tuple(IOInfo.from_json(d) for d in model["outputs"])
    xs, labels = load_samples(eval_data or data, inputs)
    count = len(xs[0]) if steps is None else min(int(steps), len(xs[0]))
    if count <= 0:
        raise TteError("no samples to run", hint="give --steps N with N >= 1 and a non-empty data file")
    configure_harness(out, params_dump=False)
    fw = build(out)
    packed = pack_samples(xs, inputs, count)
    raw, result = run_samples(out, fw, packed, count, timeout or 60.0 + SECONDS_PER_SAMPLE * count)
    outs = split_outputs(raw, outputs, count, [d.get("dtype", "int8") for d in model["outputs"]])
    summary = make_summary(fw, model["name"], result, raw, outs, labels[:count] if labels is not None else None)
    update_report(out, summary)
    return EmulatorRun(outs, summary)


def train_emulator(out: str | os.PathLike, data: str | os.PathLike, steps: int | None = None,
                   eval_data: str | os.PathLike | None = None, lr: float | Sequence[float] = DEFAULT_LR,
                   seed: int | None = None, timeout: float | None = None, params_dump: bool = True,
                   check_budget: bool = True) -> TrainRun:
    """Build the training firmware in `out` and train it in QEMU: evaluate `eval_data`, run `steps` train steps
    on the samples of `data` in file order (wrapping around; default: one pass), evaluate again, read back the
    parameters.

    Without `eval_data` the accuracy is measured on `data` (as `tte simulate` does). `lr`: one learning rate, or
    one per step. `seed`: passed to `<name>_seed` before the first step (None: the model's own initial state).
    `params_dump=False` saves the firmware the SRAM of a parameter copy (then params_sha256 is None).
    `check_budget=False` runs a firmware over the board's SRAM budget (to measure it). The summary also goes
    into `out/report.json`.
    """
    out, model, inputs = _model(out)
    if not configure_harness(out, params_dump=params_dump):
        raise TteError(f"{out}: the model was compiled without a train step",
                       hint="compile with --update (and --head) to train it; `tte run` without --lr/--seed runs "
                            "inference")
    classes = int(np.prod(model["outputs"][0]["shape"]))
    train = load_samples(data, inputs)
    check_labels(data, train[1], classes)
    steps = len(train[0][0]) if steps is None else int(steps)
    evaluation = train  # as `tte simulate`: accuracy on the train samples when there is no eval set
    if eval_data is not None:
        evaluation = load_samples(eval_data, inputs)
        check_labels(eval_data, evaluation[1], classes)
    fw = build(out, check_budget=check_budget)
    out_bytes = sum(int(np.prod(d["shape"])) * (4 if d.get("dtype") == "float32" else 1) for d in model["outputs"])
    run = run_training(out, fw, model["name"], inputs, train, evaluation, steps, lr, seed, timeout,
                       params_dump, out_bytes)
    update_report(out, run.summary, TRAIN_REPORT_KEYS)
    return run


def _model(out: str | os.PathLike) -> tuple[Path, dict, tuple[IOInfo, ...]]:
    out = Path(out)
    meta = read_meta(out)
    if meta.get("program") != "infer":
        raise TteError(f"{out} holds no compiled model firmware",
                       hint="compile with --target cortex-m4, cortex-m7 or stm32f746")
    model = read_model_meta(out)
    return out, model, tuple(IOInfo.from_json(d) for d in model["inputs"])


def make_summary(fw: BuildResult, name: str, result: dict, raw: bytes, outs: tuple[np.ndarray, ...],
                 labels: np.ndarray | None) -> dict[str, Any]:
    """The measured figures of a run, as `tte run` prints them and report.json keeps them."""
    n = result["samples"]
    summary: dict[str, Any] = {
        "target": fw.board.name,
        "model": name,
        "samples": n,
        "instructions_per_inference": round(result["ticks_sum"] * QEMU_INSTRUCTIONS_PER_TICK / n),
        "instructions_per_inference_min": result["ticks_min"] * QEMU_INSTRUCTIONS_PER_TICK,
        "instructions_per_inference_max": result["ticks_max"] * QEMU_INSTRUCTIONS_PER_TICK,
        "instruction_count_resolution": QEMU_INSTRUCTIONS_PER_TICK,
        "stack_peak_bytes": result["stack_peak"],
        "stack_size_bytes": result["stack_size"],
        "elf_text": fw.sizes.text,
        "elf_data": fw.sizes.data,
        "elf_bss": fw.sizes.bss,
        "sram_measured_bytes": fw.sizes.data + fw.sizes.bss + result["stack_peak"],
        "firmware_sram_bytes": fw.sizes.sram,
        "firmware_flash_bytes": fw.sizes.flash,
        "outputs_sha256": hashlib.sha256(raw).hexdigest(),
        "qemu_seconds": round(result["qemu_seconds"], 3),
    }
    if labels is not None:
        predictions = outs[0].reshape(n, -1).argmax(axis=1)
        summary["accuracy"] = float(np.mean(predictions == np.asarray(labels).reshape(-1)))
    return summary


REPORT_KEYS = ("elf_text", "elf_data", "elf_bss", "stack_peak_bytes", "instructions_per_inference",
               "sram_measured_bytes")
TRAIN_REPORT_KEYS = (*REPORT_KEYS, "instructions_per_train_step", "instructions_per_train_step_first",
                     "params_sha256")


def update_report(out: Path, summary: dict[str, Any], keys: Sequence[str] = REPORT_KEYS) -> None:
    """Add the measured figures to out/report.json (when it exists)."""
    path = out / "report.json"
    if not path.is_file():
        return
    report = json.loads(path.read_text())
    report.update({k: summary[k] for k in keys})
    report["measured_on"] = f"qemu {summary['target']}"
    path.write_text(json.dumps(report, indent=1) + "\n")
