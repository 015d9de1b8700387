/* The firmware's main(): runs a compiled model on samples read from host files through semihosting.
 *
 * Command line (QEMU: -semihosting-config ...,arg=firmware,arg=infer,arg=IN,arg=OUT):
 *   infer IN OUT   IN holds N samples back to back (TTE_IN_BYTES each: every model input, int8 NHWC, in order);
 *                  each is run through the model and its outputs (TTE_OUT_BYTES) are appended to OUT.
 * Last line printed:
 *   TTE_RESULT samples=N ticks_sum=T ticks_min=A ticks_max=B stack_peak=S stack_size=Z status=E
 * ticks are SysTick ticks around the model call only (QEMU: multiply by the instructions per tick);
 * stack_peak is the deepest stack use during any model call, in bytes from the top of the stack.
 * Exit status: 0, or 1 when a model call returned non-zero, 3 for a bad command line, 4 for a file error.
 *
 * tte_harness_config.h (written by tte.targets) includes the model header and defines TTE_IN_BYTES,
 * TTE_OUT_BYTES and TTE_HARNESS_INFER(in, out). A training mode (train_step on labelled samples, then a hash of
 * the trained parameters) goes beside `infer` in the same shape.
 */
#include <stdint.h>
#include <string.h>

#include "tte_harness_config.h"
#include "tte_platform.h"
#include "tte_semihost.h"

static int8_t g_in[TTE_IN_BYTES];
static int8_t g_out[TTE_OUT_BYTES];

typedef struct {
    uint32_t samples;
    uint64_t ticks_sum, ticks_min, ticks_max;
    uint32_t stack_peak;
    int status;
} stats_t;

static void print_field(const char *name, uint64_t value)
{
    tte_sh_write0(name);
    tte_sh_write_u64(value);
}

static void print_result(const stats_t *s)
{
    print_field("TTE_RESULT samples=", s->samples);
    print_field(" ticks_sum=", s->ticks_sum);
    print_field(" ticks_min=", s->samples ? s->ticks_min : 0u);
    print_field(" ticks_max=", s->ticks_max);
    print_field(" stack_peak=", s->stack_peak);
    print_field(" stack_size=", tte_stack_size_bytes());
    print_field(" status=", (uint64_t)(uint32_t)s->status);
    tte_sh_write0("\n");
}

/* One model call, measured: ticks around the call only, stack from a fresh paint. */
static int run_one(stats_t *s)
{
    tte_stack_repaint();
    uint64_t t0 = tte_ticks();
    int status = TTE_HARNESS_INFER(g_in, g_out);
    uint64_t t1 = tte_ticks();
    uint32_t peak = tte_stack_peak_bytes();
    uint64_t dt = t1 - t0;
    s->ticks_sum += dt;
    s->ticks_min = s->samples == 0u || dt < s->ticks_min ? dt : s->ticks_min;
    s->ticks_max = dt > s->ticks_max ? dt : s->ticks_max;
    s->stack_peak = peak > s->stack_peak ? peak : s->stack_peak;
    s->samples += 1u;
    if (status != 0 && s->status == 0) {
        s->status = status;
    }
    return status;
}

static int infer_files(const char *in_path, const char *out_path)
{
    int in = tte_sh_open(in_path, TTE_SH_MODE_RB);
    int out = tte_sh_open(out_path, TTE_SH_MODE_WB);
    if (in < 0 || out < 0) {
        tte_sh_write0("tte harness: cannot open the sample or output file\n");
        return 4;
    }
    stats_t s = {0u, 0u, 0u, 0u, 0u, 0};
    long got;
    while ((got = tte_sh_read(in, g_in, sizeof g_in)) == (long)sizeof g_in) {
        (void)run_one(&s);
        if (tte_sh_write(out, g_out, sizeof g_out) != 0) {
            tte_sh_write0("tte harness: cannot write the output file\n");
            return 4;
        }
    }
    tte_sh_close(in);
    tte_sh_close(out);
    print_result(&s);
    if (got != 0) {
        tte_sh_write0("tte harness: the sample file is not a whole number of samples\n");
        return 4;
    }
    return s.status != 0 ? 1 : 0;
}

/* Splits the command line at spaces (paths must not contain spaces). */
static int split(char *line, char **words, int max_words)
{
    int n = 0;
    char *p = line;
    while (*p != '\0' && n < max_words) {
        while (*p == ' ') {
            *p++ = '\0';
        }
        if (*p == '\0') {
            break;
        }
        words[n++] = p;
        while (*p != '\0' && *p != ' ') {
            ++p;
        }
    }
    return n;
}

int main(void)
{
    static char line[512];
    char *words[8];
    if (tte_sh_cmdline(line, sizeof line) < 0) {
        return 3;
    }
    int n = split(line, words, 8);
    if (n == 4 && strcmp(words[1], "infer") == 0) {
        return infer_files(words[2], words[3]);
    }
    tte_sh_write0("usage: firmware infer SAMPLES.bin OUTPUTS.bin\n");
    return 3;
}
