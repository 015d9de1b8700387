/* The 3x3 depthwise runs of depthwise_conv2d.c (tte_depthwise_fast.h): a row's windows of four channels with the
 * fast requantization, in Thumb-2 assembly on DSP targets (27 instructions per window row of 12 MACs, 10 per
 * output), and the K x K (5, 7) runs. Whole layers whose cut windows are moved inside the image with shifted
 * taps (tte_dw_runs) are in depthwise_runs_layer.c.
 */
#include "tte_depthwise_fast.h"
#include "tte_train_util.h"

#include <stddef.h>

#if TTE_HAVE_DSP && defined(__ARM_FEATURE_DSP) && defined(__thumb2__) && defined(__OPTIMIZE__) && \
    !defined(TTE_DSP_EMULATE)
#define TTE_DW_ASM 1

/* The assembly reads tte_dw_run3 at fixed offsets: fail to compile if the layout moves. */
typedef char tte_check_run3_layout[(offsetof(tte_dw_run3, m) == 72 && offsetof(tte_dw_run3, b) == 120 &&
                                    offsetof(tte_dw_run3, kout) == 136 && offsetof(tte_dw_run3, cs) == 152 &&
                                    offsetof(tte_dw_run3, xo) == 168 && offsetof(tte_dw_run3, mask) == 184 &&
                                    offsetof(tte_dw_run3, tapk) == 192 && offsetof(tte_dw_run3, backk) == 200)
                                       ? 1
                                       : -1];
/* One 3x3 window row of four channels: three taps (input word, SXTAB16 twice, the tap's weights, 4 MACs), then
 * x to the next row. r0 x, r1 run, r4-r7 sums of channels 0-3, r8 xo, r9 cs; r10-r12, lr scratch. */
#define DW3_TAP(load, off) \
        load \
        "ldrd    r12, lr, [r1, #" off "]\n\t" \
        "sxtab16 r11, r8, r10, ror #8\n\t" \
        "sxtab16 r10, r8, r10\n\t" \
        "smlabb  r4, r10, r12, r4\n\t" \
        "smlatt  r6, r10, r12, r6\n\t" \
        "smlabb  r5, r11, lr, r5\n\t" \
        "smlatt  r7, r11, lr, r7\n\t"
#define DW3_ROW(o0, o1, o2) \
        DW3_TAP("ldr     r10, [r0]\n\t", o0) \
        DW3_TAP("ldr     r10, [r0, r9]\n\t", o1) \
        DW3_TAP("add     r10, r0, r9, lsl #1\n\tldr     r10, [r10]\n\t", o2) \
        "ldr     r10, [r1, #156]\n\t" \
        "add     r0, r0, r10\n\t"
/* The requantized value of sum `acc` before the int8 saturation (tte_requant_fast_s8), in r11. */
#define DW3_REQ(acc, m, kout, sh) \
        "ldr     r10, [r1, #" m "]\n\t" \
        "ldr     r11, [r1, #" kout "]\n\t" \
        "ldr     r12, [r1, #" sh "]\n\t" \
        "and     lr, " acc ", #0x80000000\n\t" \
        "orr     lr, lr, #0x40000000\n\t" \
        "add     r11, r11, " acc ", asr #31\n\t" \
        "smlal   lr, r11, " acc ", r10\n\t" \
        "asr     r11, r11, r12\n\t"

/* Output j of the pixel from sum `acc`, stored at [r2, #j]. */
#define DW3_OUT(acc, j, m, kout, sh) \
        DW3_REQ(acc, m, kout, sh) \
        "ssat    r11, #8, r11\n\t" \
        "strb    r11, [r2, #" j "]\n\t"

/* Output j from sum `acc` as DW3_OUT, then v - SSAT(v) in `acc` (zero iff the mask bit is 1). */
#define DW3_OUT_MASK(acc, j, m, kout, sh) \
        DW3_REQ(acc, m, kout, sh) \
        "ssat    r10, #8, r11\n\t" \
        "strb    r10, [r2, #" j "]\n\t" \
        "sub     " acc ", r11, r10\n\t"

