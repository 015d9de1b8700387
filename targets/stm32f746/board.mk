# stm32f746: STM32F746G-DISCO, Cortex-M7 @ 216 MHz with a single-precision FPU; runs in QEMU as mps2-an500.
BOARD := stm32f746
CPU_FLAGS := -mcpu=cortex-m7 -mfpu=fpv5-sp-d16 -mfloat-abi=hard -mthumb
BOARD_DEFS := -DTTE_BOARD_STM32F746=1
QEMU_MACHINE := mps2-an500
QEMU_CPU := cortex-m7
# The image is linked at the flash's ITCM alias 0x00200000: boot from there.
QEMU_EXTRA := -global armv7m.init-nsvtor=0x00200000
# The .hex carries the flash's AXI addresses (0x08000000), where programmers write it.
HEX_OFFSET := 0x07E00000
