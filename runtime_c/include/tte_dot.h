/* tte runtime: int8 dot-product blocks shared by the conv and fully connected kernels (internal).
 *
 * Two kinds of blocks:
 * - "_off" blocks add offsets to both operands (sum (x + x_off) * (w + w_off)); the DSP path gets the offsets
 *   for free from SXTAB16. Used where each input is read once per output channel pair.
 * - Raw blocks (sum x * w) for the GEMM, whose caller folds x_off * sum(w) into the bias once per output
 *   channel, exact in wrapping int32 arithmetic.
 * Each block adds to its accumulators; len may be any value >= 0. Sums must fit in int32: with int8 data and
 * offsets in [-128, 128] that holds for len < 32768 ("_off") and len < 131072 (raw).
 */
#ifndef TTE_DOT_H
#define TTE_DOT_H

#include <stdint.h>

#include "tte_simd.h"

/* acc0 += sum (x + x_off) * (w0 + w_off), acc1 likewise with w1. */
static inline void tte_dot_1x2_off(const int8_t *x, const int8_t *w0, const int8_t *w1, int32_t len,
                                   int32_t x_off, int32_t w_off, int32_t *acc0, int32_t *acc1)
{
    int32_t a0 = *acc0, a1 = *acc1;
    int32_t k = 0;
#if TTE_HAVE_DSP
    const uint32_t xo = tte_dup16(x_off), wo = tte_dup16(w_off);
    for (; k + 4 <= len; k += 4) {
        const uint32_t xv = tte_read_s8x4(x + k);
        const uint32_t xl = tte_sxtab16(xo, xv), xh = tte_sxtab16_ror8(xo, xv);
        uint32_t wv = tte_read_s8x4(w0 + k);
        a0 = tte_smlad(xl, tte_sxtab16(wo, wv), a0);
        a0 = tte_smlad(xh, tte_sxtab16_ror8(wo, wv), a0);
        wv = tte_read_s8x4(w1 + k);
        a1 = tte_smlad(xl, tte_sxtab16(wo, wv), a1);
        a1 = tte_smlad(xh, tte_sxtab16_ror8(wo, wv), a1);
    }
#endif
    for (; k < len; k++) {
        const int32_t xv = x[k] + x_off;
        a0 += xv * (w0[k] + w_off);
        a1 += xv * (w1[k] + w_off);
    }
    *acc0 = a0;
    *acc1 = a1;
}

/* sum (x + x_off) * (w + w_off). */
static inline int32_t tte_dot_1x1_off(const int8_t *x, const int8_t *w, int32_t len, int32_t x_off, int32_t w_off)
{
    int32_t a = 0;
    int32_t k = 0;
#if TTE_HAVE_DSP
    const uint32_t xo = tte_dup16(x_off), wo = tte_dup16(w_off);
    for (; k + 4 <= len; k += 4) {
        const uint32_t xv = tte_read_s8x4(x + k), wv = tte_read_s8x4(w + k);
        a = tte_smlad(tte_sxtab16(xo, xv), tte_sxtab16(wo, wv), a);
        a = tte_smlad(tte_sxtab16_ror8(xo, xv), tte_sxtab16_ror8(wo, wv), a);
    }
#endif
    for (; k < len; k++) {
        a += (x[k] + x_off) * (w[k] + w_off);
    }
    return a;
}

/* acc[2 * i + j] += sum x_i * w_j for two inputs and two weight rows (raw values). */
static inline void tte_dot_2x2(const int8_t *x0, const int8_t *x1, const int8_t *w0, const int8_t *w1, int32_t len,
                               int32_t acc[4])
{
    int32_t a00 = acc[0], a01 = acc[1], a10 = acc[2], a11 = acc[3];
    int32_t k = 0;
#if TTE_HAVE_DSP
    for (; k + 4 <= len; k += 4) {
        const uint32_t wa = tte_read_s8x4(w0 + k), wb = tte_read_s8x4(w1 + k);
        const uint32_t w0l = tte_sxtb16(wa), w0h = tte_sxtb16_ror8(wa);
        const uint32_t w1l = tte_sxtb16(wb), w1h = tte_sxtb16_ror8(wb);
        uint32_t xv = tte_read_s8x4(x0 + k);
        uint32_t xl = tte_sxtb16(xv), xh = tte_sxtb16_ror8(xv);
        a00 = tte_smlad(xl, w0l, a00);
        a00 = tte_smlad(xh, w0h, a00);
        a01 = tte_smlad(xl, w1l, a01);
        a01 = tte_smlad(xh, w1h, a01);
        xv = tte_read_s8x4(x1 + k);
        xl = tte_sxtb16(xv);
        xh = tte_sxtb16_ror8(xv);
        a10 = tte_smlad(xl, w0l, a10);
        a10 = tte_smlad(xh, w0h, a10);
        a11 = tte_smlad(xl, w1l, a11);
        a11 = tte_smlad(xh, w1h, a11);
    }
#endif
    for (; k < len; k++) {
        const int32_t xa = x0[k], xb = x1[k], wa = w0[k], wb = w1[k];
        a00 += xa * wa;
        a01 += xa * wb;
        a10 += xb * wa;
        a11 += xb * wb;
    }
    acc[0] = a00;
    acc[1] = a01;
    acc[2] = a10;
    acc[3] = a11;
}