/* The four bits (CLZ >> 5 of each difference) ORed into the mask at run->at, which may straddle two bytes. */
#define DW3_BITS \
        "clz     r4, r4\n\t" \
        "clz     r5, r5\n\t" \
        "clz     r6, r6\n\t" \
        "clz     r7, r7\n\t" \
        "lsr     r4, r4, #5\n\t" \
        "lsr     r5, r5, #5\n\t" \
        "lsr     r6, r6, #5\n\t" \
        "lsr     r7, r7, #5\n\t" \
        "orr     r4, r4, r5, lsl #1\n\t" \
        "orr     r4, r4, r6, lsl #2\n\t" \
        "orr     r4, r4, r7, lsl #3\n\t" \
        "ldrd    r11, r12, [r1, #184]\n\t" /* mask, at */ \
        "add     lr, r11, r12, lsr #3\n\t" \
        "and     r10, r12, #7\n\t" \
        "lsl     r4, r4, r10\n\t" \
        "ldrb    r11, [lr]\n\t" \
        "orr     r11, r11, r4\n\t" \
        "strb    r11, [lr]\n\t" \
        "lsrs    r4, r4, #8\n\t" \
        "beq     3f\n\t" \
        "ldrb    r11, [lr, #1]\n\t" \
        "orr     r11, r11, r4\n\t" \
        "strb    r11, [lr, #1]\n\t" \
        "3:\n\t" \
        "add     r12, r12, r9\n\t" \
        "str     r12, [r1, #188]\n\t"

/* The loop of run3 in assembly (folded zero points): 27 instructions per window row, 10 per output; `outs` is
 * the output stage of the four channels. */
#define DW3_LOOP(outs) \
        "ldr     r8, [r1, #168]\n\t" \
        "ldr     r9, [r1, #152]\n\t" \
        "1:\n\t" \
        "ldrd    r4, r5, [r1, #120]\n\t" /* the sums start at the biases */ \
        "ldrd    r6, r7, [r1, #128]\n\t" \
        DW3_ROW("0", "8", "16") \
        DW3_ROW("24", "32", "40") \
        DW3_ROW("48", "56", "64") \
        "ldr     r10, [r1, #164]\n\t" \
        "add     r0, r0, r10\n\t" \
        outs \
        "add     r2, r2, r9\n\t" \
        "subs    r3, r3, #1\n\t" \
        "bne     1b\n\t"

static TTE_NOINLINE void run3_asm(tte_dw_run3 *run, const int8_t *x_, int8_t *dst_, int32_t count_)
{
    register const int8_t *x __asm__("r0") = x_;
    register tte_dw_run3 *r __asm__("r1") = run;
    register int8_t *dst __asm__("r2") = dst_;
    register int32_t count __asm__("r3") = count_;
    __asm__ volatile(DW3_LOOP(DW3_OUT("r4", "0", "72", "136", "104") DW3_OUT("r5", "1", "76", "140", "108")
                                  DW3_OUT("r6", "2", "80", "144", "112") DW3_OUT("r7", "3", "84", "148", "116"))
                     : "+r"(x), "+r"(r), "+r"(dst), "+r"(count)
                     :
                     : "r4", "r5", "r6", "r7", "r8", "r9", "r10", "r11", "r12", "lr", "cc", "memory");
}

/* The same with the mask bits: 26 more instructions per pixel. */
static TTE_NOINLINE void run3_asm_mask(tte_dw_run3 *run, const int8_t *x_, int8_t *dst_, int32_t count_)
{
    register const int8_t *x __asm__("r0") = x_;
    register tte_dw_run3 *r __asm__("r1") = run;
    register int8_t *dst __asm__("r2") = dst_;
    register int32_t count __asm__("r3") = count_;
    __asm__ volatile(DW3_LOOP(DW3_OUT_MASK("r4", "0", "72", "136", "104") DW3_OUT_MASK("r5", "1", "76", "140", "108")
                                  DW3_OUT_MASK("r6", "2", "80", "144", "112")
                                  DW3_OUT_MASK("r7", "3", "84", "148", "116") DW3_BITS)
                     : "+r"(x), "+r"(r), "+r"(dst), "+r"(count)
                     :
                     : "r4", "r5", "r6", "r7", "r8", "r9", "r10", "r11", "r12", "lr", "cc", "memory");
}
/* One tap of a K x K window row: x (r0) steps one pixel on, the taps (r3) are read at offset `off`. */
#define DWK_TAP(off) \
        "ldr     r10, [r0]\n\t" \
        "add     r0, r0, r9\n\t" \
        "ldrd    r12, lr, [r3, #" off "]\n\t" \
        "sxtab16 r11, r8, r10, ror #8\n\t" \
        "sxtab16 r10, r8, r10\n\t" \
        "smlabb  r4, r10, r12, r4\n\t" \
        "smlatt  r6, r10, r12, r6\n\t" \
        "smlabb  r5, r11, lr, r5\n\t" \
        "smlatt  r7, r11, lr, r7\n\t"
