/* tte runtime: the train step's kernels for activation tables and slicing (float32 gradients).
 * Masks pack element i at bit (i & 7) of byte (i >> 3). */
#ifndef TTE_GRAD_EXT_H
#define TTE_GRAD_EXT_H

#include "tte_concat.h"
#include "tte_types.h"

/* out[i] = table[in[i] + 128], mask bit i = mask_table[in[i] + 128] (0 or 1). */
void tte_lut_mask_s8(const int8_t *table, const uint8_t *mask_table, int32_t size, const int8_t *in, int8_t *out,
                     uint8_t *mask);

/* A step derivative: in_grad[i] = grad[i] * (bit i ? hi : lo). */
void tte_lut_step_grad_f32(float lo, float hi, int32_t size, const float *grad, const uint8_t *mask, float *in_grad);

/* A tabulated derivative: in_grad[i] = grad[i] * deriv[in[i] + 128]. */
void tte_lut_table_grad_f32(const float *deriv, int32_t size, const float *grad, const int8_t *in, float *in_grad);

/* tte_slice_s8 on float32 values (the gradient of a concatenation input). */
void tte_slice_f32(const tte_slice_params *params, const tte_dims *in_dims, const float *in, const tte_dims *out_dims,
                   float *out);

/* The gradient of a slice: in_grad = 0 except in_grad[begin + i * stride] = grad[i]. */
void tte_slice_grad_f32(const tte_slice_params *params, const tte_dims *grad_dims, const float *grad,
                        const tte_dims *in_dims, float *in_grad);

#endif /* TTE_GRAD_EXT_H */
