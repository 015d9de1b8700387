"""`tte flash`: program a built firmware into a real board with the first flashing tool found on PATH.

Tools, in order of preference: pyocd (the .hex), st-flash (the .bin at the flash address), openocd (the .hex).
The firmware writes its results through semihosting: keep the probe attached with semihosting enabled (pyocd
gdbserver --semihosting, or openocd's `arm semihosting enable`) to see them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tte.errors import TteError
from tte.targets.boards import Board, get_board
from tte.targets.build import firmware_paths
from tte.targets.project import read_meta

TOOLS = ("pyocd", "st-flash", "openocd")
INSTALL_HINT = ("no flashing tool on PATH; install one of: `pip install pyocd` (then `pyocd pack install "
                "stm32f746ng` once), `apt-get install stlink-tools` (st-flash), `apt-get install openocd`")


@dataclass(frozen=True)
class FlashPlan:
    """The command that programs the firmware, and the tool it uses."""

    tool: str
    command: tuple[str, ...]


def flash_command(tool: str, board: Board, elf: Path, bin_: Path, hex_: Path) -> tuple[str, ...]:
    """The command line of `tool` that writes the firmware into `board`."""
    if tool == "pyocd":
        return ("pyocd", "flash", "--target", str(board.pyocd_target), str(hex_))
    if tool == "st-flash":
        return ("st-flash", "--reset", "write", str(bin_), hex(board.flash_address or 0))
    if tool == "openocd":
        return ("openocd", "-f", str(board.openocd_config), "-c", f"program {hex_} verify reset exit")
    raise TteError(f"unknown flashing tool '{tool}'", hint=f"choose one of: {', '.join(TOOLS)}")


def plan_flash(out: str | os.PathLike, tool: str | None = None) -> FlashPlan:
    """Which tool and command would flash the firmware built in `out` (a TteError says what is missing)."""
    out = Path(out)
    board = get_board(read_meta(out)["board"])
    if board.flash_address is None:
        raise TteError(f"{board.name} is an emulator target ({board.description}): there is no board to flash",
                       hint="compile with --target stm32f746 for the STM32F746G-DISCO, or use `tte run --emulator`")
    elf, bin_, hex_ = firmware_paths(out, board)
    if not (bin_.is_file() and hex_.is_file()):
        raise TteError(f"{out} has no built firmware ({bin_.name}, {hex_.name})", hint=f"build it: make -C {out}")
    if tool is not None:
        if tool not in TOOLS:
            raise TteError(f"unknown flashing tool '{tool}'", hint=f"choose one of: {', '.join(TOOLS)}")
        if shutil.which(tool) is None:
            raise TteError(f"'{tool}' is not on PATH", hint=INSTALL_HINT.split("; ", 1)[1])
        return FlashPlan(tool, flash_command(tool, board, elf, bin_, hex_))
    for candidate in TOOLS:
        if shutil.which(candidate) is not None:
            return FlashPlan(candidate, flash_command(candidate, board, elf, bin_, hex_))
    raise TteError(INSTALL_HINT)


def flash(out: str | os.PathLike, tool: str | None = None, dry_run: bool = False, timeout: float = 300.0) -> int:
    """Flash the firmware in `out`; prints the command, returns the tool's exit status (0 when dry_run)."""
    plan = plan_flash(out, tool)
    print(" ".join(plan.command))
    if dry_run:
        return 0
    try:
        return subprocess.run(plan.command, timeout=timeout, stdin=subprocess.DEVNULL).returncode
    except subprocess.TimeoutExpired:
        raise TteError(f"{plan.tool} did not finish within {timeout:.0f} s", hint="is the board connected?") from None
