# cortex-m7: Cortex-M7 with a double-precision FPU (tte itself uses single precision), runs in QEMU as mps2-an500.
BOARD := cortex-m7
CPU_FLAGS := -mcpu=cortex-m7 -mfpu=fpv5-d16 -mfloat-abi=hard -mthumb
BOARD_DEFS := -DTTE_BOARD_CORTEX_M7=1
QEMU_MACHINE := mps2-an500
QEMU_CPU := cortex-m7
QEMU_EXTRA :=
HEX_OFFSET := 0
