"""The paper's three models trained on an STM32F746 under 256 KB: every update spec, linked and run in QEMU.

"On-Device Training Under 256KB Memory" measured one training step of MobileNetV2-w0.35, ProxylessNAS-w0.3 and
MCUNet-5FPS (128x128) on an STM32F746 (../shared/models/README.md). For each model of ../shared/models and each
update spec (`full`, `bias-only`, `last:N`, `mobiletl:K`, and the paper's schemes `49kb` .. `148kb` of
paper_schemes.json) this script runs what a user runs:

    tte compile MODEL --target stm32f746 --update SPEC --head new:10 --budget B -o OUT
    tte run OUT --emulator --data one_image.npz --eval one_image.npz --steps 1 --no-params

Head `new:10`: a fresh fp32 10-class classifier, the paper's transfer setting (a 1000-class int8 classifier
trained in SRAM alone is 112-160 KB). The budget B is first the paper's measured SRAM for that model, so the
compiler uses every memory saving it has (it runs the first layers in row stripes only when a plan is over the
budget); when that fails, the size its error names for its most frugal plan if within 256 KB; then 256 KB. A
spec that fits none is compiled without a budget and linked against an enlarged SRAM
(QEMU maps 4 MB there), so its planned and linked size are still reported, with the node where it peaks.

Recorded per run: `peak_sram_bytes` as planned (report.json), the ELF's .data + .bss + the measured stack
(stack painting), flash (.text + .data), instructions per train step and per inference (QEMU `-icount shift=0`,
SysTick, 40-instruction resolution), MACs forward and backward. Written: bench/results/paper.md (the paper's
figures beside ours, with the ratios), paper.json and paper.png (peak SRAM against the update spec, per model).

Usage: python bench/paper.py [--models ../shared/models] [--only MODEL] [--specs last:1,99kb] [--jobs 2]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

KB = 1024
BUDGET_SRAM, BUDGET_FLASH = 256 * KB, 1024 * KB
MEASURE_SRAM = "3072K"  # the SRAM a firmware over the chip's is linked with to measure it (QEMU maps 4 MB)
HEAD = "new:10"
# The paper's figures (../shared/models/README.md): peak SRAM of the ~100 KB sparse scheme and of a full update,
# latency of one train step at 216 MHz (as cycles), and TF-Lite Micro's projected full-update latency.
PAPER: dict[str, dict[str, Any]] = {
    "mbv2-w0.35": {"scheme": "99kb", "sram_kb": 141, "full_kb": 2939, "ms": 373, "tflm_full_ms": 8501},
    "proxyless-w0.3": {"scheme": "98kb", "sram_kb": 135, "full_kb": 2745, "ms": 443, "tflm_full_ms": 10523},
    "mcunet-5fps": {"scheme": "99kb", "sram_kb": 173, "full_kb": 3650, "ms": 546, "tflm_full_ms": 13398},
}
MHZ = 216
SPECS = ("full", "bias-only", "last:1", "last:2", "last:4", "mobiletl:1", "mobiletl:2", "mobiletl:4")


def paper_cycles(model: str) -> int:
    return round(PAPER[model]["ms"] * MHZ * 1000)


def specs(models: Path, model: str) -> list[str]:
    """Every update spec measured for one model: the generic ones, then the paper's schemes by size."""
    schemes = json.loads((models / "paper_schemes.json").read_text())[model]
    names = sorted((k for k in schemes if re.fullmatch(r"\d+kb", k)), key=lambda k: int(k[:-2]))
    return [*SPECS, *names]


def update_arg(models: Path, model: str, spec: str) -> str:
    return f"sparse:{models / 'paper_schemes.json'}#{model}/{spec}" if spec.endswith("kb") else spec


def tte(*args: str) -> tuple[int, str]:
    """Run the `tte` command line in this process; (status, stderr)."""
    from tte.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main(list(args))
        except SystemExit as e:  # argparse: an option this tte does not have
            status = int(e.code or 0)
    return status, err.getvalue().strip().removeprefix("tte: error: ")


