/* tte runtime: the packed passes of the int8 GEMM (gemm_s8_packed.c), which tte_gemm_s8 (gemm_s8.c) calls per
 * column pair in the fast instance (internal).
 */
#ifndef TTE_GEMM_PACKED_H
#define TTE_GEMM_PACKED_H

#include "tte_simd.h"
#include "tte_types.h"

/* 1 when the passes are the Thumb-2 assembly, which needs a depth that is a multiple of 4. */
#if TTE_HAVE_DSP && defined(__ARM_FEATURE_DSP) && defined(__thumb2__) && defined(__OPTIMIZE__) && \
    !defined(TTE_DSP_EMULATE)
#define TTE_GEMM_ASM 1
#else
#define TTE_GEMM_ASM 0 /* the portable passes: any depth */
#endif

/* The two columns of a pass in the fast instance (tte_fast_out_ok): folded biases, the requantization with the
 * zero point inside (tte_requant_fast_s8), their weight rows and where the lhs rows end. The field order is
 * the one the assembly loads in pairs (LDRD); pointers are 32-bit there. */
typedef struct {
    int32_t bias0, bias1, m0, k0, m1, k1, sh0, sh1;
    const int8_t *w0, *w_end, *x_end; /* w_end = w0 + depth: row 1 follows row 0; x_end: after the last pair */
} tte_gemm_pair;

/* out[r * cols + j] (j = 0, 1: the pair's columns) for the rows r < (rows & ~1), the lhs rows packed
 * (lhs_stride == depth) and ending at pair->x_end = lhs + (rows & ~1) * depth: tte_requant_fast_s8 of pair->bias_j
 * plus the dot product of lhs row r and weight row j (pair->w0, pair->w_end = w0 + depth), wrapping. With
 * TTE_GEMM_ASM depth must be a multiple of 4. */
void tte_gemm_rows2_cols2_packed(const tte_gemm_pair *pair, const int8_t *lhs, int32_t depth, int32_t cols,
                                 int8_t *out);

#if TTE_HAVE_DSP
/* The same over the pair's weights widened by tte_gemm_widen_pair (depth a multiple of 4): pair->w0 the widened
 * buffer, pair->w_end its end (4 * depth bytes after w0). */
void tte_gemm_rows2_cols2_wide(const tte_gemm_pair *pair, const int8_t *lhs, int32_t depth, int32_t cols,
                               int8_t *out);

/* Weight rows w0 and w0 + depth (depth a multiple of 4) widened to int16 for tte_gemm_rows2_cols2_wide: depth
 * words at dst. */
void tte_gemm_widen_pair(const int8_t *w0, int32_t depth, uint32_t *dst);
#endif

#endif /* TTE_GEMM_PACKED_H */
