/* Start-up code for tte firmware on Cortex-M (vector table, reset, fault reports).
 *
 * Reset_Handler copies .data from flash, zeroes .bss, enables the FPU, turns on the configurable fault
 * handlers, paints the stack (for tte_stack_peak_bytes), starts the SysTick counter, calls main() and exits
 * through semihosting with main's return value as the exit status. When the core has an MPU, the
 * TTE_STACK_GUARD_BYTES below the stack (not SRAM: the stack starts at the start of SRAM) become a no-access
 * region, so that a stack overflow stops in a MemManage fault at once instead of writing into whatever the
 * emulator or the chip maps there. A fault prints one line
 * "TTE FAULT <kind> pc=... lr=... sp=... cfsr=... hfsr=... mmfar=... bfar=..." and exits with the status
 * TTE_EXIT_<kind> (tte_platform.h), so a crashing firmware ends instead of spinning.
 */
#include <stdint.h>
#include <string.h>

#include "tte_platform.h"
#include "tte_semihost.h"

#define SCB_VTOR (*(volatile uint32_t *)0xE000ED08u)
#define SCB_CCR (*(volatile uint32_t *)0xE000ED14u)
#define SCB_SHCSR (*(volatile uint32_t *)0xE000ED24u)
#define SCB_CFSR (*(volatile uint32_t *)0xE000ED28u)
#define SCB_HFSR (*(volatile uint32_t *)0xE000ED2Cu)
#define SCB_MMFAR (*(volatile uint32_t *)0xE000ED34u)
#define SCB_BFAR (*(volatile uint32_t *)0xE000ED38u)
#define SCB_CPACR (*(volatile uint32_t *)0xE000ED88u)
#define MPU_TYPE (*(volatile uint32_t *)0xE000ED90u)
#define MPU_CTRL (*(volatile uint32_t *)0xE000ED94u)
#define MPU_RNR (*(volatile uint32_t *)0xE000ED98u)
#define MPU_RBAR (*(volatile uint32_t *)0xE000ED9Cu)
#define MPU_RASR (*(volatile uint32_t *)0xE000EDA0u)

#define SHCSR_FAULTS_ENABLE ((1u << 16) | (1u << 17) | (1u << 18)) /* MemManage, BusFault, UsageFault */
#define CCR_DIV_0_TRP (1u << 4)
#define NUM_IRQ 32
#define MPU_CTRL_ENABLE_PRIVDEFENA 0x5u /* MPU on; the default memory map for everything outside its regions */
#define MPU_RASR_GUARD (((TTE_STACK_GUARD_LOG2 - 1u) << 1) | 0x1u | (1u << 28)) /* no access, no execution */

/* Linker script symbols (targets/common/sections.ld). */
extern uint32_t __data_load[], __data_start[], __data_end[];
extern uint32_t __bss_start[], __bss_end[];
extern uint32_t __stack_bottom[], __stack_top[];

int main(void);
void Reset_Handler(void);
void NMI_Handler(void);
void HardFault_Handler(void);
void MemManage_Handler(void);
void BusFault_Handler(void);
void UsageFault_Handler(void);
void Default_Handler(void);
void tte_fault_report(const uint32_t *frame, uint32_t kind);

/* Weak so that a program may install its own; SysTick_Handler lives in tte_platform.c. */
void SVC_Handler(void) __attribute__((weak, alias("Default_Handler")));
void DebugMon_Handler(void) __attribute__((weak, alias("Default_Handler")));
void PendSV_Handler(void) __attribute__((weak, alias("Default_Handler")));
void SysTick_Handler(void);

typedef void (*vector_t)(void);

__attribute__((section(".isr_vector"), used)) const vector_t g_vectors[16 + NUM_IRQ] = {
    (vector_t)(uintptr_t)__stack_top,
    Reset_Handler,
    NMI_Handler,
    HardFault_Handler,
    MemManage_Handler,
    BusFault_Handler,
    UsageFault_Handler,
    0,
    0,
    0,
    0,
    SVC_Handler,
    DebugMon_Handler,
    0,
    PendSV_Handler,
    SysTick_Handler,
    [16 ... 16 + NUM_IRQ - 1] = Default_Handler,
};

/* Guards the bottom of the stack with MPU region 0 (PMSAv7, present on the M4 and M7 and modelled by QEMU). */
static void guard_stack(void)
{
    if (((MPU_TYPE >> 8) & 0xFFu) == 0u) {
        return; /* no MPU */
    }
    MPU_RNR = 0u;
    /* sections.ld asserts that the stack starts on a multiple of the guard size. */
    MPU_RBAR = (uint32_t)(uintptr_t)__stack_bottom - TTE_STACK_GUARD_BYTES;
    MPU_RASR = MPU_RASR_GUARD;
    MPU_CTRL = MPU_CTRL_ENABLE_PRIVDEFENA;
    __asm__ volatile("dsb\n isb" ::: "memory");
}

