"""Where do the instructions go? A per-node instruction profile of one inference and one train step in QEMU.

    python bench/node_profile.py MODEL_OR_OUT [tte compile options...] [--tag NAME] [--results DIR]

MODEL_OR_OUT is a model file (compiled with `tte compile MODEL --target stm32f746 OPTIONS -o build/profile/<stem>`
unless the options name another target or -o) or a folder compiled for a Cortex-M target (reused as it is).
The firmware is built a second time with -DTTE_PROFILE into OUT/build/<board>-profile/ (the default build stays
as it was): the generated C then calls the harness around every node (TTE_PROFILE_BEGIN/END, see
codegen/templates/model.c.j2), which adds up SysTick ticks (40 instructions each, QEMU -icount shift=0) per node
and sends them back in tte_profile.bin. A model with a train step runs one inference, one train step and one
inference (the harness's `train` command without an eval file); the inference figures are per call.
Writes bench/results/profile_<tag>.md and .json (tag: the model file's stem) and prints the Markdown.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
DEFAULT_TARGET = "stm32f746"
TIMEOUT = 900.0


def tte(*args: str) -> tuple[int, str]:
    """Run the `tte` command line in this process; (status, what it printed)."""
    from tte.cli import main

    text = io.StringIO()
    with contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
        status = main(list(args))
    return status, text.getvalue()


def compiled_folder(model: Path, options: Sequence[str]) -> Path:
    """The folder to profile: `model` itself when it is a compiled folder, else where it was compiled to."""
    if (model / "model.json").is_file():
        return model
    opts = list(options)
    if "--target" not in opts:
        opts += ["--target", DEFAULT_TARGET]
    if "-o" not in opts and "--output" not in opts:
        opts += ["-o", str(REPO / "build" / "profile" / model.stem)]
    out = Path(opts[(opts.index("-o") if "-o" in opts else opts.index("--output")) + 1])
    status, text = tte("compile", str(model), *opts)
    if status != 0:
        sys.exit(f"profile: tte compile failed: {text.strip()}")
    return out


def build_profiled(out: Path) -> tuple[Path, Any]:
    """Build OUT's firmware with -DTTE_PROFILE into OUT/build/<board>-profile; its ELF and board."""
    from tte.targets.boards import get_board
    from tte.targets.project import configure_harness, read_meta

    board = get_board(read_meta(out)["board"])
    configure_harness(out, params_dump=False)
    folder = f"build/{board.name}-profile"
    proc = subprocess.run(["make", "-C", str(out), "-j2", f"BUILD={folder}", "EXTRA_CFLAGS=-DTTE_PROFILE"],
                          capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        sys.exit(f"profile: the profiling firmware did not build:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return out / folder / "firmware.elf", board


def sample_records(out: Path, with_label: bool) -> bytes:
    """One seeded random input in the model's layout, quantized as `tte run` does (plus label 0)."""
    from tte.host import IOInfo
    from tte.host import read_meta as read_model_meta

    inputs = [IOInfo.from_json(d) for d in read_model_meta(out)["inputs"]]
    rng = np.random.default_rng(0)
    data = b"".join(io_.to_int8(rng.uniform(-1, 1, io_.user_shape).astype(np.float32)).tobytes() for io_ in inputs)
    return data + (np.array([0], "<i4").tobytes() if with_label else b"")


def run_profiled(out: Path, elf: Path, board: Any) -> tuple[dict[str, int], np.ndarray]:
    """One inference (and, with a train step, one train step and one more inference) in QEMU; the firmware's
    TTE_RESULT figures and the per-node (ticks, calls) array."""
    from tte.targets.harness import parse_result
    from tte.targets.project import has_train_step
    from tte.targets.qemu import run_qemu

    train = has_train_step(out)
    with tempfile.TemporaryDirectory(prefix="tte-profile-") as tmp:
        folder = Path(tmp)
        (folder / "data.bin").write_bytes(sample_records(out, train))
        if train:
            (folder / "lrs.bin").write_bytes(np.array([0.05], "<f4").tobytes())
            args = ["train", "data.bin", "-", "1", "lrs.bin", "-", "losses.bin", "-"]
        else:
            args = ["infer", "data.bin", "outputs.bin"]
        run = run_qemu(elf, TIMEOUT, args, board=board, cwd=folder)
        if not run.ok:
            sys.exit(f"profile: {run.message}\n{run.output[-2000:]}")
        counts = np.frombuffer((folder / "tte_profile.bin").read_bytes(), "<u4").reshape(-1, 2)
    return parse_result(run.output), counts


def whole_calls(result: dict[str, int], ipt: int) -> dict[str, float]:
    """Instructions of one whole model call, per entry point, as the harness measured them."""
    if "train_ticks_sum" in result:
        return {"infer": result["infer_ticks_sum"] * ipt / result["infer_calls"],
                "train": result["train_ticks_sum"] * ipt / max(result["steps"], 1)}
    return {"infer": result["ticks_sum"] * ipt / result["samples"]}


def profile_rows(table: dict[str, Any], counts: np.ndarray, ipt: int) -> list[dict[str, Any]]:
    """The node table with each node's instructions per call."""
    if len(counts) != len(table["nodes"]):
        sys.exit(f"profile: the firmware measured {len(counts)} nodes, profile.json lists {len(table['nodes'])}")
    rows = []
    for node, (ticks, calls) in zip(table["nodes"], counts, strict=True):
        instr = int(ticks) * ipt / int(calls) if calls else 0.0
        rows.append({**node, "calls": int(calls), "instructions": round(instr)})
    return rows


def summarize(rows: list[dict[str, Any]], whole: dict[str, float]) -> dict[str, Any]:
    """Per entry point: nodes sorted by instructions with their shares, totals per kernel, node sum vs call."""
    parts = {}
    for call, total in whole.items():
        mine = sorted((r for r in rows if r["call"] == call), key=lambda r: (-r["instructions"], r["id"]))
        node_sum = sum(r["instructions"] for r in mine)
        for r in mine:
            r["share"] = r["instructions"] / node_sum if node_sum else 0.0
            r["instructions_per_mac"] = r["instructions"] / r["macs"] if r["macs"] else None
        kernels: dict[str, dict[str, Any]] = {}
        for r in mine:
            k = kernels.setdefault(r["kernel"], {"kernel": r["kernel"], "nodes": 0, "macs": 0, "instructions": 0})
            k["nodes"] += 1
            k["macs"] += r["macs"]
            k["instructions"] += r["instructions"]
        per_kernel = sorted(kernels.values(), key=lambda k: -k["instructions"])
        for k in per_kernel:
            k["share"] = k["instructions"] / node_sum if node_sum else 0.0
            k["instructions_per_mac"] = k["instructions"] / k["macs"] if k["macs"] else None
        parts[call] = {"instructions_per_call": round(total), "node_sum": node_sum,
                       "macs": sum(r["macs"] for r in mine), "nodes": mine, "kernels": per_kernel}
    return parts


def _ipm(v: float | None) -> str:
    return f"{v:.2f}" if v is not None else "-"


def markdown(tag: str, source: str, parts: dict[str, Any]) -> str:
    titles = {"infer": "Inference (`<name>_infer`)", "train": "Train step (`<name>_train_step`)"}
    lines = [f"# Per-node instruction profile: {tag}", "",
             f"Made by `python bench/node_profile.py {source}`. Instructions: QEMU `-icount shift=0` SysTick (40 per "
             "tick) around each node of a -DTTE_PROFILE firmware build; one seeded random input (label 0).", ""]
    for call, p in parts.items():
        macs = p["macs"]
        lines += [f"## {titles[call]}", "",
                  f"Whole call {p['instructions_per_call']:,} instructions (profiling build); sum of the nodes "
                  f"{p['node_sum']:,}; {macs:,} MACs ({_ipm(p['node_sum'] / macs if macs else None)} "
                  "instructions per MAC).", "",
                  "| kernel | nodes | MACs | instructions | instr/MAC | share |", "|---|---|---|---|---|---|"]
        lines += [f"| `{k['kernel']}` | {k['nodes']} | {k['macs']:,} | {k['instructions']:,} | "
                  f"{_ipm(k['instructions_per_mac'])} | {100 * k['share']:.1f}% |" for k in p["kernels"]]
        lines += ["", "| # | node | op | kernel | MACs | instructions | instr/MAC | share |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['id']} | {r['name']} | {r['op']} | `{r['kernel']}` | {r['macs']:,} | "
                  f"{r['instructions']:,} | {_ipm(r['instructions_per_mac'])} | {100 * r['share']:.1f}% |"
                  for r in p["nodes"]]
        lines.append("")
    return "\n".join(lines)


def profile(out: Path) -> dict[str, Any]:
    """Build, run and measure the compiled folder `out`; the summary (see `summarize`)."""
    from tte.targets.boards import QEMU_INSTRUCTIONS_PER_TICK as ipt

    elf, board = build_profiled(out)
    result, counts = run_profiled(out, elf, board)
    table = json.loads((out / "profile.json").read_text())
    return {"model": table["model"], "board": board.name,
            "parts": summarize(profile_rows(table, counts, ipt), whole_calls(result, ipt))}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", type=Path, help="a model file, or a folder compiled for a Cortex-M target")
    p.add_argument("--tag", help="results name: bench/results/profile_<tag>.md (default: the model's stem)")
    p.add_argument("--results", type=Path, default=RESULTS, help="folder for the .md and .json")
    args, options = p.parse_known_args(argv)
    out = compiled_folder(args.model, options)
    stem = args.model.name if args.model.is_dir() else args.model.stem
    tag = args.tag or stem.removesuffix("-int8")
    summary = profile(out)
    source = " ".join([str(args.model), *options])
    summary["command"] = f"python bench/node_profile.py {source}"
    text = markdown(tag, source, summary["parts"])
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"profile_{tag}.md").write_text(text)
    (args.results / f"profile_{tag}.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
