/* The output side of conv2d's small-window instance (conv2d_wide.c): the 2 x 2 blocks of sums of a window
 * pair and a block of channel pairs over the widened int16 lanes of the stack pool (Thumb-2 assembly on DSP
 * targets: 12 instructions per 16 MACs), and their requantization and stores. Separate from conv2d_wide.c, which
 * fills the pool (windows, weights, requantization constants) and walks the pixels: these are the instances it
 * calls per pixel pair (tte_conv_wide.h), each with the block loop inlined and its constants folded in.
 */
#include "tte_conv_wide.h"
#include "tte_fixedpoint.h"
#include "tte_simd.h"

#if TTE_HAVE_DSP && defined(__ARM_FEATURE_DSP) && defined(__thumb2__) && defined(__OPTIMIZE__) && \
    !defined(TTE_DSP_EMULATE)
#define WIDE_ASM 1
#else
#define WIDE_ASM 0
#endif

#if WIDE_ASM
/* One group of dot_block in Thumb-2: 3 LDRD (post-indexed), one more for the second channel and 8 SMLAD, 12
 * instructions for 16 MACs (GCC splits the double-word loads: 15). */
static TTE_ALWAYS_INLINE void dot_group(const uint32_t **x, const uint32_t **w, int32_t *a00, int32_t *a01,
                                        int32_t *a10, int32_t *a11)
{
    uint32_t x0l, x0h, x1l, x1h, wl, wh;
    __asm__("ldrd    %[x0l], %[x0h], [%[x]], #8\n\t"
            "ldrd    %[wl], %[wh], [%[w]], #8\n\t"
            "ldrd    %[x1l], %[x1h], [%[x]], #8\n\t"
            "smlad   %[a00], %[x0l], %[wl], %[a00]\n\t"
            "smlad   %[a00], %[x0h], %[wh], %[a00]\n\t"
            "smlad   %[a10], %[x1l], %[wl], %[a10]\n\t"
            "smlad   %[a10], %[x1h], %[wh], %[a10]\n\t"
            "ldrd    %[wl], %[wh], [%[w]], #8\n\t"
            "smlad   %[a01], %[x0l], %[wl], %[a01]\n\t"
            "smlad   %[a01], %[x0h], %[wh], %[a01]\n\t"
            "smlad   %[a11], %[x1l], %[wl], %[a11]\n\t"
            "smlad   %[a11], %[x1h], %[wh], %[a11]\n\t"
            : [a00] "+r"(*a00), [a01] "+r"(*a01), [a10] "+r"(*a10), [a11] "+r"(*a11), [x] "+r"(*x), [w] "+r"(*w),
              [x0l] "=&r"(x0l), [x0h] "=&r"(x0h), [x1l] "=&r"(x1l), [x1h] "=&r"(x1h), [wl] "=&r"(wl),
              [wh] "=&r"(wh)
            :
            : "memory");
}
#endif

/* The 2 x 2 block of sums (window p, channel j) -> acc[2 * p + j] over `groups` groups of 4 taps, starting at
 * the values in acc. */
static TTE_ALWAYS_INLINE void dot_block(const tte_wide_pool *pool, const int16_t *w, int32_t groups, int32_t acc[4])
{
#if TTE_HAVE_DSP
    const uint32_t *x = pool->words, *x_end = pool->words + 4 * groups;
    const uint32_t *wp = (const uint32_t *)(const void *)w;
    int32_t a00 = acc[0], a01 = acc[1], a10 = acc[2], a11 = acc[3];
#if WIDE_ASM
    int32_t g;
    (void)x_end;
#if defined(__GNUC__) && __GNUC__ >= 8
#pragma GCC unroll 8
#endif
    for (g = 0; g < groups; g++) { /* unrolled whole when `groups` is a constant */
        dot_group(&x, &wp, &a00, &a01, &a10, &a11);
    }
#else
    for (; x != x_end; x += 4, wp += 4) {
        const uint32_t x0l = tte_read_word(x, 0), x0h = tte_read_word(x, 1);
        const uint32_t x1l = tte_read_word(x, 2), x1h = tte_read_word(x, 3);
        uint32_t wl = tte_read_word(wp, 0), wh = tte_read_word(wp, 1);
        a00 = tte_smlad(x0h, wh, tte_smlad(x0l, wl, a00));
        a10 = tte_smlad(x1h, wh, tte_smlad(x1l, wl, a10));
        wl = tte_read_word(wp, 2);
        wh = tte_read_word(wp, 3);
        a01 = tte_smlad(x0h, wh, tte_smlad(x0l, wl, a01));
        a11 = tte_smlad(x1h, wh, tte_smlad(x1l, wl, a11));
    }
#endif
    acc[0] = a00;
    acc[1] = a01;
    acc[2] = a10;
    acc[3] = a11;
#else
    const int16_t *x = pool->lanes;
    int32_t g, t, s[4] = {0, 0, 0, 0};
    for (g = 0; g < groups; g++, x += 8, w += 8) {
        for (t = 0; t < 4; t++) {
            s[0] += x[t] * w[t];
            s[1] += x[t] * w[4 + t];
            s[2] += x[4 + t] * w[t];
            s[3] += x[4 + t] * w[4 + t];
        }
    }
    for (t = 0; t < 4; t++) { /* the biases are added wrapping: int32 sums must not overflow in C */
        acc[t] = tte_wrap_add(acc[t], s[t]);
    }
#endif
}

