"""The `tte run` and `tte flash` commands (registered into the CLI by tte/cli.py)."""

from __future__ import annotations

import argparse
import json

from tte.errors import TteError


def _run(args: argparse.Namespace) -> int:
    if not args.emulator:
        raise TteError("`tte run` needs --emulator (QEMU)", hint="to run on a board, use `tte flash OUT`")
    from tte.targets.harness import run_emulator
    from tte.targets.project import has_train_step

    if has_train_step(args.out):
        return _train(args)
    if args.lr is not None or args.seed is not None:
        raise TteError(f"{args.out}: the model was compiled without a train step, --lr/--seed do not apply",
                       hint="compile with --update to train it")
    result = run_emulator(args.out, args.data, steps=args.steps, timeout=args.timeout, eval_data=args.eval)
    s = result.summary
    line = (f"{s['target']}: {s['samples']} inference(s) of {s['model']} in QEMU, "
            f"{s['instructions_per_inference']:,} instructions each, stack peak {s['stack_peak_bytes']:,} B, "
            f"text {s['elf_text']:,} B, data {s['elf_data']:,} B, bss {s['elf_bss']:,} B")
    if "accuracy" in s:
        line += f", accuracy {s['accuracy']:.4f}"
    print(line)
    print(json.dumps(s, sort_keys=True))
    return 0


def _train(args: argparse.Namespace) -> int:
    from tte.targets.harness import train_emulator

    kwargs = {"lr": args.lr} if args.lr is not None else {}
    run = train_emulator(args.out, args.data, args.steps, eval_data=args.eval, seed=args.seed, timeout=args.timeout,
                         params_dump=not args.no_params, **kwargs)
    s = run.summary

    def acc(v: float | None) -> str:
        return "-" if v is None else f"{v:.4f}"

    loss = f"{s['losses'][0]:.4f} -> {s['losses'][-1]:.4f}" if s["losses"] else "-"
    print(f"{s['target']}: {s['steps']} train step(s) of {s['model']} in QEMU, loss {loss}, accuracy "
          f"{acc(s['acc_before'])} -> {acc(s['acc_after'])}; {s['instructions_per_train_step'] or 0:,} "
          f"instructions per step, {s['instructions_per_inference']:,} per inference, stack peak "
          f"{s['stack_peak_bytes']:,} B, SRAM {s['sram_measured_bytes']:,} B")
    print(json.dumps(s, sort_keys=True))
    return 0


def _flash(args: argparse.Namespace) -> int:
    from tte.targets.flash import flash

    return flash(args.out, tool=args.tool, dry_run=args.dry_run)


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Add `run` and `flash` to the `tte` command line; each sets `func(args) -> exit status`."""
    p = subparsers.add_parser("run", help="run a compiled model's firmware in QEMU and measure it")
    p.add_argument("out", help="the folder `tte compile --target cortex-m4|cortex-m7|stm32f746` wrote")
    p.add_argument("--emulator", action="store_true", help="run in qemu-system-arm (the only mode so far)")
    p.add_argument("--data", required=True, help=".npz with samples x (float in the model's layout, or int8 "
                   "NHWC) and optional labels y")
    p.add_argument("--eval", help=".npz to evaluate before and after training (inference firmware: run it "
                   "instead of --data)")
    p.add_argument("--steps", type=int, help="train steps, one per --data sample in file order, wrapping around "
                   "(inference: run only the first N samples); default: one pass")
    p.add_argument("--lr", type=float, help="learning rate of the train steps (default: as `tte simulate`)")
    p.add_argument("--seed", type=int, help="seed of the firmware's rounding PRNG (default: the compiled one)")
    p.add_argument("--no-params", action="store_true", help="do not send the trained parameters back (saves "
                   "their size in SRAM; params_sha256 is then null)")
    p.add_argument("--timeout", type=float, help="seconds before QEMU is stopped (default: 60 + 5 per sample)")
    p.set_defaults(func=_run)

    p = subparsers.add_parser("flash", help="program the built firmware into a board (pyocd, st-flash, openocd)")
    p.add_argument("out", help="a firmware folder, built with `make -C OUT`")
    p.add_argument("--tool", choices=("pyocd", "st-flash", "openocd"), help="flashing tool (default: first on PATH)")
    p.add_argument("--dry-run", action="store_true", help="print the command without running it")
    p.set_defaults(func=_flash)
