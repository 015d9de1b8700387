"""The compiler pipeline as pure functions: load -> passes -> plan + emit -> report -> files -> output folder.

`compile_model` is what `tte compile` runs. Every stage before `write_output` works in memory, so a failing
compile writes nothing; `write_output` fills a temporary folder beside OUT and renames it at the end.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from codegen.emit import RUNTIME_DIR, TEMPLATES, CModel, c_identifier, check_name, emit_c, signature
from tte import report as report_mod
from tte.errors import TteError
from tte.ir import Graph
from tte.passes.normalize import normalize

# -ffp-contract=off: no fused multiply-add, so the train step's floats have the bits of the Cortex-M build.
HOST_CFLAGS = ("-std=c99", "-O2", "-ffp-contract=off", "-Wall", "-Wextra", "-fPIC")
_MARKERS = ("report.json", "model.json")  # files that show a folder is a tte output


@dataclass(frozen=True)
class TrainConfig:
    """`tte compile --update ... --head ... --rounding ... [--no-qas] [--seed S]`: what the train step trains."""

    update: str
    head: str = "keep"
    rounding: str = "stochastic"
    qas: bool = True
    seed: int = 1
    # a resolved scheme dict (`sparse:` file format) that replaces `update`'s parsing: what `--update auto` chose
    scheme: Any = None

    def options(self) -> Any:
        from tte.train import TrainOptions

        return TrainOptions(head=self.head, rounding=self.rounding, qas=self.qas, seed=self.seed)


@dataclass(frozen=True)
class Compiled:
    """A compiled model in memory: the output folder's files (relative path -> text) and its report."""

    files: dict[str, str]
    report: dict[str, Any]
    model: CModel


def load(path: str | os.PathLike) -> Graph:
    """Import an ONNX or TFLite model (user errors for a missing, garbage or unsupported file)."""
    path = Path(path)
    if not path.is_file():
        raise TteError(f"{path}: no such model file", hint="give the path of a .onnx or .tflite model")
    from tte.frontend import load as frontend_load

    try:
        return frontend_load(path)
    except TteError as e:  # say which file, once
        if path.name not in str(e):
            e.args = (f"{path.name}: {e}",)
        raise


def parse_budget(text: str | int | None) -> int | None:
    """`262144`, `256KB`, `256K`, `0.25MB` -> bytes (KB = 1024 bytes)."""
    if text is None or isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(b|k|kb|kib|m|mb|mib)?\s*", text.lower())
    if not m:
        raise TteError(f"budget '{text}' is not a size", hint="write it as bytes (262144) or KB (256KB)")
    scale = {None: 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1 << 20, "mb": 1 << 20, "mib": 1 << 20}
    return int(float(m.group(1)) * scale[m.group(2)])


def default_name(path: str | os.PathLike) -> str:
    """A C identifier from the model file name (`mbv2-w0.35-int8.onnx` -> `mbv2_w0_35_int8`)."""
    return c_identifier(Path(path).stem).lower()


def check_budget(report: dict[str, Any], model: CModel, budget: int | None) -> None:
    """Fail when the SRAM the model needs exceeds the budget, naming the largest tensors live at the peak."""
    if budget is None or report["peak_sram_bytes"] <= budget:
        return
    if model.train is not None:
        raise report_mod.train_budget_error(report, model, budget)
    plan = model.plan
    live = plan.live_at(plan.peak_step)[:4]
    tensors = ", ".join(f"{b.name} ({b.size:,} B)" for b in live) or "none"
    raise TteError(
        f"the model needs {report['peak_sram_bytes']:,} bytes of SRAM (arena {plan.arena_bytes:,}, outputs "
        f"{model.io_bytes:,}, stack {report['stack_bytes_estimate']:,}), over the budget of {budget:,}; "
        f"largest live tensors at the peak, node {plan.step_label(plan.peak_step)}: {tensors}",
        hint="use a smaller input resolution or width, or a larger --budget",
    )