#define DWK_TAPS5 DWK_TAP("0") DWK_TAP("8") DWK_TAP("16") DWK_TAP("24") DWK_TAP("32")
#define DWK_TAPS7 DWK_TAPS5 DWK_TAP("40") DWK_TAP("48")

/* The loop of a K x K run: dst (r2) and count (r3) are pushed during a pixel, whose rows count down in r2 while
 * r3 walks the taps. 9 instructions per tap, 5 per window row, 10 per output. */
#define DWK_LOOP(k, taps, outs) \
        "ldr     r8, [r1, #168]\n\t" \
        "ldr     r9, [r1, #152]\n\t" \
        "1:\n\t" \
        "ldrd    r4, r5, [r1, #120]\n\t" \
        "ldrd    r6, r7, [r1, #128]\n\t" \
        "push    {r2, r3}\n\t" \
        "ldr     r3, [r1, #192]\n\t" \
        "movs    r2, #" k "\n\t" \
        "2:\n\t" \
        taps \
        "add     r3, r3, #(8 * " k ")\n\t" \
        "ldr     r10, [r1, #196]\n\t" \
        "add     r0, r0, r10\n\t" \
        "subs    r2, r2, #1\n\t" \
        "bne     2b\n\t" \
        "pop     {r2, r3}\n\t" \
        "ldr     r10, [r1, #200]\n\t" \
        "add     r0, r0, r10\n\t" \
        outs \
        "add     r2, r2, r9\n\t" \
        "subs    r3, r3, #1\n\t" \
        "bne     1b\n\t"

#define DW_OUTS DW3_OUT("r4", "0", "72", "136", "104") DW3_OUT("r5", "1", "76", "140", "108") \
                DW3_OUT("r6", "2", "80", "144", "112") DW3_OUT("r7", "3", "84", "148", "116")

/* One assembly run function: `loop` with the registers of run3_asm. */
#define DW_ASM_FN(name, loop)                                                                                      \
    static TTE_NOINLINE void name(tte_dw_run3 *run, const int8_t *x_, int8_t *dst_, int32_t count_)               \
    {                                                                                                              \
        register const int8_t *x __asm__("r0") = x_;                                                               \
        register tte_dw_run3 *r __asm__("r1") = run;                                                               \
        register int8_t *dst __asm__("r2") = dst_;                                                                 \
        register int32_t count __asm__("r3") = count_;                                                             \
        __asm__ volatile(loop                                                                                      \
                         : "+r"(x), "+r"(r), "+r"(dst), "+r"(count)                                                \
                         :                                                                                         \
                         : "r4", "r5", "r6", "r7", "r8", "r9", "r10", "r11", "r12", "lr", "cc", "memory");        \
    }

DW_ASM_FN(run5_asm, DWK_LOOP("5", DWK_TAPS5, DW_OUTS))
DW_ASM_FN(run7_asm, DWK_LOOP("7", DWK_TAPS7, DW_OUTS))
#else
#define TTE_DW_ASM 0
#endif

static TTE_ALWAYS_INLINE uint32_t run3_out(const tte_dw_run3 *r, int32_t j, int32_t acc, int8_t *y)
{
    const int32_t v = tte_mbqm_right2(tte_wrap_add(acc, r->b[j]), r->m[j], r->k[j], r->sh[j]) + r->zp;
    *y = (int8_t)tte_sat8(v);
    return (uint32_t)(*y == v);
}

/* The four outputs of a pixel at dst; returns their mask bits (bit j: channel j). */
static TTE_ALWAYS_INLINE uint32_t run3_outs(const tte_dw_run3 *r, const tte_dw_acc4 *acc, int8_t *dst)
{
    return run3_out(r, 0, acc->a0, dst) | (run3_out(r, 1, acc->a1, dst + 1) << 1) |
           (run3_out(r, 2, acc->a2, dst + 2) << 2) | (run3_out(r, 3, acc->a3, dst + 3) << 3);
}

/* `count` output pixels of one output row whose 3x3 windows lie inside the image, for the fast requantization:
 * x at the first window's top-left tap, dst at its output; mask bits at element `at` onwards when `mask`. */
