"""`tte run --emulator` for a model compiled with a train step: train it in QEMU and measure it.

The firmware (targets/harness/tte_harness.c, `train` command) evaluates the eval samples, runs the train steps
on the train samples in file order (one step per sample, wrapping around), evaluates again and sends the losses
and the trained parameters back through semihosting files. The samples are quantized on the host exactly as
`tte.host` does; the summary has the keys of `tte simulate` (losses, acc_before, acc_after, params_sha256,
steps), so the two can be compared bit for bit, plus what only the device measures (instructions, stack, ELF).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tte.errors import TteError
from tte.host import IOInfo
from tte.targets.boards import QEMU_INSTRUCTIONS_PER_TICK
from tte.targets.build import BuildResult

DEFAULT_LR = 0.05  # keep equal to `tte simulate`'s default
SECONDS_PER_CALL = 5.0  # generous QEMU time per train step or inference, on top of the base timeout
BASE_TIMEOUT = 60.0
FILES = ("train.bin", "eval.bin", "lrs.bin", "losses.bin", "params.bin")


@dataclass(frozen=True)
class TrainRun:
    """The losses of every step, the trained parameters (None when not dumped) and the summary."""

    losses: np.ndarray
    params: bytes | None
    summary: dict[str, Any]


def pack_records(xs: Sequence[np.ndarray], labels: np.ndarray | None, inputs: tuple[IOInfo, ...],
                 what: str) -> bytes:
    """Every sample as the firmware reads it: each input's int8 NHWC bytes, then the label as int32 LE."""
    if labels is None:
        raise TteError(f"the {what} data has no labels", hint="store the integer labels as y in the .npz file")
    labels = np.asarray(labels).reshape(-1)
    if labels.dtype.kind not in "iu" and not np.all(labels == np.round(labels)):
        raise TteError(f"the {what} labels must be integers, got {labels.dtype}")
    chunks = []
    for i in range(len(labels)):
        for x, io in zip(xs, inputs, strict=True):
            chunks.append(io.to_int8(x[i:i + 1]).tobytes())
        chunks.append(np.array([labels[i]], "<i4").tobytes())
    return b"".join(chunks)


def lr_bytes(lr: float | Sequence[float], steps: int) -> bytes:
    """The learning-rate file: one float32 for every step, or a single one."""
    rates = np.asarray(lr, np.float32).reshape(-1)
    if len(rates) not in (1, steps):
        raise TteError(f"{len(rates)} learning rates for {steps} steps", hint="give one, or one per step")
    if not np.all(np.isfinite(rates)):
        raise TteError("the learning rate must be a finite number")
    return rates.astype("<f4").tobytes()


def firmware_args(steps: int, has_eval: bool, seed: int | None, dump: bool) -> list[str]:
    """The firmware's command line (see tte_harness.c): train TRAIN EVAL STEPS LRS SEED LOSSES PARAMS."""
    if seed is not None and not 0 <= int(seed) < 2**32:
        raise TteError(f"seed {seed} must be in 0 .. 2^32-1")
    return ["train", "train.bin", "eval.bin" if has_eval else "-", str(int(steps)), "lrs.bin",
            "-" if seed is None else str(int(seed)), "losses.bin", "params.bin" if dump else "-"]


def default_timeout(steps: int, eval_samples: int) -> float:
    return BASE_TIMEOUT + SECONDS_PER_CALL * (steps + 2 * max(1, eval_samples))


def run_firmware(fw: BuildResult, train: bytes, evaluation: bytes | None, lrs: bytes, args: list[str],
                 timeout: float) -> tuple[dict[str, int], bytes, bytes | None, float]:
    """Run the train command in QEMU; its TTE_RESULT figures, the losses, the parameters and the run time."""
    from tte.targets.harness import parse_result
    from tte.targets.qemu import run_qemu

    with tempfile.TemporaryDirectory(prefix="tte-train-") as tmp:
        folder = Path(tmp)
        (folder / "train.bin").write_bytes(train)
        (folder / "lrs.bin").write_bytes(lrs)
        if evaluation is not None:
            (folder / "eval.bin").write_bytes(evaluation)
        run = run_qemu(fw.elf, timeout, args, board=fw.board, cwd=folder)
        if not run.ok:
            tail = "\n".join(run.output.strip().splitlines()[-3:])
            raise TteError(f"training in QEMU failed: {run.message}" + (f" (firmware said: {tail})" if tail else ""),
                           hint="a stack overflow needs a larger STACK_SIZE in sources.mk" if run.status == 102
                           else None)
        result = parse_result(run.output)
        losses = (folder / "losses.bin").read_bytes()
        params = (folder / "params.bin").read_bytes() if (folder / "params.bin").exists() else None
    return result, losses, params, run.seconds


