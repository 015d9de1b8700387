# cortex-m4: Cortex-M4F, runs in QEMU as mps2-an386.
BOARD := cortex-m4
CPU_FLAGS := -mcpu=cortex-m4 -mfpu=fpv4-sp-d16 -mfloat-abi=hard -mthumb
BOARD_DEFS := -DTTE_BOARD_CORTEX_M4=1
QEMU_MACHINE := mps2-an386
QEMU_CPU := cortex-m4
QEMU_EXTRA :=
# Offset added to the addresses in the .hex (the flash is programmed where it is linked).
HEX_OFFSET := 0