/* Paints [__stack_bottom, sp): words below the stack pointer are free here (interrupts are still off and
 * this function calls nothing). A volatile pointer keeps GCC from turning the loop into a memset call. */
static inline __attribute__((always_inline)) void paint_stack(void)
{
    uint32_t sp;
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    for (volatile uint32_t *p = __stack_bottom; (uint32_t)p < sp; ++p) {
        *p = TTE_STACK_PATTERN;
    }
}

void Reset_Handler(void)
{
    SCB_VTOR = (uint32_t)(uintptr_t)g_vectors; /* a board may boot through an alias of the flash */
    memcpy(__data_start, __data_load, (size_t)((uintptr_t)__data_end - (uintptr_t)__data_start));
    memset(__bss_start, 0, (size_t)((uintptr_t)__bss_end - (uintptr_t)__bss_start));
#if defined(__ARM_FP)
    SCB_CPACR |= 0xFu << 20; /* full access to CP10 and CP11 */
    __asm__ volatile("dsb\n isb" ::: "memory");
#endif
    SCB_SHCSR |= SHCSR_FAULTS_ENABLE;
    SCB_CCR |= CCR_DIV_0_TRP;
    paint_stack();
    guard_stack();
    tte_counter_init();
    tte_sh_exit(main() & 0xFF);
}

/* The fault entry points find the exception frame (MSP or PSP, bit 2 of EXC_RETURN), move to a known good
 * stack (the fault may come from a stack overflow), and report. They never return. */
#define FAULT_ENTRY(name, kind)                                                                               \
    __attribute__((naked)) void name(void)                                                                     \
    {                                                                                                          \
        __asm__ volatile("tst lr, #4\n"                                                                        \
                         "ite eq\n"                                                                            \
                         "mrseq r0, msp\n"                                                                     \
                         "mrsne r0, psp\n"                                                                     \
                         "ldr r1, =__stack_top\n"                                                              \
                         "mov sp, r1\n"                                                                        \
                         "movs r1, #" #kind "\n"                                                               \
                         "b tte_fault_report\n");                                                              \
    }

FAULT_ENTRY(HardFault_Handler, 1)
FAULT_ENTRY(MemManage_Handler, 2)
FAULT_ENTRY(BusFault_Handler, 3)
FAULT_ENTRY(UsageFault_Handler, 4)
FAULT_ENTRY(NMI_Handler, 5)
FAULT_ENTRY(Default_Handler, 5)

static void write_field(const char *name, uint32_t value)
{
    tte_sh_write0(name);
    tte_sh_write_hex(value);
}

void tte_fault_report(const uint32_t *frame, uint32_t kind)
{
    static const char *const names[] = {"?", "HardFault", "MemManage", "BusFault", "UsageFault", "UnexpectedIRQ"};
    static const int statuses[] = {TTE_EXIT_HARDFAULT, TTE_EXIT_HARDFAULT, TTE_EXIT_MEMMANAGE,
                                   TTE_EXIT_BUSFAULT,  TTE_EXIT_USAGEFAULT, TTE_EXIT_UNEXPECTED_IRQ};
    uint32_t ipsr;
    __asm__ volatile("mrs %0, ipsr" : "=r"(ipsr));
    tte_sh_write0("\nTTE FAULT ");
    tte_sh_write0(names[kind < 6u ? kind : 0u]);
    /* The frame is readable only inside the stack: after a stack overflow it lies in the guard. */
    int frame_ok = frame >= __stack_bottom && frame + 8 <= __stack_top;
    write_field(" pc=", frame_ok ? frame[6] : 0u);
    write_field(" lr=", frame_ok ? frame[5] : 0u);
    write_field(" sp=", (uint32_t)(uintptr_t)frame);
    write_field(" ipsr=", ipsr);
    write_field(" cfsr=", SCB_CFSR);
    write_field(" hfsr=", SCB_HFSR);
    write_field(" mmfar=", SCB_MMFAR);
    write_field(" bfar=", SCB_BFAR);
    if (frame < __stack_bottom) {
        tte_sh_write0(" (stack overflow: raise STACK_SIZE)");
    }
    tte_sh_write0("\n");
    tte_sh_exit(statuses[kind < 6u ? kind : 0u]);
}
