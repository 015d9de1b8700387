/* tte runtime: the int8 GEMM behind conv2d_1x1 and fully_connected (internal building block).
 *
 * out[r * cols + c] = clamp(MBQM(bias[c] + sum_k (lhs[r * lhs_stride + k] + lhs_offset)
 *                                             * (rhs[c * depth + k] + rhs_offset), M[c], S[c]) + out_offset)
 * for r < rows, c < cols: lhs rows are inputs (pixels), rhs rows are weights (output channels).
 * Limits: depth < 32768; rows, cols, depth >= 1; lhs_stride >= depth. bias may be NULL.
 */
#ifndef TTE_GEMM_H
#define TTE_GEMM_H

#include "tte_types.h"

typedef struct {
    int32_t lhs_offset; /* [-128, 128] */
    int32_t rhs_offset; /* [-128, 128] */
    int32_t out_offset; /* [-128, 127] */
    int32_t act_min;    /* [-128, act_max] */
    int32_t act_max;    /* [act_min, 127] */
} tte_gemm_params;

void tte_gemm_s8(const tte_gemm_params *params, const tte_requant *quant, int32_t rows, int32_t lhs_stride,
                 const int8_t *lhs, int32_t cols, int32_t depth, const int8_t *rhs, const int32_t *bias,
                 int8_t *out);

/* The largest depth tte_gemm_mask_pair takes with DSP: its stack buffer holds a column pair's weights as int16
 * (4 * TTE_GEMM_MASK_DEPTH bytes). */
#ifndef TTE_GEMM_MASK_DEPTH
#define TTE_GEMM_MASK_DEPTH 384
#endif

/* One column pair (output channels c, c + 1) of a pointwise convolution with its 1-bit clamp mask, for the full
 * clamp range [-128, 127] and a requantization of tte_fast_out_ok (tte_fixedpoint.h). The caller fills the
 * fields before w0; the assembly reads them at fixed offsets (pointers are 32-bit there). */
typedef struct {
    int32_t bias0, bias1; /* bias + lhs_offset * sum(w) of each column, wrapping */
    int32_t m0, k0, m1, k1, sh0, sh1; /* multiplier, tte_fast_k_out (zero point inside) and fast_sh */
    const int8_t *w0, *w_end, *x_end; /* set by tte_gemm_mask_pair */
    uint8_t *mask; /* cleared by the caller; bit i = element i (NHWC order of the output) */
    int32_t idx;   /* mask index of the first output (row 0, column c); advanced by the pass */
} tte_gemm_mask_args;

/* out[r * cols + c + j] (j = 0, 1) = SSAT(MBQM(bias_j + sum_k lhs[r * depth + k] * w_j[k]) + zp, 8) for rows
 * r < (rows & ~1), and the mask bits (value before the clamp inside [-128, 127]) ORed in at pair->idx + r * cols
 * + j. Returns the rows done: rows & ~1, or 0 when the pass does not apply (cols or idx odd, rows < 2, or with
 * DSP a depth that is not a multiple of 4 or above TTE_GEMM_MASK_DEPTH); the caller computes the rest. */
int32_t tte_gemm_mask_pair(tte_gemm_mask_args *pair, int32_t rows, const int8_t *lhs, int32_t depth, int32_t cols,
                           const int8_t *w0, const int8_t *w1, int8_t *out);

/* One depth step of the 2x2 SMLAD block (gemm_s8_packed.c, gemm_mask_s8.c): rows x and x + depth, int8 values k..k+3,
 * against the two output channels' 16-bit widened weights at w (words 0-1: channel 0, words 2-3: channel 1).
 * Needs tte_simd.h; the int32 sums wrap, as SMLAD's. */
#define TTE_GEMM_STEP_2X2(x, depth, k, w, a00, a01, a10, a11)                                                   \
    do {                                                                                                        \
        const uint32_t v0_ = tte_read_s8x4((x) + (k)), v1_ = tte_read_s8x4((x) + (depth) + (k));                \
        const uint32_t x0l_ = tte_sxtb16(v0_), x0h_ = tte_sxtb16_ror8(v0_);                                     \
        const uint32_t x1l_ = tte_sxtb16(v1_), x1h_ = tte_sxtb16_ror8(v1_);                                     \
        (a00) = tte_smlad(x0h_, tte_read_word(w, 1), tte_smlad(x0l_, tte_read_word(w, 0), (a00)));              \
        (a01) = tte_smlad(x0h_, tte_read_word(w, 3), tte_smlad(x0l_, tte_read_word(w, 2), (a01)));              \
        (a10) = tte_smlad(x1h_, tte_read_word(w, 1), tte_smlad(x1l_, tte_read_word(w, 0), (a10)));              \
        (a11) = tte_smlad(x1h_, tte_read_word(w, 3), tte_smlad(x1l_, tte_read_word(w, 2), (a11)));              \
    } while (0)

#endif /* TTE_GEMM_H */
