"""The `tte` command line: compile, report, simulate, quantize (and run / flash from tte.targets when present).

Every `TteError` (a user mistake) becomes one line on stderr, `tte: error: ...`, and exit status 2; any other
exception is a bug in tte and propagates with its traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from tte.errors import TteError


def _train_config(args: argparse.Namespace):  # -> tte.compile.TrainConfig | None
    from tte.compile import TrainConfig

    if args.update is None:
        given = [flag for flag, value in (("--head", args.head), ("--rounding", args.rounding),
                                          ("--no-qas", args.no_qas or None), ("--seed", args.seed))
                 if value is not None]
        if given:
            raise TteError(f"{', '.join(given)} only apply to a train step",
                           hint="add --update (e.g. --update last:1 to train only the classifier)")
        return None
    return TrainConfig(args.update, args.head or "keep", args.rounding or "stochastic", not args.no_qas,
                       1 if args.seed is None else args.seed)


def _auto_options(args: argparse.Namespace) -> dict:
    """The options of `--update auto` (data of the contribution analysis, MAC budget), checked."""
    given = {key: value for key, value in (("data", args.data), ("eval_data", args.eval),
                                           ("mac_budget", args.mac_budget)) if value is not None}
    if given and (args.update or "").strip() != "auto":
        flags = {"data": "--data", "eval_data": "--eval", "mac_budget": "--mac-budget"}
        raise TteError(f"{', '.join(flags[k] for k in given)} only apply to --update auto",
                       hint="add --update auto --budget SIZE, or drop them")
    if (args.update or "").strip() == "auto":
        given["progress"] = not args.quiet
    return given


def _compile(args: argparse.Namespace) -> int:
    from tte import compile as compiler
    from tte import report

    rep = compiler.compile_model(args.model, args.output, name=args.name, target=args.target, budget=args.budget,
                                 train=_train_config(args), **_auto_options(args))
    trained = "" if rep["update"] == "none" else (f", update {rep['update']}: {rep['trained_params']:,} trained "
                                                  f"parameters ({rep['trainable_param_bytes']:,} B)")
    print(f"wrote {args.output}: arena {rep['arena_bytes']:,} B, flash {rep['flash_bytes']:,} B, "
          f"peak SRAM {rep['peak_sram_bytes']:,} B{trained}")
    if "auto" in rep:
        auto = rep["auto"]
        times = ", ".join(f"{k} {v:g}" for k, v in auto.get("timings_s", {}).items())
        print(f"--update auto ({auto['method']}): {len(auto['chosen'])} items chosen for a budget of "
              f"{auto['budget_bytes']:,} B, scheme in {Path(args.output) / 'scheme.json'} ({times})")
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
    p.add_argument("--budget", help="SRAM budget, in bytes or KB (e.g. 256KB; default: the board's); over it the "
                   "first layers run in row stripes when that helps, and a compile still over it fails")
    p.add_argument("-v", "--verbose", action="store_true", help="print the memory breakdown")
    t = p.add_argument_group("training (with --update the C has a train step)")
    t.add_argument("--update", help="what the train step trains: bias-only, last:N, full, mobiletl:K, "
                   "sparse:FILE[#model/scheme] (JSON/YAML) or auto (chosen to fit --budget; see --data)")
    t.add_argument("--head", help="the classifier: keep (default), fp32, or new:N (a fresh fp32 head of N classes)")
    t.add_argument("--rounding", choices=("stochastic", "nearest"), help="rounding of the int8/int32 updates "
                   "(default stochastic)")
    t.add_argument("--no-qas", action="store_true", help="plain SGD on the integers instead of quantization-aware "
                   "scaling (the paper's ablation)")
    t.add_argument("--seed", type=int, help="initial seed of the stochastic rounding's PRNG (default 1)")
    a = p.add_argument_group("--update auto (writes OUT/scheme.json; `tte report OUT` explains the choice)")
    a.add_argument("--data", help=".npz (x, y) for the contribution analysis: short fine-tuning runs that measure "
                   "what each layer's bias and weights add (without it: a data-free heuristic)")
    a.add_argument("--eval", help=".npz (x, y) the contribution runs are measured on (default: --data)")
    a.add_argument("--mac-budget", type=int, help="at most this many backward MACs per train step")
    a.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_compile)


def _simulate(args: argparse.Namespace) -> int:
    import json

    from tte.simulate import simulate

    s = simulate(args.out, args.data, eval_data=args.eval, epochs=args.epochs, lr=args.lr, steps=args.steps,
                 seed=args.seed, progress=not args.quiet)
    loss = f"{s['losses'][0]:.4f} -> {s['losses'][-1]:.4f}" if s["losses"] else "-"
    print(f"host: {s['steps']} train step(s) of {s['model']}, loss {loss}, accuracy {s['acc_before']:.4f} -> "
          f"{s['acc_after']:.4f}, parameters sha256 {s['params_sha256'][:16]}")
    print(json.dumps(s))  # the last line: the keys `tte run --emulator` prints, to compare the two
    return 0


def _add_simulate(sub: argparse._SubParsersAction) -> None:
    from tte.simulate import DEFAULT_LR

    p = sub.add_parser("simulate", help="train a compiled model on the host (the same C, through cffi)")
    p.add_argument("out", help="the folder `tte compile --update ...` wrote")
    p.add_argument("--data", required=True, help=".npz with x (inputs as the model takes them) and y (labels)")
    p.add_argument("--eval", help=".npz to measure accuracy on before and after training (default: --data)")
    p.add_argument("--epochs", type=int, default=1, help="passes over --data, samples in file order (default 1)")
    p.add_argument("--steps", type=int, help="train steps instead of whole epochs (wrapping around --data)")
    p.add_argument("--lr", type=float, default=DEFAULT_LR, help=f"learning rate (default {DEFAULT_LR})")
    p.add_argument("--seed", type=int, help="seed the rounding PRNG first (default: the compiled seed)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_simulate)


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
    _add_simulate(sub)
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
