/* Self-test firmware for the tte targets (tests/test_targets.py). The first argument picks what it does:
 *   hello           print a line, exit 0
 *   exit N          exit with status N
 *   loop N          run a loop of N iterations of a known length, print "ticks=<T>"
 *   stack N         use N bytes of stack in one frame, print "stack_peak=<P> stack_size=<S>"
 *   udf             execute an undefined instruction (UsageFault)
 *   badread         read unmapped memory (BusFault)
 *   div0            divide by zero (UsageFault, DIV_0_TRP)
 *   overflow        recurse until the stack overflows
 *   cat FILE        print the size and a byte sum of a host file read through semihosting
 *   hang            loop forever (the runner's timeout must end it)
 * Unknown or missing argument: exit 3.
 */
#include <stdint.h>
#include <string.h>

#include "tte_platform.h"
#include "tte_semihost.h"

/* Exactly 4 instructions per iteration (subs, nop, nop, bne) plus a fixed set-up, independent of compiler. */
__attribute__((noinline, noipa)) static void spin(uint32_t n)
{
    if (n == 0u) {
        return;
    }
    __asm__ volatile("1: subs %0, %0, #1\n"
                     "   nop\n"
                     "   nop\n"
                     "   bne 1b\n"
                     : "+r"(n)::"cc");
}

__attribute__((noinline, noipa)) static uint32_t use_stack(uint32_t n)
{
    volatile uint8_t buf[n];
    for (uint32_t i = 0; i < n; ++i) {
        buf[i] = (uint8_t)i;
    }
    return buf[n / 2u];
}

__attribute__((noinline, noipa)) static uint32_t recurse(uint32_t depth)
{
    volatile uint32_t pad[16];
    pad[0] = depth;
    if (depth > 1000000u) { /* never reached: 256 KB of SRAM ends long before */
        return depth;
    }
    return recurse(depth + 1u) + pad[0];
}

static uint32_t parse_u32(const char *s)
{
    uint32_t v = 0;
    while (*s >= '0' && *s <= '9') {
        v = v * 10u + (uint32_t)(*s++ - '0');
    }
    return v;
}

static int cat(const char *path)
{
    int h = tte_sh_open(path, TTE_SH_MODE_RB);
    if (h < 0) {
        tte_sh_write0("cannot open\n");
        return 4;
    }
    uint8_t buf[64];
    uint32_t sum = 0;
    uint64_t total = 0;
    long got;
    while ((got = tte_sh_read(h, buf, sizeof buf)) > 0) {
        for (long i = 0; i < got; ++i) {
            sum += buf[i];
        }
        total += (uint64_t)got;
    }
    tte_sh_close(h);
    tte_sh_write0("size=");
    tte_sh_write_u64(total);
    tte_sh_write0(" sum=");
    tte_sh_write_u64(sum);
    tte_sh_write0("\n");
    return 0;
}

int main(void)
{
    static char cmdline[128];
    if (tte_sh_cmdline(cmdline, sizeof cmdline) < 0) {
        return 3;
    }
    /* argv[0] is the program name; split the rest at the first two spaces. */
    char *cmd = strchr(cmdline, ' ');
    if (cmd == NULL) {
        return 3;
    }
    *cmd++ = '\0';
    char *arg = strchr(cmd, ' ');
    if (arg != NULL) {
        *arg++ = '\0';
    } else {
        arg = cmd + strlen(cmd);
    }

    if (strcmp(cmd, "hello") == 0) {
        tte_sh_write0("hello from tte\n");
        return 0;
    }
    if (strcmp(cmd, "exit") == 0) {
        return (int)parse_u32(arg);
    }
    if (strcmp(cmd, "loop") == 0) {
        uint32_t n = parse_u32(arg);
        uint64_t t0 = tte_ticks();
        spin(n);
        uint64_t t1 = tte_ticks();
        tte_sh_write0("ticks=");
        tte_sh_write_u64(t1 - t0);
        tte_sh_write0("\n");
        return 0;
    }
    if (strcmp(cmd, "stack") == 0) {
        tte_stack_repaint();
        uint32_t base = tte_stack_peak_bytes();
        (void)use_stack(parse_u32(arg));
        uint32_t peak = tte_stack_peak_bytes();
        tte_sh_write0("stack_base=");
        tte_sh_write_u64(base);
        tte_sh_write0(" stack_peak=");
        tte_sh_write_u64(peak);
        tte_sh_write0(" stack_size=");
        tte_sh_write_u64(tte_stack_size_bytes());
        tte_sh_write0("\n");
        return 0;
    }
    if (strcmp(cmd, "udf") == 0) {
        __asm__ volatile("udf #0");
    }
    if (strcmp(cmd, "badread") == 0) {
        return (int)*(volatile uint32_t *)0x30000000u;
    }
    if (strcmp(cmd, "div0") == 0) {
        volatile uint32_t zero = 0;
        return (int)(100u / zero);
    }
    if (strcmp(cmd, "overflow") == 0) {
        return (int)recurse(0);
    }
    if (strcmp(cmd, "cat") == 0) {
        return cat(arg);
    }
    if (strcmp(cmd, "hang") == 0) {
        for (;;) {
            __asm__ volatile("nop");
        }
    }
    return 3;
}
