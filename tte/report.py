"""`report.json`: what a compiled model costs (DESIGN.md section 6), its text summary and the PNG timeline.

Inference-only builds report zero for the training figures (trainable parameters, optimizer state, saved
activations, masks), so every report has the same keys. Code size and stack are estimates until a target
build measures them (`tte run` adds `elf_text`, `stack_peak_bytes`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from codegen.emit import CModel
from tte import ops
from tte.errors import TteError
from tte.ir import Graph

# Cortex-M4 code sizes (arm-none-eabi-gcc 12, -Os), measured on the three paper models: about 800 bytes per
# runtime source file, about 136 bytes per node (the call and its static const parameter structs).
CODE_BASE_BYTES = 256
CODE_PER_SOURCE_BYTES = 800
CODE_PER_CALL_BYTES = 136
# Inference kernels keep a few words of state; the call chain from main() adds a little.
STACK_ESTIMATE_BYTES = 1024
# Figures `tte run` adds to report.json (report key, label).
MEASURED = (("elf_text", "ELF .text (flash)"), ("elf_data", "ELF .data"), ("elf_bss", "ELF .bss (SRAM)"),
            ("stack_peak_bytes", "stack peak"))


def layer_rows(graph: Graph, model: CModel) -> list[dict[str, Any]]:
    """Per node: op, output shape, MACs, const bytes and what is trained (nothing, for inference)."""
    rows = []
    for code in model.nodes:
        node = code.node
        rows.append({
            "name": node.name,
            "op": node.op,
            "output_shape": list(graph[node.outputs[0]].shape),
            "macs": int(ops.get(node.op).macs(node, graph)),
            "const_bytes": code.const_bytes,
            "trained": "none",
        })
    return rows


def build_report(graph: Graph, model: CModel, source: str, target: str,
                 stack_bytes: int = STACK_ESTIMATE_BYTES) -> dict[str, Any]:
    """The report of an inference build (all sizes in bytes); `stack_bytes`: the stack the target reserves."""
    plan = model.plan
    code = CODE_BASE_BYTES + CODE_PER_SOURCE_BYTES * len(model.runtime_sources) + CODE_PER_CALL_BYTES * len(
        model.nodes)
    layers = layer_rows(graph, model)
    peak_sram = plan.arena_bytes + model.io_bytes + stack_bytes
    return {
        "model": source,
        "name": model.name,
        "target": target,
        "update": "none",
        "arena_bytes": plan.arena_bytes,
        "peak_live_bytes": plan.peak_live_bytes,
        "io_bytes": model.io_bytes,
        "trainable_param_bytes": 0,
        "optimizer_state_bytes": 0,
        "saved_activation_bytes": 0,
        "mask_bytes": 0,
        "other_static_bytes": 0,
        "stack_bytes_estimate": stack_bytes,
        "peak_sram_bytes": peak_sram,
        "const_bytes": model.const_bytes,
        "code_bytes_estimate": code,
        "flash_bytes": model.const_bytes + code,
        "trained_params": 0,
        "macs_forward": sum(row["macs"] for row in layers),
        "macs_backward": 0,
        "layers": layers,
        "memory_plan": {
            "alignment": plan.alignment,
            "peak_step": plan.peak_step,
            "steps": list(plan.step_names),
            "buffers": [
                {"name": b.name, "offset": plan.offsets[b.name], "size": b.size, "first": b.first, "last": b.last}
                for b in sorted(plan.buffers, key=lambda b: (plan.offsets[b.name], b.first, b.name))
            ],
        },
    }


def read(out: Path) -> dict[str, Any]:
    """The report.json of a compiled output folder."""
    path = Path(out) / "report.json"
    if not path.is_file():
        raise TteError(f"{out}: no report.json", hint="run `tte compile MODEL -o OUT` first")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise TteError(f"{path}: not a valid report ({e.msg})", hint="compile the model again") from None


def _kb(n: int) -> str:
    return f"{n:>10,} B {n / 1024:>9.1f} KB"


def summary(report: dict[str, Any]) -> str:
    """The memory breakdown as a text table."""
    rows = [
        ("arena (activations, input)", report["arena_bytes"]),
        ("output buffers (caller)", report["io_bytes"]),
        ("trainable parameters", report["trainable_param_bytes"]),
        ("optimizer state", report["optimizer_state_bytes"]),
        ("saved activations", report["saved_activation_bytes"]),
        ("masks", report["mask_bytes"]),
        ("other static", report["other_static_bytes"]),
        ("stack (estimate)", report["stack_bytes_estimate"]),
        ("peak SRAM", report["peak_sram_bytes"]),
        ("const data (weights)", report["const_bytes"]),
        ("code (estimate)", report["code_bytes_estimate"]),
        ("flash", report["flash_bytes"]),
    ]
    lines = [f"model {report['model']} as '{report['name']}' for {report['target']} (update: {report['update']})"]
    lines += [f"  {label:<24}{_kb(n)}" for label, n in rows]
    measured = [(label, report[key]) for key, label in MEASURED if key in report]
    if measured:
        lines.append(f"  measured ({report.get('measured_on', 'target build')}):")
        lines += [f"  {label:<24}{_kb(n)}" for label, n in measured]
    if "instructions_per_inference" in report:
        lines.append(f"  {'instructions/inference':<24}{report['instructions_per_inference']:>12,}")
    lines.append(f"  {'MACs forward':<24}{report['macs_forward']:>12,}")
    lines.append(f"  {'layers':<24}{len(report['layers']):>12}")
    largest = sorted(report["memory_plan"]["buffers"], key=lambda b: -b["size"])[:3]
    if largest:
        lines.append("  largest buffers: " + ", ".join(f"{b['name']} ({b['size']:,} B)" for b in largest))
    return "\n".join(lines) + "\n"


def plot_timeline(report: dict[str, Any], png: Path) -> None:
    """The memory plan as a picture: one rectangle per buffer (x = steps alive, y = arena offset)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plan = report["memory_plan"]
    fig, ax = plt.subplots(figsize=(10, 5), dpi=100)
    cmap = plt.get_cmap("tab20")
    for i, b in enumerate(plan["buffers"]):
        ax.add_patch(plt.Rectangle((b["first"] - 0.45, b["offset"] / 1024), b["last"] - b["first"] + 0.9,
                                   max(b["size"], 1) / 1024, facecolor=cmap(i % 20), edgecolor="black",
                                   linewidth=0.4))
    steps = max(len(plan["steps"]), 1)
    ax.set_xlim(-1, steps)
    ax.set_ylim(0, max(report["arena_bytes"], 1) / 1024 * 1.05)
    ax.axhline(report["arena_bytes"] / 1024, color="red", linestyle="--", linewidth=1,
               label=f"arena {report['arena_bytes'] / 1024:.1f} KB")
    ax.set_xlabel("step (node)")
    ax.set_ylabel("arena offset (KB)")
    ax.set_title(f"{report['name']}: memory plan ({len(plan['buffers'])} buffers)")
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(png, metadata={"Software": None})
    plt.close(fig)