static TTE_ALWAYS_INLINE void run3(const tte_dw_run3 *r, const int8_t *x, int8_t *dst, int32_t count, uint8_t *mask,
                                   int32_t at)
{
    const int32_t cs = r->cs, row = r->row;
    for (; count > 0; count--, x += r->step, dst += cs, at += cs) {
        tte_dw_acc4 acc = {0, 0, 0, 0};
        const int8_t *xr = x;
        int32_t ky;
        for (ky = 0; ky < 3; ky++, xr += row) {
            tte_dw_tap4(xr, &r->taps[3 * ky], r->xo, r->x_off, &acc);
            tte_dw_tap4(xr + cs, &r->taps[3 * ky + 1], r->xo, r->x_off, &acc);
            tte_dw_tap4(xr + 2 * cs, &r->taps[3 * ky + 2], r->xo, r->x_off, &acc);
        }
        {
            const uint32_t bits = run3_outs(r, &acc, dst);
            if (mask != NULL) {
                tte_put_bits4(mask, at, bits);
            }
        }
    }
}

void tte_dw_run3_plain(tte_dw_run3 *r, const int8_t *x, int8_t *dst, int32_t count)
{
#if TTE_DW_ASM
    if (r->folded) {
        run3_asm(r, x, dst, count);
        return;
    }
#endif
    run3(r, x, dst, count, NULL, 0);
}

/* With the mask bits from element `at` on. */
void tte_dw_run3_mask(tte_dw_run3 *r, const int8_t *x, int8_t *dst, int32_t count, int32_t at)
{
#if TTE_DW_ASM
    if (r->folded) {
        r->at = at;
        run3_asm_mask(r, x, dst, count);
        return;
    }
#endif
    run3(r, x, dst, count, r->mask, at);
}

void tte_dw_run3_make(const tte_dw_args *a, int32_t c, const tte_dw_tap *taps, tte_dw_run3 *r)
{
    int32_t j;
    for (j = 0; j < 9; j++) {
        r->taps[j] = taps[j];
    }
    r->folded = 1;
    for (j = 0; j < 4; j++) {
        const tte_channel_rq rq = tte_rq_of(a->quant, c + j);
        r->m[j] = rq.multiplier;
        r->k[j] = rq.fast_k;
        r->sh[j] = rq.fast_sh;
        r->b[j] = a->bias ? a->bias[c + j] : 0;
        r->kout[j] = tte_fast_k_out(&rq, a->out.offset);
        r->folded = r->folded && rq.shift >= -TTE_FAST_OUT_MAX_SHIFT;
    }
    r->cs = a->c;
    r->row = a->w * a->c;
    r->step = a->stride_w * a->c;
    r->back = r->step - 3 * r->row;
    r->mask = a->mask;
    r->at = 0;
    r->zp = a->out.offset;
    r->x_off = a->x_off;
    r->xo = (uint32_t)(a->x_off & 0xFFFF) * 0x00010001u;
}

void tte_dw_runk_make(const tte_dw_args *a, int32_t c, const tte_dw_tap *taps, tte_dw_run3 *r)
{
    tte_dw_run3_make(a, c, taps, r); /* the first 9 taps are copied but not read */
    r->tapk = taps;
    r->rowback = r->row - a->kw * r->cs;
    r->backk = r->step - a->kh * r->row;
}

/* The portable K x K run (as run3, over r->tapk). */
static void runk(const tte_dw_run3 *r, int32_t k, const int8_t *x, int8_t *dst, int32_t count)
{
    const int32_t cs = r->cs;
    for (; count > 0; count--, x += r->step, dst += cs) {
        tte_dw_acc4 acc = {0, 0, 0, 0};
        const int8_t *xr = x;
        const tte_dw_tap *t = r->tapk;
        int32_t ky, kx;
        for (ky = 0; ky < k; ky++, xr += r->row) {
            for (kx = 0; kx < k; kx++, t++) {
                tte_dw_tap4(xr + kx * cs, t, r->xo, r->x_off, &acc);
            }
        }
        (void)run3_outs(r, &acc, dst); /* the mask bits are not needed */
    }
}

void tte_dw_runk_plain(tte_dw_run3 *r, int32_t k, const int8_t *x, int8_t *dst, int32_t count)
{
#if TTE_DW_ASM
    if (r->folded) {
        (k == 5 ? run5_asm : run7_asm)(r, x, dst, count);
        return;
    }
#endif
    runk(r, k, x, dst, count);
}
