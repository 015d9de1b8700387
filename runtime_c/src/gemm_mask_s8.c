/* The pointwise GEMM pass of the train step's mask kernel (tte_gemm_mask_pair, tte_gemm.h): the int8 outputs of
 * a pair of output channels over pairs of pixels, as gemm_s8.c computes them, plus the 1-bit clamp mask.
 *
 * The mask bit of an output is 1 iff its requantized value before the clamp lies in [-128, 127]: with the zero
 * point folded into the requantization (tte_fast_k_out), that value v is exact, the output is SSAT(v, 8), and the
 * bit is (SSAT(v, 8) == v). The caller cleared the mask; each pass ORs the two bits of each of its two pixels.
 * With DSP the pass is Thumb-2 assembly over weights widened to int16 beforehand (as gemm_s8_packed.c's
 * tte_gemm_rows2_cols2_wide), 18 instructions per 16 MACs; each output costs 8 instructions and each pixel pair 25 more
 * for its mask bits.
 */
#include "tte_dot.h"
#include "tte_fixedpoint.h"
#include "tte_gemm.h"
#include "tte_simd.h"

#if TTE_HAVE_DSP && defined(__ARM_FEATURE_DSP) && defined(__thumb2__) && defined(__OPTIMIZE__) && \
    !defined(TTE_DSP_EMULATE)
#define TTE_GEMM_MASK_ASM 1
#else
#define TTE_GEMM_MASK_ASM 0
#endif

/* The mask's byte and bit position of element `idx` ORed with `bits` (two bits, idx even). */
static inline void or_bits2(uint8_t *mask, int32_t idx, uint32_t bits)
{
    mask[idx >> 3] = (uint8_t)(mask[idx >> 3] | (bits << (idx & 7)));
}

#if TTE_HAVE_DSP
/* Rows w0 and w0 + depth (depth a multiple of 4) as int16: per 4 taps k..k+3, row 0's halfword pairs (k, k+2),
 * (k+1, k+3), then row 1's (the layout of gemm_s8_packed.c's tte_gemm_widen_pair). */
static void widen_rows(const int8_t *w0, const int8_t *w1, int32_t depth, uint32_t *dst)
{
    int32_t k;
    for (k = 0; k < depth; k += 4, dst += 4) {
        const uint32_t v0 = tte_read_s8x4(w0 + k), v1 = tte_read_s8x4(w1 + k);
        dst[0] = tte_sxtb16(v0);
        dst[1] = tte_sxtb16_ror8(v0);
        dst[2] = tte_sxtb16(v1);
        dst[3] = tte_sxtb16_ror8(v1);
    }
}
#endif

#if TTE_GEMM_MASK_ASM
/* One output: r7-r10 hold the accumulators, r11/r12/lr the channel's m, k_out, sh. Leaves the output byte in
 * `acc` (stored at [addr]) and v - SSAT(v) in `acc` afterwards (zero iff the mask bit is 1). */
#define MASK_OUT(acc, store) \
        "and     r1, " acc ", #0x80000000\n\t" \
        "orr     r1, r1, #0x40000000\n\t" \
        "add     r6, r12, " acc ", asr #31\n\t" \
        "smlal   r1, r6, " acc ", r11\n\t" \
        "asr     r6, r6, lr\n\t" \
        "ssat    " acc ", #8, r6\n\t" \
        store \
        "sub     " acc ", r6, " acc "\n\t"

/* ORs the two bits of one pixel (v - SSAT(v) in a and b: CLZ >> 5 is 1 iff zero) at mask index r12. */
#define MASK_BITS(a, b) \
        "clz     " a ", " a "\n\t" \
        "clz     " b ", " b "\n\t" \
        "lsr     " a ", " a ", #5\n\t" \
        "lsr     " b ", " b ", #5\n\t" \
        "orr     " a ", " a ", " b ", lsl #1\n\t" \
        "add     lr, r11, r12, lsr #3\n\t" \
        "and     r1, r12, #7\n\t" \
        "ldrb    r6, [lr]\n\t" \
        "lsl     " a ", " a ", r1\n\t" \
        "orr     r6, r6, " a "\n\t" \
        "strb    r6, [lr]\n\t"

/* r0 lhs, r1 widened weights, r2 depth - 4, r3 pair, r4 dst, r5 cols, r7-r10 accumulators (row 0: r7, r8; row
 * 1: r9, r10); r3-r5 are pushed during the inner loop, which needs 14 registers. */
