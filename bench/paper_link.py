"""Do the paper's models train inside an STM32F746's 256 KB of SRAM and 1 MB of flash? Link and measure them.

For each model of ../shared/models with its ~100 KB sparse-update scheme of the paper (`99kb` / `98kb` in
paper_schemes.json), this script runs what a user runs:

    tte compile MODEL --target stm32f746 --update sparse:paper_schemes.json#MODEL/SCHEME -o OUT
    tte run OUT --emulator --data one_image.npz --eval one_image.npz --steps 1 --no-params

and records the ELF's .data and .bss, the measured stack (stack painting), their total against the 256 KB
budget, the flash image against 1 MB, and the instructions of one train step and of one inference (QEMU,
SysTick under -icount shift=0). A model that does not fit is still measured when possible: the compile is
repeated without the budget check and the firmware is linked against an enlarged SRAM (QEMU maps 4 MB there),
so the table says by how much it misses and which buffers are the largest.

Usage: python bench/paper_link.py [--models ../shared/models] [--only MODEL] [--scheme 49kb] [--head new:10]
Without options it measures RUNS (each model as its scheme says, then with a new 10-class head, then mbv2-w0.35
with the smallest scheme) in about a minute, and writes bench/results/paper_link.md and paper_link.json.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MODELS = {"mbv2-w0.35": "99kb", "proxyless-w0.3": "98kb", "mcunet-5fps": "99kb"}
NEW_HEAD = "new:10"  # the paper's transfer setting: a fresh (fp32) classifier for the downstream classes
# (model, scheme, head): each ~100 KB scheme as written (1000-class classifier trained in full) and with a new
# head; then mbv2-w0.35 with the paper's smallest scheme, to show what its forward arena alone costs.
RUNS = ([(m, s, None) for m, s in MODELS.items()] + [(m, s, NEW_HEAD) for m, s in MODELS.items()]
        + [("mbv2-w0.35", "49kb", NEW_HEAD)])
KB = 1024
BUDGET_SRAM, BUDGET_FLASH = 256 * KB, 1024 * KB
MEASURE_SRAM = "3072K"  # the enlarged SRAM a firmware that overflows is measured with (QEMU maps 4 MB)


def tte(*args: str) -> tuple[int, str, str]:
    """Run the `tte` command line in this process; (status, stdout, stderr)."""
    from tte.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main(list(args))
        except SystemExit as e:  # argparse: an option this tte does not have
            status = int(e.code or 0)
    return status, out.getvalue(), err.getvalue()


def sample(out: Path, classes: int) -> Path:
    """One seeded random image in the model's input layout, with a label, as an .npz beside `out`."""
    meta = json.loads((out / "model.json").read_text())
    shape = meta["inputs"][0]["user_shape"]
    rng = np.random.default_rng(0)
    path = out.parent / f"{out.name}.npz"
    np.savez(path, x=rng.uniform(-1, 1, shape).astype(np.float32), y=np.array([int(rng.integers(classes))]))
    return path


def compile_model(model: Path, scheme: str, out: Path, head: str | None) -> dict[str, Any]:
    """`tte compile` for stm32f746; when it refuses (budget), again without the budget to measure anyway."""
    schemes = model.parent / "paper_schemes.json"
    args = ["compile", str(model), "--target", "stm32f746", "--update",
            f"sparse:{schemes}#{model.name.removesuffix('-int8.onnx')}/{scheme}", *(["--head", head] if head else []),
            "-o", str(out)]
    status, stdout, stderr = tte(*args)
    info: dict[str, Any] = {"command": "tte " + " ".join(_rel(a) for a in args), "compile_status": status}
    if status != 0:
        info["compile_error"] = stderr.strip().removeprefix("tte: error: ")
        status, stdout, stderr = tte(*args, "--budget", "64MB")
        info["compiled_without_budget"] = status == 0
        if status != 0:
            info["compile_error_without_budget"] = stderr.strip()
            return info
    report = json.loads((out / "report.json").read_text())
    info["inference_arena_bytes"] = inference_arena(model)
    info["report"] = {k: report.get(k) for k in ("arena_bytes", "peak_sram_bytes", "flash_bytes",
                                                   "trainable_param_bytes", "saved_activation_bytes", "mask_bytes",
                                                   "trained_params", "macs_forward", "macs_backward")}
    return info


def inference_arena(model: Path) -> int:
    """The arena of the same model compiled for inference only (in memory)."""
    from tte.compile import build, default_name, load

    return build(load(model), default_name(model), "host", budget=1 << 30).report["arena_bytes"]


