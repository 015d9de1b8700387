/* tte runtime: int8 pooling (TFLite Micro's AVERAGE_POOL_2D and MEAN). */
#ifndef TTE_POOL_H
#define TTE_POOL_H

#include "tte_types.h"

/* Average of the raw int8 values in each window clipped to the image, rounded half away from zero;
 * input and output share scale and zero point. in_dims {N, H, W, C}; out_dims {N, OH, OW, C}. */
void tte_avg_pool2d_s8(const tte_pool_params *params, const tte_dims *in_dims, const int8_t *in,
                       const tte_dims *out_dims, int8_t *out);

/* Mean over the middle axes of a tensor seen as in_dims {outer, reduce_a, reduce_b, inner} (NHWC with axes
 * (1, 2): {N, H, W, C}); the output is [outer, inner]:
 * y = clamp(MBQM(sum + input_offset * reduce_a * reduce_b, multiplier, shift) + output_offset, -128, 127).
 * Limits: reduce_a * reduce_b < 2^23. */
void tte_mean_s8(const tte_mean_params *params, const tte_dims *in_dims, const int8_t *in, int8_t *out);

#endif /* TTE_POOL_H */