def boards() -> dict[str, Any]:
    """The Cortex-M boards of tte.targets (none when that package is absent)."""
    try:
        from tte.targets import BOARDS
    except ImportError:
        return {}
    return dict(BOARDS)


def targets() -> tuple[str, ...]:
    return ("host", *sorted(boards()))


def train_program(graph: Graph, train: TrainConfig) -> Any:
    """The train step of a normalized graph: head, update spec, autodiff (tte.train; user errors from there)."""
    from tte.train import apply_head, build_training_graph, parse_head, parse_update

    options = train.options()
    forward = apply_head(graph, parse_head(train.head))
    if train.scheme is not None:
        from tte.train.spec import scheme_spec

        return build_training_graph(forward, scheme_spec(train.scheme, forward, text=train.update), options)
    return build_training_graph(forward, parse_update(train.update, forward), options)


def build(graph: Graph, name: str, target: str = "host", source: str = "", budget: int | None = None,
          train: TrainConfig | None = None) -> Compiled:
    """Passes, memory plan, C, report and the other output files of `graph`, all in memory.

    For a board target the output is also a firmware project (tte.targets), and the budget defaults to the
    board's SRAM budget. With `train` the C also has the train step (codegen/emit_train.py).
    """
    board = boards().get(target)
    if target != "host" and board is None:
        raise TteError(f"unknown target '{target}'", hint=f"choose one of: {', '.join(targets())}")
    check_name(name)
    graph = normalize(graph)
    stack = _board_stack() if board else (report_mod.STACK_ESTIMATE_BYTES if train is None
                                          else report_mod.TRAIN_STACK_ESTIMATE_BYTES)
    budget = budget if budget is not None or board is None else board.budget_bytes
    if train is None:
        model = emit_c(graph, name, source, budget, stack)
        graph = model.graph or graph
        report = report_mod.build_report(graph, model, source or graph.name, target, stack)
    else:
        from codegen.emit_train import emit_train

        model = emit_train(train_program(graph, train), name, source, budget, stack)
        report = report_mod.build_train_report(model, source or graph.name, target, stack)
    check_budget(report, model, budget)
    files = dict(model.files)
    files.update(runtime_files(model))
    files["Makefile"] = host_makefile(model)
    if board is not None:
        check_flash(report, board)
        files.update(firmware(model, board))
    files["report.json"] = json.dumps(report, indent=1) + "\n"
    files["model.json"] = json.dumps(model_json(model), indent=1) + "\n"
    files["plan.txt"] = report_mod.plan_text(model)
    files["ir.txt"] = graph.dump() if model.train is None else model.train.program.graph.dump()
    return Compiled(files, report, model)


def _board_stack() -> int:
    from tte.targets import DEFAULT_STACK_BYTES

    return DEFAULT_STACK_BYTES


def check_flash(report: dict[str, Any], board: Any) -> None:
    if report["flash_bytes"] > board.flash_bytes:
        raise TteError(f"the model needs about {report['flash_bytes']:,} bytes of flash, {board.name} has "
                       f"{board.flash_bytes:,}", hint="use a smaller model")


def firmware(model: CModel, board: Any) -> dict[str, str]:
    """The files that make the output folder a firmware project for `board` (Makefile, start-up, harness)."""
    from tte.targets import firmware_files

    return firmware_files(board, model.name, c_sources(model), input_sizes=[b.size for b in model.inputs],
                          output_sizes=[b.size for b in model.outputs], stack_bytes=_board_stack(),
                          output_dtypes=[b.dtype for b in model.outputs])


def runtime_files(model: CModel) -> dict[str, str]:
    """The runtime_c headers and the kernel sources the model calls, copied into the output."""
    files = {f"runtime_c/include/{h}": (RUNTIME_DIR / "include" / h).read_text() for h in model.runtime_headers}
    for src in model.runtime_sources:
        files[f"runtime_c/src/{src}"] = (RUNTIME_DIR / "src" / src).read_text()
    return files


