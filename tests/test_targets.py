"""Cortex-M targets: board files, a self-test firmware in QEMU (exit status, text, instruction counts, faults,
stack painting, semihosting files), link-time memory checks, and `tte flash`."""

from __future__ import annotations

import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from tte.cli import main as tte_main
from tte.errors import TteError
from tte.targets import BOARDS, QEMU_INSTRUCTIONS_PER_TICK, BuildError, build, run_qemu, write_project
from tte.targets.flash import plan_flash
from tte.targets.qemu import RunResult

pytestmark = [
    pytest.mark.qemu,
    pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None,
                       reason="needs arm-none-eabi-gcc and qemu-system-arm (make toolchain)"),
]
SELFTEST = Path(__file__).resolve().parents[1] / "targets" / "selftest" / "selftest.c"
LOOP_INSTRUCTIONS_PER_ITERATION = 4  # subs, nop, nop, bne (selftest.c `spin`)
STACK = 8192


@pytest.fixture(scope="module")
def selftest(tmp_path_factory) -> dict:
    """The self-test firmware built for every board: board name -> BuildResult."""
    return {b: build(write_project(tmp_path_factory.mktemp(b), b, [SELFTEST], stack_bytes=STACK))
            for b in BOARDS}


def run(fw, *args: str, timeout: float = 20.0, cwd=None) -> RunResult:
    return run_qemu(fw.elf, timeout, args, cwd=cwd)


def ticks(fw, n: int) -> int:
    res = run(fw, "loop", str(n))
    assert res.ok, res.message
    return int(re.fullmatch(r"ticks=(\d+)\s*", res.output).group(1))


def test_board_table_matches_board_files():
    for b in BOARDS.values():
        mk = dict(re.findall(r"^(\w+) := ?(.*)$", (b.folder / "board.mk").read_text(), re.MULTILINE))
        assert mk["BOARD"] == b.name
        assert mk["CPU_FLAGS"].split() == list(b.cpu_flags)
        assert (mk["QEMU_MACHINE"], mk["QEMU_CPU"]) == (b.qemu_machine, b.qemu_cpu)
        assert mk["QEMU_EXTRA"].split() == list(b.qemu_extra)
        ld = (b.folder / "board.ld").read_text()
        assert f"LENGTH = {b.flash_bytes // 1024}K" in ld and f"LENGTH = {b.sram_bytes // 1024}K" in ld
        assert b.budget_bytes <= b.sram_bytes
    assert BOARDS["stm32f746"].sram_bytes == 320 * 1024 and BOARDS["stm32f746"].budget_bytes == 256 * 1024


@pytest.mark.parametrize("board", sorted(BOARDS))
def test_exit_status_and_text(selftest, board):
    fw = selftest[board]
    hello = run(fw, "hello")
    assert (hello.status, hello.output, hello.fault) == (0, "hello from tte\n", None)
    assert run(fw, "exit", "7").status == 7
    assert run(fw, "nonsense").status == 3


@pytest.mark.parametrize("board", sorted(BOARDS))
def test_instruction_count_is_deterministic_and_scales(selftest, board):
    fw = selftest[board]
    n = 250_000
    first, second = ticks(fw, n), ticks(fw, n)
    assert first == second
    # A known loop: 4 instructions per iteration, so N iterations are 4N / 40 ticks (one tick of slack for
    # the loop's set-up and the timer reads).
    for iterations in (n, 2 * n, 8 * n):
        expected = iterations * LOOP_INSTRUCTIONS_PER_ITERATION / QEMU_INSTRUCTIONS_PER_TICK
        assert abs(ticks(fw, iterations) - expected) <= 1
    assert ticks(fw, 0) <= 1


def test_counter_survives_24_bit_wrap(selftest):
    # 2^24 ticks are 671 M instructions: 180 M iterations (720 M instructions) wrap SysTick once.
    iterations = 180_000_000
    assert ticks(selftest["cortex-m4"], iterations) == pytest.approx(iterations * 4 / 40, abs=1)


@pytest.mark.parametrize("board", sorted(BOARDS))
@pytest.mark.parametrize(("mode", "kind", "status"), [
    ("udf", "UsageFault", 104), ("div0", "UsageFault", 104), ("badread", "BusFault", 103),
    ("overflow", "MemManage", 102),
])
def test_fault_ends_with_report_and_status(selftest, board, mode, kind, status):
    res = run(selftest[board], mode)
    assert not res.timed_out
    assert res.status == status
    assert res.fault is not None and res.fault.startswith(f"TTE FAULT {kind} pc=0x")
    assert "crashed" in res.message
    if mode == "overflow":
        assert "stack overflow" in res.fault


