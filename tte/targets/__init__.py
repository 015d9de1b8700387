"""Cortex-M targets: the board table, firmware projects, the build, QEMU runs and flashing.

    write_project(out, board, sources, main_c)       a firmware project for any C program
    firmware_files / write_firmware(out, board, ...)  a compiled model's output folder as a firmware project
    build(out) -> BuildResult                         make: .elf, .bin, .hex and section sizes
    run_qemu(elf, timeout, args) -> RunResult         the firmware in QEMU, under a timeout
    harness.run_emulator(out, data)                   `tte run --emulator`
    flash.flash(out)                                  `tte flash`
"""

from tte.targets.boards import BOARDS, QEMU_INSTRUCTIONS_PER_TICK, TARGETS_DIR, Board, get_board
from tte.targets.build import BuildError, BuildResult, ElfSizes, build, elf_sizes, firmware_paths
from tte.targets.project import (
    DEFAULT_STACK_BYTES,
    firmware_files,
    read_meta,
    write_firmware,
    write_project,
)
from tte.targets.qemu import RunResult, qemu_command, run_qemu

__all__ = [
    "BOARDS", "QEMU_INSTRUCTIONS_PER_TICK", "TARGETS_DIR", "Board", "get_board", "BuildError", "BuildResult",
    "ElfSizes", "build", "elf_sizes", "firmware_paths", "DEFAULT_STACK_BYTES", "firmware_files", "read_meta",
    "write_firmware", "write_project", "RunResult", "qemu_command", "run_qemu",
]
