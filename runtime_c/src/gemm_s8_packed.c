/* The packed passes of the int8 GEMM (gemm_s8.c): a column pair over every pair of rows in the fast instance
 * (tte_fast_out_ok, folded biases, lhs rows packed: stride == depth), as one Thumb-2 assembly loop on DSP
 * targets, either over the int8 weights or over weights widened to int16 beforehand (tte_gemm_widen_pair), and
 * their portable C versions elsewhere. Separate from gemm_s8.c, which picks the instance per column pair and
 * holds the general C loops: these passes are the hand-scheduled inner loops of the 1x1 layers, behind the
 * interface of tte_gemm_packed.h.
 */
#include "tte_gemm_packed.h"

#include "tte_dot.h"
#include "tte_fixedpoint.h"
#include "tte_gemm.h"

#if TTE_GEMM_ASM
/* The whole pass in Thumb-2 assembly, for depth a multiple of 4: per pair of rows, the accumulators start at
 * the biases, each 4-byte step of the inner loop is 4 loads, 8 SXTB16 and 8 SMLAD (16 MACs), and each output
 * is requantized in 7 instructions (tte_requant_fast_s8: and, orr, add, smlal, asr, ssat, strb). Registers:
 * r0 lhs, r1 weights, r2 depth - 4, r3 pair, r4 dst, r5 cols, r7-r10 accumulators; r3-r5 are pushed during
 * the inner loop, which needs 14 registers. The macros are the assembly around the inner loop's weight loads,
 * which leave column 0's (k, k+2), (k+1, k+3) halfword pairs in r5, r4 and column 1's in r6, r3. */
#define GEMM_PASS_HEAD \
        "1:\n\t" \
        "ldrd    r7, r8, [r3]\n\t"      /* biases */ \
        "ldrd    r1, r11, [r3, #32]\n\t" /* w0, w_end */ \
        "mov     r9, r7\n\t" \
        "mov     r10, r8\n\t" \
        "push    {r3, r4, r5}\n\t" \
        "2:\n\t"

#define GEMM_PASS_TAIL \
        "ldr     lr, [r0], #4\n\t" \
        "sxtb16  r12, lr\n\t" \
        "sxtb16  lr, lr, ror #8\n\t" \
        "smlad   r7, r12, r5, r7\n\t" \
        "smlad   r8, r12, r6, r8\n\t" \
        "smlad   r7, lr, r4, r7\n\t" \
        "smlad   r8, lr, r3, r8\n\t" \
        "ldr     lr, [r0, r2]\n\t" \
        "sxtb16  r12, lr\n\t" \
        "sxtb16  lr, lr, ror #8\n\t" \
        "smlad   r9, r12, r5, r9\n\t" \
        "smlad   r10, r12, r6, r10\n\t" \
        "smlad   r9, lr, r4, r9\n\t" \
        "smlad   r10, lr, r3, r10\n\t" \
        "cmp     r1, r11\n\t" \
        "bne     2b\n\t" \
        "pop     {r3, r4, r5}\n\t" \
        "add     r0, r0, r2\n\t" /* the next pair of rows: x + depth */ \
        "adds    r0, r0, #4\n\t" \
        "ldrd    r11, r12, [r3, #8]\n\t" /* column 0: m0, k0, sh0 */ \
        "ldr     lr, [r3, #24]\n\t" \
        "and     r1, r7, #0x80000000\n\t" \
        "orr     r1, r1, #0x40000000\n\t" \
        "add     r6, r12, r7, asr #31\n\t" \
        "smlal   r1, r6, r7, r11\n\t" \
        "asr     r6, r6, lr\n\t" \
        "ssat    r6, #8, r6\n\t" \
        "strb    r6, [r4]\n\t" \
        "and     r1, r9, #0x80000000\n\t" \
        "orr     r1, r1, #0x40000000\n\t" \
        "add     r6, r12, r9, asr #31\n\t" \
        "smlal   r1, r6, r9, r11\n\t" \
        "asr     r6, r6, lr\n\t" \
        "ssat    r6, #8, r6\n\t" \
        "strb    r6, [r4, r5]\n\t" \
        "ldrd    r11, r12, [r3, #16]\n\t" /* column 1: m1, k1, sh1 */ \
        "ldr     lr, [r3, #28]\n\t" \
        "and     r1, r8, #0x80000000\n\t" \
        "orr     r1, r1, #0x40000000\n\t" \
        "add     r6, r12, r8, asr #31\n\t" \
        "smlal   r1, r6, r8, r11\n\t" \
        "asr     r6, r6, lr\n\t" \
        "ssat    r6, #8, r6\n\t" \
        "strb    r6, [r4, #1]\n\t" \
        "and     r1, r10, #0x80000000\n\t" \
        "orr     r1, r1, #0x40000000\n\t" \
        "add     r6, r12, r10, asr #31\n\t" \
        "smlal   r1, r6, r10, r11\n\t" \
        "asr     r6, r6, lr\n\t" \
        "ssat    r6, #8, r6\n\t" \
        "add     r7, r4, r5\n\t" \
        "strb    r6, [r7, #1]\n\t" \
        "add     r4, r4, r5, lsl #1\n\t" \
        "ldr     r6, [r3, #40]\n\t" /* x_end */ \
        "cmp     r0, r6\n\t" \
        "bne     1b\n\t"

