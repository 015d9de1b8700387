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
from tte.passes.stripes import STAGE_OP, stripe_mode

# Cortex-M4 code sizes (arm-none-eabi-gcc 12, -Os), measured on the three paper models: about 800 bytes per
# runtime source file, about 136 bytes per node (the call and its static const parameter structs).
CODE_BASE_BYTES = 256
CODE_PER_SOURCE_BYTES = 800
CODE_PER_CALL_BYTES = 136
# Inference kernels keep a few words of state; the call chain from main() adds a little.
STACK_ESTIMATE_BYTES = 1024
# Train kernels sum in stack chunks (TTE_TRAIN_CHUNK floats); QEMU measured 2.4 KB for a paper model's step.
TRAIN_STACK_ESTIMATE_BYTES = 3 * 1024
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
            **({"stripes": stripe_text(node)} if node.op == STAGE_OP else {}),
        })
    return rows


def stripe_text(node: Any) -> str:
    """How a `stripe_stage` node runs: its stripe height and whether rows are kept (rolling) or recomputed."""
    rows, rolling = stripe_mode(node)
    return f"{rows} row{'s' if rows > 1 else ''} per stripe, {'rolling' if rolling else 'recomputing'}"


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
        ("arena (activations, input)" if report["update"] == "none" else "arena (all of the step)",
         report["arena_bytes"]),
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
    if report["update"] != "none":
        lines.append(f"  {'MACs backward':<24}{report['macs_backward']:>12,}")
        lines.append(f"  {'trained parameters':<24}{report['trained_params']:>12,}")
        peak = ", ".join(f"{k} {v:,} B" for k, v in report.get("peak_breakdown", {}).items())
        lines.append(f"  live at the step's peak: {peak}")
    if "auto" in report:  # --update auto: why this scheme
        from tte.auto.explain import explain_lines

        lines += explain_lines(report["auto"])
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
    kinds = sorted({b.get("kind", "") for b in plan["buffers"]} - {""})  # a train step: colour by kind
    seen: set[str] = set()
    for i, b in enumerate(plan["buffers"]):
        kind = b.get("kind", "")
        color = plt.get_cmap("tab10")(kinds.index(kind)) if kind in kinds else cmap(i % 20)
        label = kind if kind and kind not in seen else None
        seen.add(kind)
        ax.add_patch(plt.Rectangle((b["first"] - 0.45, b["offset"] / 1024), b["last"] - b["first"] + 0.9,
                                   max(b["size"], 1) / 1024, facecolor=color, edgecolor="black",
                                   linewidth=0.4, label=label))
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


# --- builds with a train step ------------------------------------------------------------------------------------


def _kind_bytes(plan: Any, kind: str) -> int:
    return sum(b.size for b in plan.buffers if plan.kinds.get(b.name) == kind)


def _peak_breakdown(plan: Any) -> dict[str, int]:
    """Bytes of each buffer kind live at the plan's peak step."""
    out: dict[str, int] = {}
    for b in plan.live_at(plan.peak_step):
        kind = plan.kinds.get(b.name, "activation")
        out[kind] = out.get(kind, 0) + b.size
    return dict(sorted(out.items()))


def train_layer_rows(model: CModel) -> list[dict[str, Any]]:
    """The inference rows, each with what the layer trains and what that costs (SRAM bytes, backward MACs)."""
    code = model.train
    assert code is not None
    tg = code.program
    g = tg.graph
    rows = layer_rows(code.infer_graph, model)
    backward: dict[str, int] = {}
    for n in tg.backward_nodes():
        layer = n.name.rsplit("/", 1)[0]
        backward[layer] = backward.get(layer, 0) + int(ops.get(n.op).macs(n, g))
    for row in rows:
        name = row["name"]
        lu = tg.spec.layer(name)
        row["trained"] = lu.describe() if lu is not None else "none"
        row["trained_channels"] = f"{len(lu.channels)}/{lu.in_channels}" if lu is not None and lu.weight else ""
        row["trained_param_bytes"] = sum(p.nbytes for p in code.params if p.layer == name)
        row["saved_activation_bytes"] = g[tg.saved[name]].nbytes if name in tg.saved else 0
        row["mask_bytes"] = g[tg.masks[name]].nbytes if name in tg.masks else 0
        row["macs_backward"] = backward.get(name, 0)
    return rows


