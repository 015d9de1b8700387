/* tte runtime: int8 max pooling (TFLite Micro's MAX_POOL_2D) and its training pair.
 *
 * Geometry as tte_avg_pool2d_s8 (tte_pool_params): windows clipped to the image, padded taps never win (the
 * maximum starts at -128); input and output share scale and zero point; the result is clamped to
 * [act_min, act_max]. Any pads are allowed: an empty window gives act_min.
 */
#ifndef TTE_MAX_POOL_H
#define TTE_MAX_POOL_H

#include "tte_types.h"

/* in_dims {N, H, W, C}; out_dims {N, OH, OW, C}. */
void tte_max_pool2d_s8(const tte_pool_params *params, const tte_dims *in_dims, const int8_t *in,
                       const tte_dims *out_dims, int8_t *out);

/* tte_max_pool2d_s8 that also writes, per output element (NHWC order), the arg-max code: the index
 * ky * kernel_w + kx of the first maximal tap within the window, or kernel_h * kernel_w when the gradient is
 * cut (the maximum lies outside [act_min, act_max], or the window is empty). Codes are packed `index_bits`
 * (1, 2, 4 or 8) bits each, element i at bit (i * index_bits) % 8 of byte (i * index_bits) / 8; `argmax`
 * holds ceil(N * OH * OW * C * index_bits / 8) bytes. */
void tte_max_pool2d_mask_s8(const tte_pool_params *params, int32_t index_bits, const tte_dims *in_dims,
                            const int8_t *in, const tte_dims *out_dims, int8_t *out, uint8_t *argmax);

/* dx = 0, then for each output element in NHWC order with code < kernel_h * kernel_w:
 * dx[n, oy * stride_h - pad_top + ky, ox * stride_w - pad_left + kx, c] += grad[n, oy, ox, c]. */
void tte_max_pool2d_grad_f32(const tte_pool_params *params, int32_t index_bits, const tte_dims *grad_dims,
                             const float *grad, const uint8_t *argmax, const tte_dims *in_dims, float *in_grad);

#endif /* TTE_MAX_POOL_H */
