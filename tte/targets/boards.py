"""The Cortex-M boards tte builds firmware for, and where their files live.

Each board has a folder `targets/<name>/` (linker script `board.ld`, compiler and QEMU settings `board.mk`); the
files every board shares (start-up code, semihosting, counters, Makefile) are in `targets/common/`. The table
here mirrors `board.mk` for the Python side (tests check that the two agree).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tte.errors import TteError

# The repository's targets/ folder (tte is installed editable: `pip install -e .`).
TARGETS_DIR = Path(__file__).resolve().parents[2] / "targets"
COMMON_DIR = TARGETS_DIR / "common"

KB = 1024

# Under `-icount shift=0` QEMU's virtual clock advances 1 ns per instruction and the mps2 SysTick ticks at
# 25 MHz: one tick every 40 instructions. Measured with targets/selftest (`loop N`: 4 instructions per
# iteration, 10^6 iterations -> 100000 ticks), and checked by tests/test_targets.py.
QEMU_INSTRUCTIONS_PER_TICK = 40


@dataclass(frozen=True)
class Board:
    """One target board: compiler flags, how QEMU emulates it, and its memory."""

    name: str
    description: str
    cpu_flags: tuple[str, ...]
    qemu_machine: str
    qemu_cpu: str
    qemu_extra: tuple[str, ...]
    sram_bytes: int  # enforced by the linker script
    flash_bytes: int  # enforced by the linker script
    budget_bytes: int  # SRAM the firmware may use (checked by tte; at most sram_bytes)
    clock_hz: int | None = None  # the real chip's core clock, for time estimates
    flash_address: int | None = None  # where .bin is programmed on the real chip; None: emulator-only target
    pyocd_target: str | None = None
    openocd_config: str | None = None

    @property
    def folder(self) -> Path:
        return TARGETS_DIR / self.name


BOARDS: dict[str, Board] = {
    b.name: b
    for b in (
        Board(
            name="cortex-m4",
            description="Cortex-M4F, QEMU mps2-an386",
            cpu_flags=("-mcpu=cortex-m4", "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard", "-mthumb"),
            qemu_machine="mps2-an386",
            qemu_cpu="cortex-m4",
            qemu_extra=(),
            sram_bytes=256 * KB,
            flash_bytes=1024 * KB,
            budget_bytes=256 * KB,
        ),
        Board(
            name="cortex-m7",
            description="Cortex-M7 (double-precision FPU), QEMU mps2-an500",
            cpu_flags=("-mcpu=cortex-m7", "-mfpu=fpv5-d16", "-mfloat-abi=hard", "-mthumb"),
            qemu_machine="mps2-an500",
            qemu_cpu="cortex-m7",
            qemu_extra=(),
            sram_bytes=256 * KB,
            flash_bytes=1024 * KB,
            budget_bytes=256 * KB,
        ),
        Board(
            name="stm32f746",
            description="STM32F746G-DISCO, Cortex-M7 @ 216 MHz; QEMU mps2-an500",
            cpu_flags=("-mcpu=cortex-m7", "-mfpu=fpv5-sp-d16", "-mfloat-abi=hard", "-mthumb"),
            qemu_machine="mps2-an500",
            qemu_cpu="cortex-m7",
            # Linked at the flash's ITCM alias 0x00200000 (the chip's default boot address): boot QEMU there.
            qemu_extra=("-global", "armv7m.init-nsvtor=0x00200000"),
            sram_bytes=320 * KB,
            flash_bytes=1024 * KB,
            budget_bytes=256 * KB,
            clock_hz=216_000_000,
            flash_address=0x0800_0000,
            pyocd_target="stm32f746xx",
            openocd_config="board/stm32f7discovery.cfg",
        ),
    )
}


def get_board(name: str) -> Board:
    """The board called `name`; a TteError naming the known ones otherwise."""
    try:
        return BOARDS[name]
    except KeyError:
        known = ", ".join(sorted(BOARDS))
        raise TteError(f"unknown target '{name}'", hint=f"choose one of: host, {known}") from None
