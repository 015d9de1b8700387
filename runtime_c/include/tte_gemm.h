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

#endif /* TTE_GEMM_H */