def compile_run(model_path: Path, model: str, spec: str, out: Path) -> dict[str, Any]:
    """`tte compile` with the smallest budget it meets: the paper's SRAM for the model; else the size the compiler
    says it needs with every saving it has (row stripes), when that is within 256 KB; else 256 KB; else none."""
    base = ["compile", str(model_path), "--target", "stm32f746", "--update",
            update_arg(model_path.parent, model, spec), "--head", HEAD, "-o", str(out)]
    info: dict[str, Any] = {}
    budgets = [f"{PAPER[model]['sram_kb']}KB", "256KB", "64MB"]
    budgets_first = budgets[0]
    while budgets:
        budget = budgets.pop(0)
        status, err = tte(*base, "--budget", budget)
        if status == 0:
            info["budget"] = budget if not budget.isdigit() else f"{int(budget) / KB:.1f}KB (its minimum)"
            info["command"] = "tte " + " ".join(_rel(a) for a in (*base, "--budget", budget))
            break
        needs = re.search(r"needs ([\d,]+) bytes of SRAM with its first layers in row stripes", err)
        if budget == budgets_first and needs and int(needs[1].replace(",", "")) <= BUDGET_SRAM:
            budgets.insert(0, needs[1].replace(",", ""))  # the striped plan's own size: it fits the board
        if budget == "256KB":
            info["compile_error"] = err  # why it does not fit the board: the message a user gets
    else:
        info["compile_error_without_budget"] = err
        return info
    report = json.loads((out / "report.json").read_text())
    info["report"] = {k: report.get(k) for k in (
        "peak_sram_bytes", "arena_bytes", "trainable_param_bytes", "saved_activation_bytes", "mask_bytes",
        "flash_bytes", "trained_params", "macs_forward", "macs_backward")}
    return info


def link(out: Path) -> dict[str, Any]:
    """Build the firmware as it would be flashed; over the chip's SRAM, relink with an enlarged SRAM."""
    from tte.targets import BuildError, build
    from tte.targets.project import configure_harness

    configure_harness(out, params_dump=False)
    try:
        build(out, check_budget=False)
        return {"links_on_chip": True}
    except BuildError as e:
        if "SRAM" not in str(e):
            return {"links_on_chip": False, "link_error": str(e)}
    ld = out / "target" / "board.ld"
    ld.write_text(re.sub(r"(SRAM \(rwx\) : ORIGIN = 0x20000000, LENGTH = )\w+", rf"\g<1>{MEASURE_SRAM}",
                         ld.read_text()))
    build(out, check_budget=False)
    return {"links_on_chip": False, "measured_with_sram": MEASURE_SRAM}


def one_image(out: Path) -> Path:
    """One seeded random image in the model's input layout with a label, as an .npz beside `out`."""
    meta = json.loads((out / "model.json").read_text())
    rng = np.random.default_rng(0)
    classes = int(np.prod(meta["outputs"][0]["shape"]))
    path = out.parent / f"{out.name}.npz"
    np.savez(path, x=rng.uniform(-1, 1, meta["inputs"][0]["user_shape"]).astype(np.float32),
             y=np.array([int(rng.integers(classes))]))
    return path


def measure(args: tuple[Path, str, Path]) -> dict[str, Any]:
    """Compile, link and train one step of one (model, spec): every figure of its row."""
    from tte.targets.harness import train_emulator

    model_path, spec, build_dir = args
    model = model_path.name.removesuffix("-int8.onnx")
    out = build_dir / re.sub(r"[^\w.-]", "_", f"{model}_{spec}")
    row: dict[str, Any] = {"model": model, "spec": spec, "head": HEAD}
    t0 = time.monotonic()
    row.update(compile_run(model_path, model, spec, out))
    if "report" not in row:
        return row
    row.update(link(out))
    if "link_error" in row:
        return row
    data = one_image(out)
    s = train_emulator(out, data, 1, eval_data=data, params_dump=False, timeout=1200, check_budget=False).summary
    sram = s["elf_data"] + s["elf_bss"] + s["stack_peak_bytes"]
    row.update({
        "elf_data": s["elf_data"], "elf_bss": s["elf_bss"], "stack_peak_bytes": s["stack_peak_bytes"],
        "sram_bytes": sram, "fits_sram": sram <= BUDGET_SRAM, "flash_bytes": s["firmware_flash_bytes"],
        "fits_flash": s["firmware_flash_bytes"] <= BUDGET_FLASH,
        "instructions_per_train_step": s["instructions_per_train_step"],
        "instructions_per_inference": s["instructions_per_inference"],
        "seconds": round(time.monotonic() - t0, 1),
    })
    return row