def c_sources(model: CModel) -> list[str]:
    """The C files to compile, relative to the output folder."""
    return [f"{model.name}.c", f"{model.name}_weights.c", *(f"runtime_c/src/{s}" for s in model.runtime_sources)]


def host_makefile(model: CModel) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)),
                             keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    return env.get_template("Makefile.host.j2").render(name=model.name, sources=c_sources(model),
                                                       cflags=" ".join(HOST_CFLAGS))


def model_json(model: CModel) -> dict[str, Any]:
    """What `tte.host` needs to call the model: entry point, sources and the IO specs."""

    def io(b: Any) -> dict[str, Any]:
        return {"param": b.param, "tensor": b.spec.tensor, "shape": list(b.shape), "dtype": b.dtype,
                "scale": b.scale, "zero_point": b.zero_point, "user_shape": list(b.spec.shape),
                "layout": b.spec.layout, "is_float": b.spec.is_float}

    meta = {
        "name": model.name,
        "entry": f"{model.name}_infer",
        "signature": signature(model.name, model.inputs, model.outputs),
        "sources": c_sources(model),
        "include": ["runtime_c/include"],
        "cflags": list(HOST_CFLAGS),
        "inputs": [io(b) for b in model.inputs],
        "outputs": [io(b) for b in model.outputs],
    }
    if model.train is not None:
        meta["train"] = train_json(model)
    return meta


def train_json(model: CModel) -> dict[str, Any]:
    """The train API of a model compiled with --update: prototypes, the parameter blob's layout, defaults."""
    from codegen.emit_train import train_cdefs

    code = model.train
    assert code is not None
    options = code.program.options
    return {
        "entry": f"{model.name}_train_step",
        "cdefs": train_cdefs(model.name),
        "classes": code.classes,
        "params_bytes": code.params_bytes,
        "params": [{"tensor": p.tensor, "layer": p.layer, "kind": p.kind, "dtype": p.dtype, "shape": list(p.shape),
                    "offset": p.offset, "bytes": p.nbytes,
                    "columns": list(p.columns) if p.columns is not None else None} for p in code.params],
        "update": code.program.spec.text,
        "head": options.head,
        "rounding": options.rounding,
        "qas": options.qas,
        "seed": options.seed,
        "default_rng_state": code.default_seed,
    }


def write_output(out: str | os.PathLike, files: dict[str, str]) -> Path:
    """Write `files` into OUT through a temporary folder beside it, replacing an earlier tte output."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not any((out / m).exists()
                                                                            for m in _MARKERS))):
        raise TteError(f"{out} exists and is not a tte output folder", hint="choose another -o folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for rel, text in sorted(files.items()):
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        if out.exists():
            out.rename(old)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return out


def compile_graph(graph: Graph, out: str | os.PathLike, name: str | None = None, target: str = "host",
                  budget: int | str | None = None, source: str = "", train: TrainConfig | None = None
                  ) -> dict[str, Any]:
    """Compile an IR graph into the folder OUT; returns the report."""
    compiled = build(graph, name or c_identifier(graph.name).lower(), target, source, parse_budget(budget), train)
    write_output(out, compiled.files)
    return compiled.report


def compile_model(model: str | os.PathLike, out: str | os.PathLike, name: str | None = None,
                  target: str = "host", budget: int | str | None = None,
                  train: TrainConfig | None = None, **auto: Any) -> dict[str, Any]:
    """`tte compile`: import the model file and compile it into OUT; returns the report.

    `--update auto` goes through tte.auto.driver; `auto` holds its options (data, eval_data, mac_budget,
    progress)."""
    budget = parse_budget(budget)
    check_name(name or default_name(model))
    if train is not None and train.update.strip() == "auto":
        from tte.auto.driver import compile_auto

        return compile_auto(model, out, train, budget, name, target, **auto)
    if auto:
        raise TteError(f"{', '.join(sorted(auto))} only apply to --update auto", hint="add --update auto")
    graph = load(model)
    return compile_graph(graph, out, name or default_name(model), target, budget, Path(model).name, train)
