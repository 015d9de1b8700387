"""Building a firmware project with make and arm-none-eabi-gcc, and reading the sizes of the result."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tte.errors import TteError
from tte.targets.boards import Board, get_board
from tte.targets.project import read_meta

TOOLCHAIN_HINT = ("install the toolchain: `make toolchain` in the tte repository, or `apt-get install "
                  "--no-install-recommends gcc-arm-none-eabi libnewlib-arm-none-eabi make`")
FLASH_SECTIONS = (".isr_vector", ".text", ".rodata", ".ARM.extab", ".ARM.exidx", ".init_array")
FW_NAME = "firmware"


class BuildError(TteError):
    """The firmware did not build (toolchain missing, link-time memory check failed, compile error)."""


@dataclass(frozen=True)
class ElfSizes:
    """Section sizes of a firmware ELF, in bytes (from `arm-none-eabi-size -A`)."""

    sections: dict[str, int]

    @property
    def text(self) -> int:
        """Code and constants in flash (vector table, .text, .rodata, unwind tables, init arrays)."""
        return sum(self.sections.get(s, 0) for s in FLASH_SECTIONS)

    @property
    def data(self) -> int:
        return self.sections.get(".data", 0)

    @property
    def bss(self) -> int:
        return self.sections.get(".bss", 0)

    @property
    def stack(self) -> int:
        return self.sections.get(".stack", 0)

    @property
    def heap(self) -> int:
        return self.sections.get(".heap", 0)

    @property
    def sram(self) -> int:
        """SRAM the firmware reserves: stack + .data + .bss + heap."""
        return self.stack + self.data + self.bss + self.heap

    @property
    def flash(self) -> int:
        """Flash the image takes: code, constants and the initial values of .data."""
        return self.text + self.data


@dataclass(frozen=True)
class BuildResult:
    """The products of a firmware build."""

    out: Path
    board: Board
    elf: Path
    bin: Path
    hex: Path
    sizes: ElfSizes
    log: str


def require_tool(name: str, hint: str = TOOLCHAIN_HINT) -> str:
    path = shutil.which(name)
    if path is None:
        raise BuildError(f"'{name}' is not on PATH", hint=hint)
    return path


def firmware_paths(out: str | os.PathLike, board: Board) -> tuple[Path, Path, Path]:
    """Where `make` puts the .elf, .bin and .hex of the project `out`."""
    base = Path(out) / "build" / board.name / FW_NAME
    return base.with_suffix(".elf"), base.with_suffix(".bin"), base.with_suffix(".hex")


def build(out: str | os.PathLike, *, jobs: int = 2, timeout: float = 600.0, check_budget: bool = True) -> BuildResult:
    """Run `make` in the firmware project `out`; the .elf/.bin/.hex, their section sizes and the build log.

    Raises BuildError with the reason (missing toolchain, SRAM or flash overflow at link time, compiler
    errors), and, when `check_budget`, if the firmware's SRAM exceeds the board's budget.
    """
    out = Path(out)
    board = get_board(read_meta(out)["board"])
    require_tool("make", hint="install make (`apt-get install make`)")
    require_tool("arm-none-eabi-gcc")
    try:
        proc = subprocess.run(["make", "-C", str(out), f"-j{jobs}"], capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise BuildError(f"building {out} took more than {timeout:.0f} s") from None
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise BuildError(explain_failure(log, board))
    elf, bin_, hex_ = firmware_paths(out, board)
    sizes = elf_sizes(elf)
    if check_budget:
        check_sram_budget(sizes, board)
    return BuildResult(out, board, elf, bin_, hex_, sizes, log)


def explain_failure(log: str, board: Board) -> str:
    """One line saying why a firmware build failed, from make's output."""
    overflow = re.search(r"region `(\w+)' overflowed by (\d+) bytes", log)
    if overflow:
        region, extra = overflow.group(1), int(overflow.group(2))
        size = board.sram_bytes if region == "SRAM" else board.flash_bytes
        what = "shrink the model, the update set or STACK_SIZE" if region == "SRAM" else "shrink the model"
        return (f"the firmware does not fit: {region} of {board.name} ({size // 1024} KB) overflowed by "
                f"{extra:,} bytes at link time; {what}")
    assertion = re.search(r"ld: (tte: [^\n]*)", log)
    if assertion:
        return f"the firmware for {board.name} did not link: {assertion.group(1)}"
    errors = [ln for ln in log.splitlines() if "error" in ln.lower()][:5]
    detail = " | ".join(e.strip() for e in errors) or log.strip().splitlines()[-1:]
    return f"the firmware for {board.name} did not build: {detail}"


def elf_sizes(elf: str | os.PathLike) -> ElfSizes:
    """Section name -> size of a firmware ELF (allocated sections only: debug sections are left out)."""
    tool = require_tool("arm-none-eabi-size")
    proc = subprocess.run([tool, "-A", str(elf)], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise BuildError(f"cannot read the sections of {elf}: {proc.stderr.strip()}")
    sections = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].startswith(".") and parts[1].isdigit():
            name, size, addr = parts[0], int(parts[1]), int(parts[2])
            if addr != 0 or name in (".isr_vector", ".text"):  # non-allocated sections have address 0
                sections[name] = size
    return ElfSizes(sections)


def check_sram_budget(sizes: ElfSizes, board: Board) -> None:
    """Fail when the firmware reserves more SRAM than the board's budget (the linker checks the chip's size)."""
    if sizes.sram > board.budget_bytes:
        raise BuildError(
            f"the firmware reserves {sizes.sram:,} bytes of SRAM (stack {sizes.stack:,}, .data {sizes.data:,}, "
            f".bss {sizes.bss:,}, heap {sizes.heap:,}), over the {board.name} budget of {board.budget_bytes:,}",
            hint="shrink the model or the update set, or lower STACK_SIZE in sources.mk")