def link(out: Path) -> dict[str, Any]:
    """Build the firmware; on an SRAM overflow at link time, relink with an enlarged SRAM to measure it."""
    from tte.targets import BuildError, build
    from tte.targets.project import configure_harness

    configure_harness(out, params_dump=False)  # the firmware as it would be flashed: no parameter dump buffer
    info: dict[str, Any] = {}
    try:
        fw = build(out, check_budget=False)
        info["links_at_320kb"] = True
    except BuildError as e:
        info["links_at_320kb"], info["link_error"] = False, str(e)
        if "SRAM" not in str(e):
            return info
        ld = out / "target" / "board.ld"
        ld.write_text(re.sub(r"(SRAM \(rwx\) : ORIGIN = 0x20000000, LENGTH = )\w+", rf"\g<1>{MEASURE_SRAM}",
                             ld.read_text()))
        fw = build(out, check_budget=False)
        info["measured_with_sram"] = MEASURE_SRAM
    info["largest_sram_symbols"] = largest_symbols(fw.elf)
    return info


def largest_symbols(elf: Path, count: int = 6) -> list[dict[str, Any]]:
    """The largest .data/.bss symbols of the ELF (where the SRAM goes)."""
    proc = subprocess.run(["arm-none-eabi-nm", "--size-sort", "-S", "-r", str(elf)], capture_output=True,
                          text=True, check=True)
    rows = []
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[2] in "bBdD":
            rows.append({"symbol": parts[3], "bytes": int(parts[1], 16)})
    return rows[:count]


def measure(model: Path, scheme: str, build_dir: Path, head: str | None) -> dict[str, Any]:
    """Compile, link and train one step of one model; every figure of its row."""
    from tte.targets.harness import train_emulator

    name = model.name.removesuffix("-int8.onnx")
    out = build_dir / re.sub(r"[^\w.-]", "_", f"{name}_{scheme}_{head or 'keep'}")
    row: dict[str, Any] = {"model": name, "scheme": scheme, "head": head or "keep"}
    row.update(compile_model(model, scheme, out, head))
    if not (out / "model.json").is_file() or "compile_error_without_budget" in row:
        return row
    row.update(link(out))
    if "largest_sram_symbols" not in row:
        return row
    classes = int(np.prod(json.loads((out / "model.json").read_text())["outputs"][0]["shape"]))
    data = sample(out, classes)
    t0 = time.monotonic()
    s = train_emulator(out, data, 1, eval_data=data, params_dump=False, timeout=600, check_budget=False).summary
    sram = s["elf_data"] + s["elf_bss"] + s["stack_peak_bytes"]
    row.update({
        "elf_text": s["elf_text"], "elf_data": s["elf_data"], "elf_bss": s["elf_bss"],
        "stack_peak_bytes": s["stack_peak_bytes"], "sram_total_bytes": sram,
        "flash_bytes": s["firmware_flash_bytes"], "fits_sram": sram <= BUDGET_SRAM,
        "fits_flash": s["firmware_flash_bytes"] <= BUDGET_FLASH,
        "instructions_per_train_step": s["instructions_per_train_step"],
        "instructions_per_inference": s["instructions_per_inference"], "loss": s["losses"][0],
        "train_step_instructions_over_216mhz_ms": round(s["instructions_per_train_step"] / 216e3, 1),
        "run_seconds": round(time.monotonic() - t0, 2),
    })
    return row


def _rel(arg: str) -> str:
    """A path argument relative to the repository (where the commands are run), `sparse:PATH#...` included."""
    prefix, _, rest = arg.rpartition(":") if arg.startswith("sparse:") else ("", "", arg)
    if "/" not in rest:
        return arg
    path, hash_, entry = rest.partition("#")
    return (f"{prefix}:" if prefix else "") + os.path.relpath(Path(path).resolve(), REPO) + hash_ + entry


def _kb(v: int | None) -> str:
    return "-" if v is None else f"{v:,} ({v / KB:.1f} KB)"