/* sat8(MBQM(acc, m, -e) + z_add) (tte_mbqm_right2 with k and sh = e - 1): z_add is 0 when the zero point is
 * folded into k (tte_requant_fast_s8), a constant in the instances that need the speed. */
static TTE_ALWAYS_INLINE int8_t out_s8(int32_t acc, int32_t m, int32_t k, int32_t sh, int32_t z_add)
{
    return (int8_t)tte_sat8(tte_mbqm_right2(acc, m, k, sh) + z_add);
}

/* Outputs of the window pair at `dst` (window 1's only when `pair`) for the block's channel pairs. `pair` is
 * a constant in each instance, and so are `groups` (k_pad / 4) and z_add in the 3x3 RGB ones. */
static TTE_ALWAYS_INLINE void block_outputs(const tte_wide_args *a, const tte_wide_pool *pool, int32_t oc0,
                                            int32_t pairs, int pair, int32_t groups, int32_t z_add, int8_t *dst)
{
    const int16_t *w = pool->lanes + 2 * a->k_pad;
    const int32_t *rq = pool->values + a->k_pad * (1 + pairs);
    const int32_t cout = a->cout, step = 2 * a->k_pad;
    int8_t *d = dst + oc0, *end = dst + oc0 + 2 * pairs;
    for (; d != end; d += 2, w += step, rq += TTE_WIDE_RQ_WORDS) {
        int32_t acc[4], m0, k0, m1, k1, sh0, sh1;
        acc[0] = rq[0];
        acc[1] = rq[1];
        acc[2] = acc[0];
        acc[3] = acc[1];
        dot_block(pool, w, groups, acc);
        m0 = rq[2]; /* read after the sums: fewer registers live across them */
        k0 = rq[3];
        m1 = rq[4];
        k1 = rq[5];
        sh0 = rq[6];
        sh1 = rq[7];
        d[0] = out_s8(acc[0], m0, k0, sh0, z_add);
        if (pair) {
            d[cout] = out_s8(acc[2], m0, k0, sh0, z_add);
        }
        if (d + 1 != dst + cout) { /* not the phantom channel */
            d[1] = out_s8(acc[1], m1, k1, sh1, z_add);
            if (pair) {
                d[cout + 1] = out_s8(acc[3], m1, k1, sh1, z_add);
            }
        }
    }
}

void tte_wide_pair_outputs(const tte_wide_args *a, const tte_wide_pool *pool, int32_t oc0, int32_t pairs,
                           int8_t *dst)
{
    block_outputs(a, pool, oc0, pairs, 1, a->k_pad >> 2, a->z_add, dst);
}

/* 3x3 RGB, with the zero point folded (and not: a channel right shift above TTE_FAST_OUT_MAX_SHIFT). */
void tte_wide_pair_outputs_rgb3x3(const tte_wide_args *a, const tte_wide_pool *pool, int32_t oc0, int32_t pairs,
                                  int8_t *dst)
{
    block_outputs(a, pool, oc0, pairs, 1, 7, 0, dst);
}

void tte_wide_pair_outputs_rgb3x3_z(const tte_wide_args *a, const tte_wide_pool *pool, int32_t oc0, int32_t pairs,
                                    int8_t *dst)
{
    block_outputs(a, pool, oc0, pairs, 1, 7, a->z_add, dst);
}

void tte_wide_last_outputs(const tte_wide_args *a, const tte_wide_pool *pool, int32_t oc0, int32_t pairs,
                           int8_t *dst)
{
    block_outputs(a, pool, oc0, pairs, 0, a->k_pad >> 2, a->z_add, dst);
}
