"""`make demo`: teach the bundled int8 model five new digits on a Cortex-M7 with 256 KB of SRAM.

The model (models/demo_mnist_int8.onnx, an MCUNet-style CNN) knows the digits 0-4. The demo does what a user
does to make it learn 5-9 on the device:
1. writes the data: a few hundred labelled digits 5-9 to train on, and disjoint held-out digits to measure;
2. `tte compile models/demo_mnist_int8.onnx --target cortex-m7 --update sparse:models/demo_update.yaml
   --head new:5 -o build/demo/out` (a fresh 5-class head and a sparse update of the top blocks);
3. trains in the host simulator (the generated C, built for the host);
4. trains the cross-compiled firmware in QEMU (Cortex-M7), on the same samples with the same learning rates,
   and checks that the trained parameters are bit-identical to the host's;
5. writes the memory report and its timeline PNG (`tte report`).
The last line printed is one JSON object with the figures (acc_before, acc_after, acc_after_host, peak SRAM,
flash, instructions per train step, ...).

Why a fresh 5-class head (labels 5-9 -> 0-4) rather than `new:10` over all digits: the new head starts at
chance (20%), so every point of accuracy after training was learned on the device, for digits the pretrained
features never saw; a 10-class head would also have to relearn 0-4 from nothing, which blurs what the update did.
Training is batch 1 in file order with the learning rate cosine-decayed per step (with a constant rate,
batch-1 SGD keeps jumping around: 3-4 points lower at the end in a sweep of the fp32 twin). `tte simulate`
takes one rate, so the host stage drives the same host build through `tte.host` with the per-step rates it
also gives the firmware.

    python -m tte.demo [--epochs 3] [--lr 0.05] [--no-emulator] [--folder build/demo]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tte import data as demo_data
from tte.errors import TteError

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "demo_mnist_int8.onnx"
SCHEME = ROOT / "models" / "demo_update.yaml"
HEAD = "new:5"  # digits 5-9 as five new classes
TARGET = "cortex-m7"
SRAM_BUDGET, FLASH_BUDGET = 256 * 1024, 1024 * 1024


@dataclass(frozen=True)
class Config:
    """Where the demo writes, how it trains (epochs over the train set, initial learning rate), the data sizes."""

    folder: Path = Path("build/demo")
    epochs: int = 3
    lr: float = 0.05
    train_per_class: int = 100
    test_per_class: int = 200
    emulator: bool = True

    @property
    def out(self) -> Path:
        return self.folder / "out"


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _kb(n: int) -> str:
    return f"{n:,} B ({n / 1024:.1f} KB)"


# --- stages -----------------------------------------------------------------------------------------------------


def prepare_data(cfg: Config) -> tuple[Path, Path, demo_data.Split, demo_data.Split]:
    """Write train.npz and test.npz (digits 5-9 relabelled 0-4, disjoint) into the demo folder."""
    train, test = demo_data.new_task_split(cfg.train_per_class, cfg.test_per_class)
    train_path = demo_data.write_npz(cfg.folder / "train.npz", train)
    test_path = demo_data.write_npz(cfg.folder / "test.npz", test)
    print(f"[1/5] data: {len(train)} labelled digits 5-9 to learn from ({cfg.train_per_class} per digit) -> "
          f"{_rel(train_path)}; {len(test)} held-out digits -> {_rel(test_path)}")
    return train_path, test_path, train, test


def learning_rates(cfg: Config, steps: int) -> list[float]:
    """One rate per train step: cosine decay from cfg.lr, the same list for the host and the emulator."""
    return [demo_data.cosine_lr(cfg.lr, k, steps) for k in range(steps)]


def compile_stage(cfg: Config) -> dict[str, Any]:
    """`tte compile ... --target cortex-m7 --update sparse:... --head new:5 -o OUT`; returns report.json."""
    from tte.compile import TrainConfig, compile_model

    update = f"sparse:{_rel(SCHEME)}"
    print(f"[2/5] tte compile {_rel(MODEL)} --target {TARGET} --update {update} --head {HEAD} -o {_rel(cfg.out)}")
    t0 = time.perf_counter()
    rep = compile_model(MODEL, cfg.out, target=TARGET, train=TrainConfig(update, HEAD))
    print(f"      {time.perf_counter() - t0:.1f} s: the train step updates {rep['trained_params']:,} parameters "
          f"({rep['trainable_param_bytes']:,} B in SRAM); peak SRAM {_kb(rep['peak_sram_bytes'])} of the "
          f"{SRAM_BUDGET // 1024} KB budget, flash {_kb(rep['flash_bytes'])} of {FLASH_BUDGET // 1024 // 1024} MB")
    return rep


def host_stage(cfg: Config, train_path: Path, test_path: Path, lrs: list[float]) -> dict[str, Any]:
    """Train the host build of the generated C (what `tte simulate` runs), samples in file order, one learning
    rate per step; held-out accuracy before and after, and the hash of the trained parameters."""
    from tte import host
    from tte.simulate import accuracy, load_data

    t0 = time.perf_counter()
    model = host.load(cfg.out, fresh=True)
    x, y = load_data(train_path)
    ex, ey = load_data(test_path)
    before = accuracy(model, ex, ey)
    losses = [model.train_step(x[k % len(y):k % len(y) + 1], int(y[k % len(y)]), lr) for k, lr in enumerate(lrs)]
    res = {"acc_before": before, "acc_after": accuracy(model, ex, ey), "params_sha256": model.params_sha256(),
           "losses": losses}
    print(f"[3/5] host simulator (the generated C via cffi): {len(lrs)} train steps ({cfg.epochs} epochs, lr "
          f"{cfg.lr} cosine-decayed), loss {_mean(losses[:50]):.3f} -> {_mean(losses[-50:]):.3f}, held-out "
          f"accuracy {before:.1%} -> {res['acc_after']:.1%} ({time.perf_counter() - t0:.1f} s)")
    return res


def _mean(values: list[float]) -> float:
    return sum(values) / max(1, len(values))


def emulator_stage(cfg: Config, train_path: Path, test_path: Path, lrs: list[float],
                   host: dict[str, Any]) -> dict[str, Any]:
    """Train the Cortex-M7 firmware in QEMU on the same samples with the same learning rates."""
    from tte.targets.harness import train_emulator

    t0 = time.perf_counter()
    s = train_emulator(cfg.out, train_path, len(lrs), eval_data=test_path, lr=lrs).summary
    same = s["params_sha256"] == host["params_sha256"] and s["losses"] == host["losses"]
    print(f"[4/5] QEMU {s['target']} firmware: {s['steps']} train steps, held-out accuracy {s['acc_before']:.1%} -> "
          f"{s['acc_after']:.1%} ({time.perf_counter() - t0:.1f} s)")
    print(f"      {s['instructions_per_train_step']:,} instructions per train step, "
          f"{s['instructions_per_inference']:,} per inference; stack peak {s['stack_peak_bytes']:,} B; "
          f"firmware .data + .bss + stack {_kb(s['sram_measured_bytes'])}, flash {_kb(s['firmware_flash_bytes'])} "
          f"(both with the test harness)")
    print(f"      losses and trained parameters identical to the host's, bit for bit: {'yes' if same else 'NO'}")
    return {**s, "identical_to_host": same}


def _have_toolchain() -> bool:
    missing = [tool for tool in ("arm-none-eabi-gcc", "qemu-system-arm") if shutil.which(tool) is None]
    if missing:
        print(f"[4/5] QEMU skipped: {' and '.join(missing)} not found (`make toolchain` installs them)")
    return not missing


def report_stage(cfg: Config) -> Path:
    """`tte report OUT`: the memory table and the timeline PNG."""
    from tte.cli import main as tte_main

    png = cfg.out / "memory.png"
    print(f"[5/5] tte report {_rel(cfg.out)}  (report.json: {_rel(cfg.out / 'report.json')})")
    tte_main(["report", str(cfg.out), "--png", str(png)])
    return png


# --- main -------------------------------------------------------------------------------------------------------


def run(cfg: Config) -> dict[str, Any]:
    """The whole demo; returns the summary printed as the last line."""
    print(f"tte demo: a model that knows the digits 0-4 learns 5-9 on a {TARGET} "
          f"({SRAM_BUDGET // 1024} KB SRAM, {FLASH_BUDGET // 1024 // 1024} MB flash)")
    t0 = time.perf_counter()
    if not MODEL.is_file() or not SCHEME.is_file():
        raise TteError(f"the demo model {MODEL} (or its update scheme) is missing",
                       hint="run the demo from a source checkout; python models/make_demo_model.py rebuilds it")
    train_path, test_path, train, _ = prepare_data(cfg)
    lrs = learning_rates(cfg, cfg.epochs * len(train))
    rep = compile_stage(cfg)
    host = host_stage(cfg, train_path, test_path, lrs)
    emu = emulator_stage(cfg, train_path, test_path, lrs, host) if cfg.emulator and _have_toolchain() else None
    png = report_stage(cfg)
    summary = {
        "acc_before": emu["acc_before"] if emu else host["acc_before"],
        "acc_after": emu["acc_after"] if emu else None,
        "acc_after_host": host["acc_after"],
        "peak_sram_bytes": rep["peak_sram_bytes"],
        "flash_bytes": rep["flash_bytes"],
        "sram_budget_bytes": SRAM_BUDGET,
        "flash_budget_bytes": FLASH_BUDGET,
        "instructions_per_train_step": emu["instructions_per_train_step"] if emu else None,
        "instructions_per_inference": emu["instructions_per_inference"] if emu else None,
        "firmware_sram_measured_bytes": emu["sram_measured_bytes"] if emu else None,
        "firmware_flash_bytes": emu["firmware_flash_bytes"] if emu else None,
        "identical_host_emulator": emu["identical_to_host"] if emu else None,
        "params_sha256": host["params_sha256"],
        "train_steps": len(lrs),
        "trained_params": rep["trained_params"],
        "update": rep["update"],
        "report": _rel(cfg.out / "report.json"),
        "memory_png": _rel(png),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tte.demo", description=__doc__.splitlines()[0])
    ap.add_argument("--folder", type=Path, default=Config.folder, help="where to write (default: build/demo)")
    ap.add_argument("--epochs", type=int, default=Config.epochs)
    ap.add_argument("--lr", type=float, default=Config.lr, help="initial learning rate (cosine-decayed to 0)")
    ap.add_argument("--no-emulator", action="store_true", help="skip the QEMU run")
    args = ap.parse_args(argv)
    cfg = Config(args.folder, args.epochs, args.lr, emulator=not args.no_emulator)
    try:
        summary = run(cfg)
    except TteError as e:
        print(f"tte demo: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
