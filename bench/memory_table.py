"""How much SRAM does a train step of the paper's models need, by update spec? The compile-time memory table.

For each model of ../shared/models this runs the compile pipeline of

    tte compile MODEL --target stm32f746 --update SPEC --head HEAD -o OUT

for the paper's ~100 KB sparse scheme (`99kb` / `98kb` of paper_schemes.json, head `keep` as written and a new
10-class head), `full`, `bias-only`, `last:N` and `mobiletl:K` (new 10-class head: the paper's transfer
setting), plus inference alone, and records from report.json: peak SRAM (arena + trainable parameters + PRNG
state + output buffer + the 4 KB stack the firmware reserves), the arena (the train step's and inference's
plans), trainable parameter bytes, saved activations, masks, the gradients live at the peak and flash. A spec
that does not fit the 256 KB budget is still measured (the compile would stop with the budget error); the
table says by how much it misses. `striped` says whether the compiler ran the first layers in row stripes to
fit (it does so only over the budget; `arena plain` is the arena without).

Usage: python bench/memory_table.py [--models ../shared/models] [--only MODEL]
Writes bench/results/memory.md and bench/results/memory.json (about 15 s; the same code gives the same files).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from codegen.emit import emit_c  # noqa: E402
from codegen.emit_train import emit_train  # noqa: E402
from tte.compile import TrainConfig, load, train_program  # noqa: E402
from tte.passes.normalize import normalize  # noqa: E402
from tte.passes.stripes import STAGE_OP  # noqa: E402
from tte.report import build_report, build_train_report, stripe_text  # noqa: E402

MODELS = {"mbv2-w0.35": "99kb", "proxyless-w0.3": "98kb", "mcunet-5fps": "99kb"}
TARGET, BUDGET, STACK = "stm32f746", 256 * 1024, 4 * 1024  # the board's budget and reserved stack
HEAD = "new:10"
SPECS = ("bias-only", "last:1", "last:2", "last:4", "mobiletl:1", "mobiletl:2", "mobiletl:4", "full")
KEYS = ("peak_sram_bytes", "arena_bytes", "train_arena_bytes", "infer_arena_bytes", "trainable_param_bytes",
        "saved_activation_bytes", "mask_bytes", "gradient_bytes_peak", "other_static_bytes", "io_bytes",
        "flash_bytes", "trained_params", "macs_forward", "macs_backward")


def runs(model: str, scheme: str, models: Path) -> list[tuple[str | None, str]]:
    """(update, head) of every row of one model (None: inference only)."""
    sparse = f"sparse:{models / 'paper_schemes.json'}#{model}/{scheme}"
    return [(None, "keep"), (sparse, "keep"), (sparse, HEAD), *((spec, HEAD) for spec in SPECS)]


def command(path: Path, update: str | None, head: str, out: str) -> str:
    rel = f"../shared/models/{path.name}"
    train = "" if update is None else f" --update {update.replace(str(path.parent), '../shared/models')}"
    train += f" --head {head}" if update is not None and head != "keep" else ""
    return f"tte compile {rel} --target {TARGET}{train} -o build/memory/{out}"


def measure(graph: Any, source: str, update: str | None, head: str) -> dict[str, Any]:
    """The report figures of one compile with the board's budget and stack, without stopping over budget."""
    if update is None:
        model = emit_c(graph, "m", source, BUDGET, STACK)
        report = build_report(model.graph or graph, model, source, TARGET, STACK)
        report.update(train_arena_bytes=0, infer_arena_bytes=report["arena_bytes"], gradient_bytes_peak=0)
        plain = emit_c(graph, "m", source).plan.arena_bytes
        striped = (model.graph or graph).nodes[0].op == STAGE_OP
    else:
        program = train_program(graph, TrainConfig(update, head))
        model = emit_train(program, "m", source, BUDGET, STACK)
        report = build_train_report(model, source, TARGET, STACK)
        plain = _plain_arena(program, source)
        striped = model.train.program.graph.nodes[0].op == STAGE_OP
    row = {k: report[k] for k in KEYS}
    if update is not None:
        code = model.train
        plan = code.plan if code.plan.arena_bytes >= code.infer_plan.arena_bytes else code.infer_plan
        big = max(code.params, key=lambda p: p.nbytes)
        row.update(largest_param=f"{big.tensor}, {_kb(big.nbytes)} KB", peak_node=plan.step_label(plan.peak_step))
    else:
        row.update(largest_param="-", peak_node=model.plan.step_label(model.plan.peak_step))
    first = (model.train.program.graph if update is not None else model.graph or graph).nodes[0]
    row.update(arena_plain_bytes=plain, striped=striped, fits=report["peak_sram_bytes"] <= BUDGET,
               stage=f"{first.name}, {stripe_text(first)}" if striped else "")
    return row