def test_hang_is_stopped_by_the_timeout(selftest):
    res = run(selftest["cortex-m7"], "hang", timeout=1.0)
    assert res.timed_out and res.status is None and not res.ok
    assert "did not finish" in res.message


@pytest.mark.parametrize("board", sorted(BOARDS))
def test_stack_painting_measures_a_known_depth(selftest, board):
    def measure(depth: int) -> dict[str, int]:
        res = run(selftest[board], "stack", str(depth))
        assert res.ok, res.message
        return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", res.output)}

    small, large = measure(1000), measure(4000)
    assert small["stack_size"] == STACK
    # The frame holds the 1000-byte buffer plus a few saved registers.
    assert 1000 <= small["stack_peak"] - small["stack_base"] <= 1000 + 48
    assert large["stack_peak"] - small["stack_peak"] == 3000


def test_semihosting_reads_host_files(selftest, tmp_path):
    data = bytes(range(256)) * 3 + b"tte"
    (tmp_path / "sample.bin").write_bytes(data)
    res = run(selftest["stm32f746"], "cat", "sample.bin", cwd=tmp_path)
    assert res.ok, res.message
    assert res.output == f"size={len(data)} sum={sum(data)}\n"


def test_make_run_uses_the_project_makefile(selftest):
    out = selftest["cortex-m4"].out
    proc = subprocess.run(["make", "-s", "-C", str(out), "run", "QEMU_ARGS=loop 1000000"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "ticks=100000" in proc.stdout + proc.stderr


def _oversized_project(tmp_path: Path, board: str, kbytes: int) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    big = tmp_path / "big.c"
    big.write_text(f"unsigned char tte_big[{kbytes} * 1024];\n"
                   "int main(void) { tte_big[7] = 1; return tte_big[7] - 1; }\n")
    return write_project(tmp_path / "fw", board, [big], stack_bytes=STACK)


def test_too_large_bss_fails_at_link_time(tmp_path):
    with pytest.raises(BuildError, match=r"SRAM of cortex-m4 \(256 KB\) overflowed by [0-9,]+ bytes at link time"):
        build(_oversized_project(tmp_path, "cortex-m4", 250))  # 250 KB + 8 KB stack > 256 KB


def test_stm32f746_links_320kb_but_enforces_the_256kb_budget(tmp_path):
    out = _oversized_project(tmp_path, "stm32f746", 280)
    with pytest.raises(BuildError, match="over the stm32f746 budget of 262,144"):
        build(out)
    fw = build(out, check_budget=False)  # physically it fits the chip's 320 KB
    assert fw.sizes.bss >= 280 * 1024 and run_qemu(fw.elf, 20).status == 0
    with pytest.raises(BuildError, match=r"SRAM of stm32f746 \(320 KB\) overflowed"):
        build(_oversized_project(tmp_path / "more", "stm32f746", 320))


def test_stm32f746_hex_is_at_the_axi_flash_address(selftest):
    fw = selftest["stm32f746"]
    first_records = fw.hex.read_text().splitlines()[:2]
    assert ":020000040800F2" in first_records  # extended linear address 0x0800xxxx
    assert fw.bin.stat().st_size == fw.sizes.flash


def _fake_tool(folder: Path, name: str) -> None:
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_flash_picks_a_tool_or_says_what_to_install(selftest, tmp_path, monkeypatch, capsys):
    out = selftest["stm32f746"].out
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with pytest.raises(TteError, match="pip install pyocd"):
        plan_flash(out)
    assert tte_main(["flash", str(out)]) == 2
    assert "no flashing tool" in capsys.readouterr().err
    _fake_tool(tmp_path / "bin", "st-flash")
    plan = plan_flash(out)
    assert plan.tool == "st-flash" and plan.command[-2:] == (str(selftest["stm32f746"].bin), "0x8000000")
    assert tte_main(["flash", str(out)]) == 0
    assert tte_main(["flash", str(selftest["cortex-m4"].out)]) == 2  # emulator-only board
    assert "emulator target" in capsys.readouterr().err


def test_run_needs_emulator_flag(selftest, capsys):
    assert tte_main(["run", str(selftest["cortex-m4"].out), "--data", "x.npz"]) == 2
    assert "--emulator" in capsys.readouterr().err
