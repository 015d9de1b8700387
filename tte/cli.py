"""The `tte` command line: compile, report, quantize (and run / flash from tte.targets when present).

Every `TteError` (a user mistake) becomes one line on stderr, `tte: error: ...`, and exit status 2; any other
exception is a bug in tte and propagates with its traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from tte.errors import TteError


def _compile(args: argparse.Namespace) -> int:
    from tte import compile as compiler
    from tte import report

    rep = compiler.compile_model(args.model, args.output, name=args.name, target=args.target, budget=args.budget)
    print(f"wrote {args.output}: arena {rep['arena_bytes']:,} B, flash {rep['flash_bytes']:,} B, "
          f"peak SRAM {rep['peak_sram_bytes']:,} B")
    if args.verbose:
        print(report.summary(rep), end="")
    return 0


def _report(args: argparse.Namespace) -> int:
    from tte import report

    rep = report.read(args.out)
    print(report.summary(rep), end="")
    png = Path(args.png) if args.png else Path(args.out) / "memory.png"
    report.plot_timeline(rep, png)
    print(f"memory timeline: {png}")
    return 0


def _quantize(args: argparse.Namespace) -> int:
    from tte.quantize import quantize

    quantize(args.model, args.calib, args.output, fmt=args.format, per_channel=not args.per_tensor)
    print(f"wrote {args.output}")
    return 0


def _add_compile(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compile", help="compile an int8 ONNX or TFLite model into C")
    p.add_argument("model", help="the model file (.onnx or .tflite)")
    p.add_argument("-o", "--output", required=True, help="output folder (replaced if it is an earlier output)")
    p.add_argument("--target", default="host", help="host (default), cortex-m4, cortex-m7 or stm32f746")
    p.add_argument("--name", help="C symbol prefix (default: from the model file name)")
    p.add_argument("--budget", help="SRAM budget, in bytes or KB (e.g. 256KB); the compile fails over it")
    p.add_argument("-v", "--verbose", action="store_true", help="print the memory breakdown")
    p.set_defaults(func=_compile)


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="memory breakdown of a compiled model (table + PNG timeline)")
    p.add_argument("out", help="the folder `tte compile` wrote")
    p.add_argument("--png", help="where to write the memory timeline (default: OUT/memory.png)")
    p.set_defaults(func=_report)


def _add_quantize(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quantize", help="quantize a float ONNX model to int8 with onnxruntime")
    p.add_argument("model", help="float ONNX model")
    p.add_argument("--calib", required=True, help=".npz of calibration inputs (one array per model input)")
    p.add_argument("-o", "--output", required=True, help="the int8 ONNX model to write")
    p.add_argument("--format", choices=("qdq", "qoperator"), default="qdq")
    p.add_argument("--per-tensor", action="store_true", help="per-tensor weights (default: per channel)")
    p.set_defaults(func=_quantize)


def _add_target_commands(sub: argparse._SubParsersAction) -> None:
    """`tte run` and `tte flash` come from tte.targets, when that package provides them."""
    try:
        from tte.targets.commands import add_parsers
    except ImportError:
        return
    add_parsers(sub)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tte", description="int8 models in, C for Cortex-M (and the host) out")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_compile(sub)
    _add_report(sub)
    _add_quantize(sub)
    _add_target_commands(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `tte` console script; returns the exit status."""
    args = parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except TteError as e:
        message = " ".join(str(e).split())  # always one line
        print(f"tte: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