def _rel(arg: str) -> str:
    """A path argument relative to the repository (where commands are run), `sparse:PATH#...` included."""
    prefix, _, rest = arg.partition(":") if arg.startswith("sparse:") else ("", "", arg)
    path, hash_, entry = rest.partition("#")
    if "/" not in path:
        return arg
    return (f"{prefix}:" if prefix else "") + os.path.relpath(Path(path).resolve(), REPO) + hash_ + entry


def _kb(v: int | None) -> str:
    return "-" if v is None else f"{v / KB:,.1f}"


def _count(v: int | None) -> str:
    return "-" if v is None else f"{v:,}"


def _m(v: int | None) -> str:
    return "-" if v is None else f"{v / 1e6:,.1f} M"


def _ratio(ours: float | None, theirs: float) -> str:
    return "-" if ours is None else f"{ours / theirs:.2f}"


def headline(rows: list[dict[str, Any]]) -> list[str]:
    """The ~100 KB scheme of each model against the paper's SRAM and cycles; full against the paper's full."""
    lines = ["| model | scheme | SRAM measured (KB) | paper (KB) | ratio | instr / train step | paper cycles | "
             "ratio | instr / inference | full: planned (KB) | paper full (KB) | saving vs full: ours | paper |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for model, p in PAPER.items():
        by_spec = {r["spec"]: r for r in rows if r["model"] == model}
        r, full = by_spec.get(p["scheme"]), by_spec.get("full")
        if r is None:
            continue
        sram, instr = r.get("sram_bytes"), r.get("instructions_per_train_step")
        full_kb = full["report"]["peak_sram_bytes"] / KB if full and "report" in full else None
        saving = "-" if full_kb is None or sram is None else f"{full_kb * KB / sram:.1f}x"
        lines.append(
            f"| {model} | {p['scheme']} | {_kb(sram)} | {p['sram_kb']} | {_ratio(sram, p['sram_kb'] * KB)} | "
            f"{_m(instr)} | {paper_cycles(model) / 1e6:.1f} M | {_ratio(instr, paper_cycles(model))} | "
            f"{_m(r.get('instructions_per_inference'))} | {'-' if full_kb is None else f'{full_kb:,.0f}'} | "
            f"{p['full_kb']:,} | {saving} | {p['full_kb'] / p['sram_kb']:.1f}x |")
    return lines


def spec_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| model | update | compiled with | planned peak (KB) | arena (KB) | trained params (KB) | "
             "linked SRAM (KB) | fits 256 KB | flash (KB) | instr / train step | instr / inference | MACs fwd | "
             "MACs bwd | trained params |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        rep = r.get("report", {})
        fits = "yes" if r.get("fits_sram") and "compile_error" not in r else "NO"
        lines.append(
            f"| {r['model']} | {r['spec']} | {r.get('budget', '-')} | {_kb(rep.get('peak_sram_bytes'))} | "
            f"{_kb(rep.get('arena_bytes'))} | {_kb(rep.get('trainable_param_bytes'))} | "
            f"{_kb(r.get('sram_bytes'))} | {fits} | {_kb(r.get('flash_bytes'))} | "
            f"{_m(r.get('instructions_per_train_step'))} | {_m(r.get('instructions_per_inference'))} | "
            f"{_m(rep.get('macs_forward'))} | {_m(rep.get('macs_backward'))} | "
            f"{_count(rep.get('trained_params'))} |")
    return lines


def markdown(rows: list[dict[str, Any]], command: str) -> str:
    """The results page."""
    lines = ["# The paper's models: one train step on stm32f746, every update spec", "",
             f"Made by `{command}` (bench/paper.py, {time.strftime('%Y-%m-%d')}). Head `{HEAD}` (a fresh fp32 "
             "10-class classifier: the paper's transfer setting). SRAM measured = the ELF's .data + .bss + the "
             "measured stack peak of the firmware as flashed (no parameter dump buffer); planned = report.json's "
             "`peak_sram_bytes` (arena + trainable parameters + outputs + the 4 KB stack reserve). Instructions: "
             "QEMU `-icount shift=0` (SysTick, 40-instruction resolution), one train step on one seeded random "
             f"image; the paper's latency as cycles at {MHZ} MHz. QEMU counts instructions, not cycles: a "
             "Cortex-M7 issues up to two instructions per cycle and stalls on memory and multi-cycle "
             "instructions, so the instruction ratio estimates the cycle ratio; it bounds it neither way. "
             "`compiled with`: the first budget "
             "the compile met: the paper's SRAM for that model; else the size the compiler's error names for its "
             "most frugal plan (first layers in row stripes), when within 256 KB (`its minimum`); else 256 KB; "
             "`64MB`: it fits none, and is linked against an enlarged SRAM to measure it anyway.", "",
             "## The paper's ~100 KB schemes against the paper", "", *headline(rows), "",
             "## Every update spec", "", "![peak SRAM by update spec](paper.png)", "", *spec_table(rows), ""]
    misses = [r for r in rows if "compile_error" in r or "compile_error_without_budget" in r]
    if misses:
        lines += ["## Specs that do not fit 256 KB: the compiler's message", ""]
        lines += [f"- {r['model']} `{r['spec']}`: {r.get('compile_error') or r['compile_error_without_budget']}"
                  for r in misses]
        lines.append("")
    lines += ["## Commands", ""] + [f"- `{r['command']}`" for r in rows if "command" in r]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Peak SRAM (planned, and linked when measured) against the update spec, one panel per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = [m for m in PAPER if any(r["model"] == m for r in rows)]
    fig, axes = plt.subplots(len(models), 1, figsize=(12, 3.2 * len(models)), squeeze=False)
    for ax, model in zip(axes[:, 0], models, strict=True):
        mine = [r for r in rows if r["model"] == model and "report" in r]
        x = np.arange(len(mine))
        rep = [r["report"] for r in mine]
        params = np.array([r["trainable_param_bytes"] / KB for r in rep])
        arena = np.array([r["arena_bytes"] / KB for r in rep])
        rest = np.array([r["peak_sram_bytes"] / KB for r in rep]) - params - arena
        ax.bar(x, params, color="tab:orange", label="trainable parameters")
        ax.bar(x, arena, bottom=params, color="tab:blue", label="arena (activations, masks, gradients)")
        ax.bar(x, rest, bottom=params + arena, color="tab:gray", label="outputs, stack")
        linked = [(i, r["sram_bytes"] / KB) for i, r in enumerate(mine) if "sram_bytes" in r]
        ax.plot([i for i, _ in linked], [v for _, v in linked], "k_", markersize=18, label="linked + stack")
        ax.axhline(256, color="red", lw=1, label="256 KB")
        p = PAPER[model]
        if p["scheme"] in [r["spec"] for r in mine]:
            i = [r["spec"] for r in mine].index(p["scheme"])
            ax.plot([i], [p["sram_kb"]], "r*", markersize=12, label=f"paper {p['scheme']}: {p['sram_kb']} KB")
        ax.set_yscale("symlog", linthresh=300)
        ax.set_xticks(x, [r["spec"] for r in mine], rotation=30, fontsize=8)
        ax.set_ylabel("KB")
        ax.set_title(f"{model} (head {HEAD})", fontsize=10)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default=str(REPO.parent / "shared" / "models"), help="folder of the paper models")
    p.add_argument("--out", default=str(REPO / "build" / "paper"), help="build folder")
    p.add_argument("--results", default=str(REPO / "bench" / "results" / "paper"), help="results path stem")
    p.add_argument("--only", help="one model name")
    p.add_argument("--specs", help="comma-separated update specs (default: all)")
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel")
    args = p.parse_args(argv)
    command = "python bench/paper.py" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    models, build_dir = Path(args.models), Path(args.out)
    build_dir.mkdir(parents=True, exist_ok=True)
    runs = [(models / f"{m}-int8.onnx", s, build_dir) for m in PAPER if not args.only or m == args.only
            for s in (args.specs.split(",") if args.specs else specs(models, m))]
    with ProcessPoolExecutor(args.jobs) as pool:
        rows = list(tqdm(pool.map(measure, runs), total=len(runs), desc="compile, link, train 1 step"))
    stem = Path(args.results)
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps({"command": command, "paper": PAPER, "rows": rows},
                                                    indent=1) + "\n")
    stem.with_suffix(".md").write_text(markdown(rows, command))
    plot(rows, stem.with_suffix(".png"))
    print(f"wrote {stem.with_suffix('.md')}, .json and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