def markdown(rows: list[dict[str, Any]], command: str) -> str:
    """The results as a Markdown page."""
    lines = ["# Paper models on stm32f746: one sparse-update train step, linked and run in QEMU", "",
             f"Made by `{command}` (bench/paper_link.py). Budget: 256 KB SRAM (the ELF's .data + .bss + the "
             "measured stack peak), 1 MB flash. Instructions: QEMU `-icount shift=0` SysTick (resolution 40 "
             "instructions), one train step on one seeded random image, and the inference before it. Head `keep`: "
             "the scheme as written (the 1000-class int8 classifier trained in full, in SRAM); `new:10`: a fresh "
             "fp32 10-class head, the paper's transfer setting.", "",
             "| model | scheme | head | .data | .bss | stack (measured) | SRAM total | fits 256 KB | flash | "
             "instr / train step | instr / inference |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "sram_total_bytes" in r:
            lines.append(f"| {r['model']} | {r['scheme']} | {r['head']} | {r['elf_data']:,} | {r['elf_bss']:,} | "
                         f"{r['stack_peak_bytes']:,} | {_kb(r['sram_total_bytes'])} | "
                         f"{'yes' if r['fits_sram'] else 'NO'} | {_kb(r['flash_bytes'])} | "
                         f"{r['instructions_per_train_step']:,} | {r['instructions_per_inference']:,} |")
        else:
            lines.append(f"| {r['model']} | {r['scheme']} | {r['head']} | - | - | - | - | NO | - | - | - |")
    lines += ["", "## Why a row does not fit", ""]
    lines += [f"- {r['model']} {r['scheme']} head {r['head']}: {why(r)}" for r in rows if not r.get("fits_sram")]
    lines += ["", "## Per run", ""]
    for r in rows:
        lines += [f"### {r['model']} {r['scheme']}, head {r['head']}", "", f"- command: `{r['command']}`"]
        for key in ("compile_error", "compile_error_without_budget", "link_error", "measured_with_sram"):
            if key in r:
                lines.append(f"- {key.replace('_', ' ')}: {r[key]}")
        if "report" in r:
            lines.append("- compile report: " + ", ".join(f"{k} {v:,}" for k, v in r["report"].items()
                                                          if isinstance(v, int)))
        if "largest_sram_symbols" in r:
            lines.append("- largest SRAM symbols: " + ", ".join(f"`{s['symbol']}` {s['bytes']:,}"
                                                                 for s in r["largest_sram_symbols"]))
        lines.append("")
    return "\n".join(lines)


def why(r: dict[str, Any]) -> str:
    """One line: by how much a run misses the budget, and where the bytes are."""
    if "sram_total_bytes" not in r:
        return r.get("compile_error_without_budget") or r.get("link_error") or "not measured"
    over = r["sram_total_bytes"] - BUDGET_SRAM
    rep = r.get("report", {})
    arena = rep.get("arena_bytes", 0)
    same = (" = the inference arena: the train step's saved activations, masks and gradients fit inside the "
            "forward peak") if arena == r.get("inference_arena_bytes") else ""
    params = rep.get("trainable_param_bytes", 0)
    text = f"{over:,} B over; arena {arena:,} B{same}; trainable parameters in SRAM {params:,} B"
    big = [s for s in r.get("largest_sram_symbols", []) if s["symbol"].endswith("classifier_weight")]
    if big and r["head"] == "keep":
        text += f", of which the 1000-class classifier weight {big[0]['bytes']:,} B (a new head removes it)"
    peak = re.search(r"at the peak, node (\S+) \((\w+)\): (.*?); largest", r.get("compile_error", ""))
    if peak:
        text += f". The arena peaks at node {peak.group(1)} ({peak.group(2)}), live: {peak.group(3)}"
        out = re.search(rf"{re.escape(peak.group(1))}_out\S* \(activation, ([\d,]+) B\)", peak.group(3))
        if peak.group(2) == "depthwise_conv2d" and out:
            size = int(out.group(1).replace(",", ""))
            text += (f"; a depthwise kernel that writes its output over its input (in place, as TinyEngine does) "
                     f"would take {size:,} B off this peak: {abs(over - size):,} B "
                     f"{'over' if over > size else 'under'} the budget, if no other node then peaks higher")
    return text + "."


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default=str(REPO.parent / "shared" / "models"), help="folder of the paper models")
    p.add_argument("--head", help="one tte compile --head for every model (default: the runs of RUNS)")
    p.add_argument("--out", default=str(REPO / "build" / "paper_link"), help="build folder")
    p.add_argument("--results", default=str(REPO / "bench" / "results" / "paper_link"), help="results path stem")
    p.add_argument("--only", help="one model name")
    p.add_argument("--scheme", help="another scheme of paper_schemes.json than the ~100 KB one (e.g. 49kb)")
    args = p.parse_args(argv)
    command = "python bench/paper_link.py" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    build_dir = Path(args.out)
    build_dir.mkdir(parents=True, exist_ok=True)
    runs = RUNS
    if args.only or args.scheme or args.head:
        runs = [(m, args.scheme or s, args.head) for m, s in MODELS.items() if not args.only or m == args.only]
    rows = []
    for name, scheme, head in runs:
        row = measure(Path(args.models) / f"{name}-int8.onnx", scheme, build_dir, head)
        rows.append(row)
        print(json.dumps(row), flush=True)
    stem = Path(args.results)
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps({"command": command, "rows": rows}, indent=1) + "\n")
    stem.with_suffix(".md").write_text(markdown(rows, command) + "\n")
    print(f"wrote {stem.with_suffix('.md')} and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