def make_summary(fw: BuildResult, name: str, result: dict[str, int], losses: np.ndarray, params: bytes | None,
                 lr: np.ndarray, seconds: float, harness_bytes: int) -> dict[str, Any]:
    """The figures `tte run` prints for a training run (the `tte simulate` keys first)."""
    ipt = QEMU_INSTRUCTIONS_PER_TICK
    steps, n_eval = result["steps"], result["eval_records"]
    stack = max(result["train_stack_peak"], result["infer_stack_peak"])
    return {
        "losses": [float(v) for v in losses],
        "acc_before": result["correct_before"] / n_eval if n_eval else None,
        "acc_after": result["correct_after"] / n_eval if n_eval else None,
        "params_sha256": hashlib.sha256(params).hexdigest() if params is not None else None,
        "steps": steps,
        "target": fw.board.name,
        "model": name,
        "train_samples": result["train_records"],
        "eval_samples": n_eval,
        "lr": float(lr[0]) if len(lr) == 1 else [float(v) for v in lr],
        "loss_first": float(np.mean(losses[:10], dtype=np.float64)) if len(losses) else None,
        "loss_last": float(np.mean(losses[-10:], dtype=np.float64)) if len(losses) else None,
        "instructions_per_train_step": round(result["train_ticks_sum"] * ipt / steps) if steps else None,
        "instructions_per_train_step_first": result["train_ticks_first"] * ipt if steps else None,
        "instructions_per_train_step_min": result["train_ticks_min"] * ipt if steps else None,
        "instructions_per_train_step_max": result["train_ticks_max"] * ipt if steps else None,
        "instructions_per_inference": round(result["infer_ticks_sum"] * ipt / result["infer_calls"]),
        "instruction_count_resolution": ipt,
        "stack_peak_bytes": stack,
        "stack_peak_train_bytes": result["train_stack_peak"],
        "stack_peak_inference_bytes": result["infer_stack_peak"],
        "stack_size_bytes": result["stack_size"],
        "elf_text": fw.sizes.text,
        "elf_data": fw.sizes.data,
        "elf_bss": fw.sizes.bss,
        "harness_bytes": harness_bytes,
        # What the firmware really uses: static data and the measured stack (not the reserved STACK_SIZE).
        "sram_measured_bytes": fw.sizes.data + fw.sizes.bss + stack,
        "firmware_sram_bytes": fw.sizes.sram,
        "firmware_flash_bytes": fw.sizes.flash,
        "params_bytes": result["params_bytes"],
        "qemu_seconds": round(seconds, 3),
    }


def run_training(out: Path, fw: BuildResult, name: str, inputs: tuple[IOInfo, ...], train: tuple[list, Any],
                 evaluation: tuple[list, Any] | None, steps: int, lr: float | Sequence[float], seed: int | None,
                 timeout: float | None, dump: bool, out_bytes: int) -> TrainRun:
    """Train the firmware built in `out` (`fw`) on the samples `train` = (inputs, labels) in QEMU."""
    if steps < 0:
        raise TteError(f"--steps {steps} must be >= 0")
    if len(train[0][0]) == 0:
        raise TteError("the train data has no samples")
    train_bytes = pack_records(train[0], train[1], inputs, "train")
    eval_bytes = pack_records(evaluation[0], evaluation[1], inputs, "eval") if evaluation is not None else None
    lrs = lr_bytes(lr, steps)
    n_eval = len(evaluation[1]) if evaluation is not None else 0
    args = firmware_args(steps, evaluation is not None, seed, dump)
    result, raw_losses, params, seconds = run_firmware(fw, train_bytes, eval_bytes, lrs, args,
                                                       timeout or default_timeout(steps, n_eval))
    if result["steps"] != steps:
        raise RuntimeError(f"the firmware ran {result['steps']} of {steps} train steps")
    losses = np.frombuffer(raw_losses, "<f4").copy()
    rates = np.frombuffer(lrs, "<f4")
    harness_bytes = out_bytes + (result["params_bytes"] if dump else 0)  # outputs buffer, parameters dump
    summary = make_summary(fw, name, result, losses, params, rates, seconds, harness_bytes)
    return TrainRun(losses, params, summary)


def check_labels(path: str | os.PathLike, labels: np.ndarray | None, classes: int) -> None:
    """Labels must index the first output."""
    if labels is None:
        return
    labels = np.asarray(labels).reshape(-1)
    if len(labels) and (labels.min() < 0 or labels.max() >= classes):
        raise TteError(f"{path}: labels must lie in 0..{classes - 1}, got {labels.min()}..{labels.max()}",
                       hint="labels index the classifier outputs (see --head new:N)")