void tte_gemm_rows2_cols2_packed(const tte_gemm_pair *pair, const int8_t *lhs, int32_t depth, int32_t cols,
                                 int8_t *out)
{
    register const int8_t *x __asm__("r0") = lhs;
    register int32_t d4 __asm__("r2") = depth - 4;
    register const tte_gemm_pair *p __asm__("r3") = pair;
    register int8_t *dst __asm__("r4") = out;
    register int32_t n __asm__("r5") = cols;
    __asm__ volatile(GEMM_PASS_HEAD
        "ldr     r4, [r1], #4\n\t"
        "ldr     r3, [r1, r2]\n\t"
        "sxtb16  r5, r4\n\t"
        "sxtb16  r4, r4, ror #8\n\t"
        "sxtb16  r6, r3\n\t"
        "sxtb16  r3, r3, ror #8\n\t"
                     GEMM_PASS_TAIL
        : "+r"(x), "+r"(d4), "+r"(p), "+r"(dst), "+r"(n)
        :
        : "r1", "r6", "r7", "r8", "r9", "r10", "r11", "r12", "lr", "cc", "memory");
}

/* The same pass over weights widened beforehand (tte_gemm_widen_pair), which the inner loop loads with two LDRD
 * instead of 2 LDR and 4 SXTB16: 18 instructions per 16 MACs instead of 22. pair->w0 and w_end bound the widened
 * buffer. */
void tte_gemm_rows2_cols2_wide(const tte_gemm_pair *pair, const int8_t *lhs, int32_t depth, int32_t cols,
                               int8_t *out)
{
    register const int8_t *x __asm__("r0") = lhs;
    register int32_t d4 __asm__("r2") = depth - 4;
    register const tte_gemm_pair *p __asm__("r3") = pair;
    register int8_t *dst __asm__("r4") = out;
    register int32_t n __asm__("r5") = cols;
    __asm__ volatile(GEMM_PASS_HEAD
        "ldrd    r6, r3, [r1, #8]\n\t"
        "ldrd    r5, r4, [r1], #16\n\t"
                     GEMM_PASS_TAIL
        : "+r"(x), "+r"(d4), "+r"(p), "+r"(dst), "+r"(n)
        :
        : "r1", "r6", "r7", "r8", "r9", "r10", "r11", "r12", "lr", "cc", "memory");
}
#else
/* The portable version of the pass above (the host tests check its arithmetic, folded zero point included). */
void tte_gemm_rows2_cols2_packed(const tte_gemm_pair *p, const int8_t *lhs, int32_t depth, int32_t cols,
                                 int8_t *out)
{
    const int8_t *x = lhs;
    int8_t *dst = out;
    for (; x != p->x_end; x += 2 * depth, dst += 2 * cols) {
        int32_t acc[4] = {0, 0, 0, 0}; /* the biases are added wrapping: int32 sums must not overflow in C */
        int8_t y00, y01, y10, y11;
        tte_dot_2x2(x, x + depth, p->w0, p->w_end, depth, acc);
        y00 = tte_requant_fast_s8(tte_wrap_add(acc[0], p->bias0), p->m0, p->k0, p->sh0);
        y10 = tte_requant_fast_s8(tte_wrap_add(acc[2], p->bias0), p->m0, p->k0, p->sh0);
        y01 = tte_requant_fast_s8(tte_wrap_add(acc[1], p->bias1), p->m1, p->k1, p->sh1);
        y11 = tte_requant_fast_s8(tte_wrap_add(acc[3], p->bias1), p->m1, p->k1, p->sh1);
        dst[0] = y00;
        dst[1] = y01;
        dst[cols] = y10;
        dst[cols + 1] = y11;
    }
}

#if TTE_HAVE_DSP
/* The portable version of the widened-weights pass (with emulated SIMD on the host: checks tte_gemm_widen_pair's
 * layout). */
void tte_gemm_rows2_cols2_wide(const tte_gemm_pair *p, const int8_t *lhs, int32_t depth, int32_t cols,
                               int8_t *out)
{
    const int8_t *x = lhs;
    int8_t *dst = out;
    for (; x != p->x_end; x += 2 * depth, dst += 2 * cols) {
        const uint32_t *w = (const uint32_t *)(const void *)p->w0;
        int32_t a00 = p->bias0, a01 = p->bias1, a10 = p->bias0, a11 = p->bias1, k; /* SMLAD sums wrap */
        for (k = 0; k < depth; k += 4, w += 4) {
            TTE_GEMM_STEP_2X2(x, depth, k, w, a00, a01, a10, a11);
        }
        dst[0] = tte_requant_fast_s8(a00, p->m0, p->k0, p->sh0);
        dst[1] = tte_requant_fast_s8(a01, p->m1, p->k1, p->sh1);
        dst[cols] = tte_requant_fast_s8(a10, p->m0, p->k0, p->sh0);
        dst[cols + 1] = tte_requant_fast_s8(a11, p->m1, p->k1, p->sh1);
    }
}
#endif
#endif

#if TTE_HAVE_DSP
/* Weight rows w0 and w0 + depth (depth a multiple of 4) widened for tte_gemm_rows2_cols2_wide: per 4 taps
 * k..k+3, row 0's halfword pairs (k, k+2), (k+1, k+3), then row 1's. */
void tte_gemm_widen_pair(const int8_t *w0, int32_t depth, uint32_t *dst)
{
    int32_t k;
    for (k = 0; k < depth; k += 4, dst += 4) {
        const uint32_t v0 = tte_read_s8x4(w0 + k), v1 = tte_read_s8x4(w0 + depth + k);
        dst[0] = tte_sxtb16(v0);
        dst[1] = tte_sxtb16_ror8(v0);
        dst[2] = tte_sxtb16(v1);
        dst[3] = tte_sxtb16_ror8(v1);
    }
}
#endif
