"""Running firmware in qemu-system-arm: always under a timeout, with deterministic instruction counting.

QEMU runs with `-icount shift=0` (1 ns of virtual time per instruction, so SysTick counts instructions: see
tte_platform.h) and semihosting on, which carries the firmware's text (QEMU prints it on stderr), its file
reads and writes (relative to `cwd`) and its exit status.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tte.errors import TteError
from tte.targets.boards import BOARDS, Board, get_board

QEMU = "qemu-system-arm"
QEMU_HINT = "install QEMU: `make toolchain` in the tte repository, or `apt-get install qemu-system-arm`"
FAULT_STATUSES = {101: "HardFault", 102: "MemManage", 103: "BusFault", 104: "UsageFault", 105: "UnexpectedIRQ"}
_FAULT_LINE = re.compile(r"^TTE FAULT .*$", re.MULTILINE)


@dataclass(frozen=True)
class RunResult:
    """How a firmware run ended: exit status (None after a timeout), its text, and what went wrong."""

    status: int | None
    output: str
    seconds: float
    timed_out: bool
    command: tuple[str, ...]

    @property
    def fault(self) -> str | None:
        """The firmware's one-line fault report ("TTE FAULT UsageFault pc=..."), if it faulted."""
        m = _FAULT_LINE.search(self.output)
        return m.group(0).strip() if m else None

    @property
    def ok(self) -> bool:
        return self.status == 0

    @property
    def message(self) -> str:
        """One line for the user: what happened."""
        if self.timed_out:
            return f"the firmware did not finish within {self.seconds:.0f} s (hung, or give it a longer --timeout)"
        if self.fault:
            return f"the firmware crashed: {self.fault}"
        if self.status in FAULT_STATUSES:
            return f"the firmware crashed ({FAULT_STATUSES[self.status]})"
        return "ok" if self.ok else f"the firmware exited with status {self.status}"


def qemu_command(elf: str | os.PathLike, board: Board, args: Sequence[str] = (), icount: bool = True) -> list[str]:
    """The qemu-system-arm command line that runs `elf` on `board`; `args` reach the firmware's command line."""
    semihosting = "enable=on,target=native" + "".join(f",arg={_check_arg(a)}" for a in ("firmware", *args))
    cmd = [QEMU, "-M", board.qemu_machine, "-cpu", board.qemu_cpu, *board.qemu_extra, "-nographic",
           "-monitor", "none", "-serial", "none", "-semihosting-config", semihosting]
    if icount:
        cmd += ["-icount", "shift=0,align=off,sleep=off"]
    return [*cmd, "-kernel", str(elf)]


def _check_arg(arg: str) -> str:
    if not arg or any(c in arg for c in " ,\n"):
        raise TteError(f"firmware argument '{arg}' must be non-empty without spaces or commas",
                       hint="use file names without spaces")
    return arg


def run_qemu(elf: str | os.PathLike, timeout: float = 60.0, args: Sequence[str] = (), *,
             board: Board | str | None = None, cwd: str | os.PathLike | None = None,
             icount: bool = True) -> RunResult:
    """Run the firmware `elf` in QEMU until it exits or `timeout` seconds pass.

    `board` defaults to the board of the project that holds `elf` (OUT/build/<board>/firmware.elf).
    """
    if shutil.which(QEMU) is None:
        raise TteError(f"'{QEMU}' is not on PATH", hint=QEMU_HINT)
    elf = Path(elf).resolve()
    if not elf.is_file():
        raise TteError(f"no firmware at {elf}", hint="build it first: make -C OUT")
    b = _board_of(elf, board)
    cmd = qemu_command(elf, b, args, icount)
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout, cwd=cwd, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        text = _text(e.stdout) + _text(e.stderr)
        return RunResult(None, text, time.monotonic() - start, True, tuple(cmd))
    return RunResult(proc.returncode, _text(proc.stderr) + _text(proc.stdout), time.monotonic() - start, False,
                     tuple(cmd))


def _board_of(elf: Path, board: Board | str | None) -> Board:
    if isinstance(board, Board):
        return board
    if board is None:
        if elf.parent.name not in BOARDS:
            raise TteError(f"cannot tell which board {elf} is for", hint="pass board='cortex-m4' (or another)")
        board = elf.parent.name
    return get_board(board)


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