static TTE_NOINLINE void pass_wide(tte_gemm_mask_args *pair, const int8_t *lhs, int32_t depth, int32_t cols,
                                   int8_t *out)
{
    register const int8_t *x __asm__("r0") = lhs;
    register int32_t d4 __asm__("r2") = depth - 4;
    register tte_gemm_mask_args *p __asm__("r3") = pair;
    register int8_t *dst __asm__("r4") = out;
    register int32_t n __asm__("r5") = cols;
    __asm__ volatile(
        "1:\n\t"
        "ldrd    r7, r8, [r3]\n\t"       /* biases */
        "ldrd    r1, r11, [r3, #32]\n\t" /* w0, w_end */
        "mov     r9, r7\n\t"
        "mov     r10, r8\n\t"
        "push    {r3, r4, r5}\n\t"
        "2:\n\t"
        "ldrd    r6, r3, [r1, #8]\n\t"
        "ldrd    r5, r4, [r1], #16\n\t"
        "ldr     lr, [r0], #4\n\t"
        "sxtb16  r12, lr\n\t"
        "sxtb16  lr, lr, ror #8\n\t"
        "smlad   r7, r12, r5, r7\n\t"
        "smlad   r8, r12, r6, r8\n\t"
        "smlad   r7, lr, r4, r7\n\t"
        "smlad   r8, lr, r3, r8\n\t"
        "ldr     lr, [r0, r2]\n\t"
        "sxtb16  r12, lr\n\t"
        "sxtb16  lr, lr, ror #8\n\t"
        "smlad   r9, r12, r5, r9\n\t"
        "smlad   r10, r12, r6, r10\n\t"
        "smlad   r9, lr, r4, r9\n\t"
        "smlad   r10, lr, r3, r10\n\t"
        "cmp     r1, r11\n\t"
        "bne     2b\n\t"
        "pop     {r3, r4, r5}\n\t"
        "add     r0, r0, r2\n\t" /* the next pair of rows: x + depth */
        "adds    r0, r0, #4\n\t"
        "ldrd    r11, r12, [r3, #8]\n\t" /* column 0: m0, k0, sh0 */
        "ldr     lr, [r3, #24]\n\t"
        MASK_OUT("r7", "strb    r7, [r4]\n\t")
        MASK_OUT("r9", "strb    r9, [r4, r5]\n\t")
        "ldrd    r11, r12, [r3, #16]\n\t" /* column 1: m1, k1, sh1 */
        "ldr     lr, [r3, #28]\n\t"
        MASK_OUT("r8", "strb    r8, [r4, #1]\n\t")
        MASK_OUT("r10", "add     r1, r4, r5\n\tstrb    r10, [r1, #1]\n\t")
        "ldrd    r11, r12, [r3, #44]\n\t" /* mask, idx */
        MASK_BITS("r7", "r8")
        "add     r12, r12, r5\n\t"
        MASK_BITS("r9", "r10")
        "add     r12, r12, r5\n\t"
        "str     r12, [r3, #48]\n\t"
        "add     r4, r4, r5, lsl #1\n\t"
        "ldr     r6, [r3, #40]\n\t" /* x_end */
        "cmp     r0, r6\n\t"
        "bne     1b\n\t"
        : "+r"(x), "+r"(d4), "+r"(p), "+r"(dst), "+r"(n)
        :
        : "r1", "r6", "r7", "r8", "r9", "r10", "r11", "r12", "lr", "cc", "memory");
}
#endif

#if !TTE_GEMM_MASK_ASM
/* v = the requantized value with the zero point (exact, see tte_fast_k_out); writes SSAT(v, 8), returns the bit. */
static inline uint32_t out_bit(int32_t acc, int32_t m, int32_t k_out, int32_t sh, int8_t *y)
{
    const int32_t v = tte_mbqm_right2(acc, m, k_out, sh);
    *y = (int8_t)tte_sat8(v);
    return (uint32_t)(*y == v);
}

/* The portable pass (with emulated SIMD on the host it reads the widened rows as the assembly does). */
static void pass_c(tte_gemm_mask_args *p, const int8_t *lhs, int32_t depth, int32_t cols, int8_t *out)
{
    const int8_t *x = lhs;
    int8_t *dst = out;
    for (; x != p->x_end; x += 2 * depth, dst += 2 * cols, p->idx += 2 * cols) {
        int32_t a00 = p->bias0, a01 = p->bias1, a10 = p->bias0, a11 = p->bias1; /* the sums wrap, as SMLAD's */
        uint32_t b0, b1;
#if TTE_HAVE_DSP
        const uint32_t *w = (const uint32_t *)(const void *)p->w0;
        int32_t k;
        for (k = 0; k < depth; k += 4, w += 4) {
            TTE_GEMM_STEP_2X2(x, depth, k, w, a00, a01, a10, a11);
        }
#else
        int32_t acc[4] = {0, 0, 0, 0};
        tte_dot_2x2(x, x + depth, p->w0, p->w_end, depth, acc);
        a00 = tte_wrap_add(a00, acc[0]);
        a01 = tte_wrap_add(a01, acc[1]);
        a10 = tte_wrap_add(a10, acc[2]);
        a11 = tte_wrap_add(a11, acc[3]);
#endif
        b0 = out_bit(a00, p->m0, p->k0, p->sh0, dst) | (out_bit(a01, p->m1, p->k1, p->sh1, dst + 1) << 1);
        b1 = out_bit(a10, p->m0, p->k0, p->sh0, dst + cols) |
             (out_bit(a11, p->m1, p->k1, p->sh1, dst + cols + 1) << 1);
        or_bits2(p->mask, p->idx, b0);
        or_bits2(p->mask, p->idx + cols, b1);
    }
}
#endif

int32_t tte_gemm_mask_pair(tte_gemm_mask_args *pair, int32_t rows, const int8_t *lhs, int32_t depth, int32_t cols,
                           const int8_t *w0, const int8_t *w1, int8_t *out)
{
#if TTE_HAVE_DSP
    uint32_t widened[TTE_GEMM_MASK_DEPTH];
    if (depth % 4 != 0 || depth > TTE_GEMM_MASK_DEPTH || cols % 2 != 0 || pair->idx % 2 != 0 || rows < 2) {
        return 0;
    }
    widen_rows(w0, w1, depth, widened);
    pair->w0 = (const int8_t *)widened;
    pair->w_end = (const int8_t *)(widened + depth);
#else
    if (cols % 2 != 0 || pair->idx % 2 != 0 || rows < 2) {
        return 0;
    }
    pair->w0 = w0;
    pair->w_end = w1;
#endif
    pair->x_end = lhs + (rows & ~1) * depth;
#if TTE_GEMM_MASK_ASM
    pass_wide(pair, lhs, depth, cols, out);
#else
    pass_c(pair, lhs, depth, cols, out);
#endif
    return rows & ~1;
}