/* acc[2 * i + j] += sum (x_i + x_off) * w_j for two inputs and two weight rows (weights raw). */
static inline void tte_dot_2x2_xoff(const int8_t *x0, const int8_t *x1, const int8_t *w0, const int8_t *w1,
                                    int32_t len, int32_t x_off, int32_t acc[4])
{
    int32_t a00 = acc[0], a01 = acc[1], a10 = acc[2], a11 = acc[3];
    int32_t k = 0;
#if TTE_HAVE_DSP
    const uint32_t xo = tte_dup16(x_off);
    for (; k + 4 <= len; k += 4) {
        const uint32_t wa = tte_read_s8x4(w0 + k), wb = tte_read_s8x4(w1 + k);
        const uint32_t w0l = tte_sxtb16(wa), w0h = tte_sxtb16_ror8(wa);
        const uint32_t w1l = tte_sxtb16(wb), w1h = tte_sxtb16_ror8(wb);
        uint32_t xv = tte_read_s8x4(x0 + k);
        uint32_t xl = tte_sxtab16(xo, xv), xh = tte_sxtab16_ror8(xo, xv);
        a00 = tte_smlad(xl, w0l, a00);
        a00 = tte_smlad(xh, w0h, a00);
        a01 = tte_smlad(xl, w1l, a01);
        a01 = tte_smlad(xh, w1h, a01);
        xv = tte_read_s8x4(x1 + k);
        xl = tte_sxtab16(xo, xv);
        xh = tte_sxtab16_ror8(xo, xv);
        a10 = tte_smlad(xl, w0l, a10);
        a10 = tte_smlad(xh, w0h, a10);
        a11 = tte_smlad(xl, w1l, a11);
        a11 = tte_smlad(xh, w1h, a11);
    }
#endif
    for (; k < len; k++) {
        const int32_t xa = x0[k] + x_off, xb = x1[k] + x_off, wa = w0[k], wb = w1[k];
        a00 += xa * wa;
        a01 += xa * wb;
        a10 += xb * wa;
        a11 += xb * wb;
    }
    acc[0] = a00;
    acc[1] = a01;
    acc[2] = a10;
    acc[3] = a11;
}

/* tte_dot_2x2 for the common layout x1 = x0 + len, w1 = w0 + len (rows of one matrix back to back). On Cortex-M
 * with DSP, the 4-byte loop is hand-scheduled in 14 registers (4 accumulators, 6 temporaries, 2 pointers, the
 * row offset and the end): 4 loads, 8 SXTB16 and 8 SMLAD per 16 MACs, which GCC does not reach without
 * spilling. The asm needs an optimizing build (at -O0 GCC cannot free 14 registers). */