def build_train_report(model: CModel, source: str, target: str, stack_bytes: int = STACK_ESTIMATE_BYTES
                       ) -> dict[str, Any]:
    """The report of a build with a train step: the inference report plus what training keeps in SRAM."""
    from tte.train import memory_summary

    code = model.train
    assert code is not None
    tg, plan = code.program, code.plan
    report = build_report(code.infer_graph, model, source, target, stack_bytes)
    arena = max(plan.arena_bytes, code.infer_plan.arena_bytes)
    calls = len(model.nodes) + len(code.nodes) + len(code.params)
    code_bytes = CODE_BASE_BYTES + CODE_PER_SOURCE_BYTES * len(model.runtime_sources) + CODE_PER_CALL_BYTES * calls
    summary = memory_summary(tg)
    options = tg.options
    report.update({
        "update": tg.spec.text, "head": options.head, "rounding": options.rounding, "qas": options.qas,
        "seed": options.seed,
        "arena_bytes": arena,
        "train_arena_bytes": plan.arena_bytes,
        "infer_arena_bytes": code.infer_plan.arena_bytes,
        "peak_live_bytes": plan.peak_live_bytes,
        "trainable_param_bytes": code.trainable_param_bytes,
        "optimizer_state_bytes": 0,  # plain SGD
        "saved_activation_bytes": _kind_bytes(plan, "saved"),
        "mask_bytes": _kind_bytes(plan, "mask"),
        "gradient_bytes_peak": _peak_breakdown(plan).get("gradient", 0),
        "other_static_bytes": code.rng_bytes,
        "peak_sram_bytes": arena + code.trainable_param_bytes + code.rng_bytes + model.io_bytes + stack_bytes,
        "params_bytes": code.params_bytes,
        "code_bytes_estimate": code_bytes,
        # the trainable arrays' initial values are .data: their image is in flash as well
        "flash_bytes": model.const_bytes + code_bytes + code.params_bytes,
        "trained_params": summary["trained_params"],
        "trained_layers": summary["trained_layers"],
        "macs_backward": summary["macs_backward"],
        "peak_breakdown": _peak_breakdown(plan),
        "layers": train_layer_rows(model),
    })
    report["memory_plan"]["buffers"] = [dict(b, kind=plan.kinds.get(b["name"], "")) for b in
                                        report["memory_plan"]["buffers"]]
    return report


def train_budget_error(report: dict[str, Any], model: CModel, budget: int) -> TteError:
    """The error of a train build over the SRAM budget: what is live at the peak and what to change."""
    code = model.train
    assert code is not None
    plan = code.plan if code.plan.arena_bytes >= code.infer_plan.arena_bytes else code.infer_plan
    live = ", ".join(f"{b.name} ({plan.kinds.get(b.name, 'activation')}, {b.size:,} B)"
                     for b in plan.live_at(plan.peak_step)[:4]) or "none"
    params = ", ".join(f"{p.tensor} ({p.nbytes:,} B)"
                       for p in sorted(code.params, key=lambda p: -p.nbytes)[:3])
    striped = " with its first layers in row stripes" if code.program.graph.nodes[0].op == STAGE_OP else ""
    return TteError(
        f"the train step needs {report['peak_sram_bytes']:,} bytes of SRAM{striped} (arena "
        f"{report['arena_bytes']:,}, trainable parameters {report['trainable_param_bytes']:,}, outputs "
        f"{model.io_bytes:,}, stack {report['stack_bytes_estimate']:,}), over the budget of {budget:,}; largest "
        f"live tensors at the peak, node {plan.step_label(plan.peak_step)}: {live}; largest trainable arrays: "
        f"{params}",
        hint="use a smaller update spec: fewer layers or channels, and none near the input (--update last:1, "
             "mobiletl:1 or a sparse scheme; bias-only and full send fp32 gradients down to the first layers), "
             "--head new:N for a small head, or a larger --budget")


def plan_text(model: CModel) -> str:
    """plan.txt: the memory plan (a train build: the train step's, the SRAM parameters, then inference's)."""
    code = model.train
    if code is None:
        return model.plan.to_text()
    lines = [f"train step ({model.name}_train_step, update {code.program.spec.text}):", code.plan.to_text(),
             f"trainable parameters and PRNG state: {code.params_bytes} bytes of static SRAM arrays "
             f"({model.name}_params_get order)",
             f"{'offset':>8} {'size':>8}  name"]
    lines += [f"{p.offset:>8} {p.nbytes:>8}  {p.tensor} ({p.describe()})" for p in code.params]
    lines += ["", f"inference ({model.name}_infer):", code.infer_plan.to_text()]
    return "\n".join(lines)