def _plain_arena(program: Any, source: str) -> int:
    model = emit_train(program, "m", source)
    return max(model.train.plan.arena_bytes, model.train.infer_plan.arena_bytes)


def _kb(n: int) -> str:
    return f"{n / 1024:.1f}"


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "# SRAM of one train step, by update spec (compile-time plan)", "",
        f"Made by `python bench/memory_table.py` (bench/memory_table.py). Target {TARGET}: budget 256 KB SRAM with "
        f"a {STACK // 1024} KB stack reserved. Sizes in KB (1024 bytes). Peak SRAM = arena (one static buffer for "
        "activations, saved activations, 1-bit masks and fp32 gradients, planned over the whole train step) + "
        "trainable parameters (static SRAM arrays; a partially trained weight keeps only its trained input channels "
        "in SRAM, the rest in flash) + PRNG state + output buffer + stack. Head `new:10`: a fresh fp32 10-class "
        "classifier (the paper's transfer setting); `keep`: the 1000-class int8 classifier, trained in full as "
        "the paper's schemes say. `striped`: the first layers run in row stripes (only when the plain plan is over "
        "the budget; `arena plain` is the arena without them). Rows that do not fit are measured all the same: "
        "their compile stops with the budget error.", "",
        "| model | update | head | peak SRAM | fits 256 KB | arena | arena plain | striped | trainable params "
        "| saved act. | masks | gradients at peak | flash | trained params | MACs fwd | MACs bwd |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['update_label']} | {r['head']} | {_kb(r['peak_sram_bytes'])} | "
            f"{'yes' if r['fits'] else 'NO'} | {_kb(r['arena_bytes'])} | {_kb(r['arena_plain_bytes'])} | "
            f"{'yes' if r['striped'] else ''} | {_kb(r['trainable_param_bytes'])} | "
            f"{_kb(r['saved_activation_bytes'])} | {_kb(r['mask_bytes'])} | {_kb(r['gradient_bytes_peak'])} | "
            f"{_kb(r['flash_bytes'])} | {r['trained_params']:,} | {r['macs_forward'] / 1e6:.1f} M | "
            f"{r['macs_backward'] / 1e6:.1f} M |")
    lines += ["", "## Rows over the budget", ""]
    for r in (r for r in rows if not r["fits"]):
        over = r["peak_sram_bytes"] - BUDGET
        lines.append(f"- {r['model']} {r['update_label']} {r['head']}: {_kb(over)} KB over; trainable parameters "
                     f"{_kb(r['trainable_param_bytes'])} KB (largest: {r['largest_param']}), arena "
                     f"{_kb(r['arena_bytes'])} KB of which {_kb(r['gradient_bytes_peak'])} KB fp32 gradients at its "
                     f"peak ({r['peak_node']})")
    lines += ["", "## Commands", ""]
    lines += [f"- {r['model']} {r['update_label']} {r['head']}: `{r['command']}`" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=str(REPO.parent / "shared" / "models"))
    p.add_argument("--only", help="one model, e.g. mbv2-w0.35")
    p.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = p.parse_args(argv)
    models = Path(args.models)
    rows = []
    for name, scheme in MODELS.items():
        if args.only and name != args.only:
            continue
        path = models / f"{name}-int8.onnx"
        graph = normalize(load(path))
        for update, head in runs(name, scheme, models):
            t0 = time.perf_counter()
            label = "inference" if update is None else (f"sparse {scheme}" if update.startswith("sparse") else update)
            out = f"{name}_{label.replace(' ', '_').replace(':', '_')}_{head.replace(':', '_')}"
            row = {"model": name, "update_label": label, "update": update or "none", "head": head,
                   "command": command(path, update, head, out), **measure(graph, path.name, update, head)}
            print(f"{name:15} {label:12} {head:7} peak {row['peak_sram_bytes']:>9,} B "
                  f"{'fits' if row['fits'] else 'over'} ({time.perf_counter() - t0:.2f} s)", flush=True)
            rows.append(row)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "memory.json").write_text(json.dumps({"target": TARGET, "budget_bytes": BUDGET, "stack_bytes": STACK,
                                                 "rows": rows}, indent=1) + "\n")
    (out / "memory.md").write_text(markdown(rows))
    print(f"wrote {out / 'memory.md'} and {out / 'memory.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