static inline void tte_dot_2x2_packed(const int8_t *x0, const int8_t *w0, int32_t len, int32_t acc[4])
{
#if TTE_HAVE_DSP && defined(__ARM_FEATURE_DSP) && defined(__OPTIMIZE__) && !defined(TTE_DSP_EMULATE)
    int32_t a00 = acc[0], a01 = acc[1], a10 = acc[2], a11 = acc[3];
    const int32_t n4 = len & ~3;
    const int8_t *x = x0, *w = w0;
    uint32_t t0, t1, t2, t3, t4, t5;
    if (n4 > 0) {
        /* The pointers start one word early: pre-indexed loads with writeback step them, and x + len, w + len
         * address the second rows. The loop ends after the word at `last`. */
        const int8_t *last = w0 + (n4 - 4);
        __asm__ volatile(
            "sub     %[x], %[x], #4\n\t"
            "sub     %[w], %[w], #4\n\t"
            "1:\n\t"
            "ldr     %[t1], [%[w], #4]!\n\t"
            "ldr     %[t0], [%[w], %[d]]\n\t"
            "sxtb16  %[t2], %[t1]\n\t"
            "sxtb16  %[t1], %[t1], ror #8\n\t"
            "sxtb16  %[t3], %[t0]\n\t"
            "sxtb16  %[t0], %[t0], ror #8\n\t"
            "ldr     %[t5], [%[x], #4]!\n\t"
            "sxtb16  %[t4], %[t5]\n\t"
            "sxtb16  %[t5], %[t5], ror #8\n\t"
            "smlad   %[a00], %[t4], %[t2], %[a00]\n\t"
            "smlad   %[a01], %[t4], %[t3], %[a01]\n\t"
            "smlad   %[a00], %[t5], %[t1], %[a00]\n\t"
            "smlad   %[a01], %[t5], %[t0], %[a01]\n\t"
            "ldr     %[t5], [%[x], %[d]]\n\t"
            "sxtb16  %[t4], %[t5]\n\t"
            "sxtb16  %[t5], %[t5], ror #8\n\t"
            "smlad   %[a10], %[t4], %[t2], %[a10]\n\t"
            "smlad   %[a11], %[t4], %[t3], %[a11]\n\t"
            "smlad   %[a10], %[t5], %[t1], %[a10]\n\t"
            "smlad   %[a11], %[t5], %[t0], %[a11]\n\t"
            "cmp     %[w], %[last]\n\t"
            "bne     1b\n\t"
            : [a00] "+r"(a00), [a01] "+r"(a01), [a10] "+r"(a10), [a11] "+r"(a11), [x] "+r"(x), [w] "+r"(w),
              [t0] "=&r"(t0), [t1] "=&r"(t1), [t2] "=&r"(t2), [t3] "=&r"(t3), [t4] "=&r"(t4), [t5] "=&r"(t5)
            : [d] "r"(len), [last] "r"(last)
            : "cc", "memory");
    }
    acc[0] = a00;
    acc[1] = a01;
    acc[2] = a10;
    acc[3] = a11;
    if (n4 < len) {
        int32_t tail[4] = {0, 0, 0, 0};
        tte_dot_2x2(x0 + n4, x0 + len + n4, w0 + n4, w0 + len + n4, len - n4, tail);
        acc[0] += tail[0];
        acc[1] += tail[1];
        acc[2] += tail[2];
        acc[3] += tail[3];
    }
#else
    tte_dot_2x2(x0, x0 + len, w0, w0 + len, len, acc);
#endif
}

/* acc0 += sum x0 * w, acc1 += sum x1 * w (raw values). */
static inline void tte_dot_2x1(const int8_t *x0, const int8_t *x1, const int8_t *w, int32_t len, int32_t *acc0,
                               int32_t *acc1)
{
    int32_t a0 = *acc0, a1 = *acc1;
    int32_t k = 0;
#if TTE_HAVE_DSP
    for (; k + 4 <= len; k += 4) {
        const uint32_t wv = tte_read_s8x4(w + k);
        const uint32_t wl = tte_sxtb16(wv), wh = tte_sxtb16_ror8(wv);
        uint32_t xv = tte_read_s8x4(x0 + k);
        a0 = tte_smlad(tte_sxtb16(xv), wl, a0);
        a0 = tte_smlad(tte_sxtb16_ror8(xv), wh, a0);
        xv = tte_read_s8x4(x1 + k);
        a1 = tte_smlad(tte_sxtb16(xv), wl, a1);
        a1 = tte_smlad(tte_sxtb16_ror8(xv), wh, a1);
    }
#endif
    for (; k < len; k++) {
        a0 += x0[k] * w[k];
        a1 += x1[k] * w[k];
    }
    *acc0 = a0;
    *acc1 = a1;
}

/* sum w (raw values), for folding an input offset into a bias. */
static inline int32_t tte_sum_s8(const int8_t *w, int32_t len)
{
    int32_t s = 0;
    int32_t k;
    for (k = 0; k < len; k++) {
        s += w[k];
    }
    return s;
}

#endif /* TTE_DOT_H */
