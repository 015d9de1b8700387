/* Instruction counting (SysTick) and stack high-water mark; see tte_platform.h. */
#include "tte_platform.h"

#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)
#define SCB_ICSR (*(volatile uint32_t *)0xE000ED04u)

#define SYST_CSR_ENABLE 0x1u
#define SYST_CSR_TICKINT 0x2u
#define SYST_CSR_CLKSOURCE 0x4u
#define ICSR_PENDSTSET (1u << 26)
#define SYST_PERIOD 0x1000000u /* RVR + 1 */

extern uint32_t __stack_bottom[];
extern uint32_t __stack_top[];

static volatile uint32_t g_wraps;

void SysTick_Handler(void) { g_wraps = g_wraps + 1u; }

void tte_counter_init(void)
{
    SYST_CSR = 0u;
    SYST_RVR = SYST_PERIOD - 1u;
    SYST_CVR = 0u; /* any write clears the counter; it reloads from RVR on the next tick */
    g_wraps = 0u;
    SYST_CSR = SYST_CSR_ENABLE | SYST_CSR_TICKINT | SYST_CSR_CLKSOURCE;
    /* The first reload happens on the first tick: before it, CVR reads 0 and readings would be off by a period. */
    while (SYST_CVR == 0u) {
    }
}

uint64_t tte_ticks(void)
{
    uint32_t primask;
    __asm__ volatile("mrs %0, primask\n cpsid i" : "=r"(primask)::"memory");
    uint32_t wraps = g_wraps;
    uint32_t value = SYST_CVR;
    /* A wrap whose interrupt is still pending (interrupts are masked here): count it, and re-read the counter
     * so that the value belongs to the new period. */
    if (SCB_ICSR & ICSR_PENDSTSET) {
        wraps += 1u;
        value = SYST_CVR;
    }
    __asm__ volatile("msr primask, %0" ::"r"(primask) : "memory");
    return (uint64_t)wraps * SYST_PERIOD + (uint64_t)(SYST_PERIOD - 1u - value);
}

/* No calls and no stack below sp inside: the loop must not become a memset call that would paint its own frame
 * (hence the volatile pointer). */
void tte_stack_repaint(void)
{
    uint32_t sp;
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    for (volatile uint32_t *p = __stack_bottom; (uint32_t)p < sp; ++p) {
        *p = TTE_STACK_PATTERN;
    }
}

uint32_t tte_stack_peak_bytes(void)
{
    const uint32_t *p = __stack_bottom;
    while (p < __stack_top && *p == TTE_STACK_PATTERN) {
        ++p;
    }
    return (uint32_t)((uintptr_t)__stack_top - (uintptr_t)p);
}

uint32_t tte_stack_size_bytes(void) { return (uint32_t)((uintptr_t)__stack_top - (uintptr_t)__stack_bottom); }
