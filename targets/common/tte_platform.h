/* Board services for tte firmware: instruction counting, stack high-water mark, fault exit statuses.
 *
 * Counting. QEMU does not model the DWT cycle counter, but under `-icount shift=0` its virtual clock advances
 * exactly 1 ns per guest instruction, and SysTick (CLKSOURCE = processor clock, 25 MHz on the mps2 boards)
 * then ticks once every 40 instructions, deterministically. tte_ticks() counts SysTick ticks in 64 bits (the
 * 24-bit counter's wraps are counted by SysTick_Handler); multiply by the board's instructions per tick
 * (TTE_INSTR_PER_TICK, measured: see targets/README.md) for instructions. On a real board a tick is one
 * core clock cycle. Resolution: one tick.
 *
 * Stack. The start-up code paints the whole stack with TTE_STACK_PATTERN; tte_stack_peak_bytes() scans for the
 * deepest word that was overwritten. tte_stack_repaint() restarts the measurement (for example just before the
 * code to be measured); the frames live at that moment count as used. The TTE_STACK_GUARD_BYTES below the stack
 * are an MPU guard: reaching them is a MemManage fault (exit status TTE_EXIT_MEMMANAGE), not a silent overflow.
 */
#ifndef TTE_PLATFORM_H
#define TTE_PLATFORM_H

#include <stdint.h>

#define TTE_STACK_PATTERN 0xC5A5C5A5u
/* The memory just below the stack is an MPU no-access guard (sections.ld aligns the stack to it). Below SRAM
 * it costs no memory, so it is large: any stack frame smaller than it that overflows hits it. */
#define TTE_STACK_GUARD_LOG2 16u
#define TTE_STACK_GUARD_BYTES (1u << TTE_STACK_GUARD_LOG2)

/* Exit statuses of the fault handlers (distinct from any status a test program returns by convention). */
#define TTE_EXIT_HARDFAULT 101
#define TTE_EXIT_MEMMANAGE 102
#define TTE_EXIT_BUSFAULT 103
#define TTE_EXIT_USAGEFAULT 104
#define TTE_EXIT_UNEXPECTED_IRQ 105

#ifndef TTE_INSTR_PER_TICK
#define TTE_INSTR_PER_TICK 40u /* QEMU mps2 under -icount shift=0 */
#endif

/* Starts SysTick as a free-running counter (called by the start-up code; calling it again restarts it). */
void tte_counter_init(void);
/* SysTick ticks since tte_counter_init(), 64 bits, monotonic. */
uint64_t tte_ticks(void);

/* Repaints the free stack below the caller's frame, restarting the high-water measurement. */
void tte_stack_repaint(void);
/* The deepest stack use (bytes from the top of the stack) since the last paint. */
uint32_t tte_stack_peak_bytes(void);
/* The stack's size in bytes (STACK_SIZE in the Makefile). */
uint32_t tte_stack_size_bytes(void);

#endif /* TTE_PLATFORM_H */
