/* tte runtime: int8 kernels that move bytes without arithmetic (reshape emits no code: it is an alias). */
#ifndef TTE_SHAPE_H
#define TTE_SHAPE_H

#include "tte_types.h"

/* Pads a 4-D tensor with params->value: out_dims = in_dims + before + after on every axis. */
void tte_pad_s8(const tte_pad_params *params, const tte_dims *in_dims, const int8_t *in, const tte_dims *out_dims,
                int8_t *out);

/* out[i0][i1][i2][i3] = in[...] with output axis k being input axis perm[k]; out_dims are the permuted
 * in_dims. */
void tte_transpose_s8(const tte_transpose_params *params, const tte_dims *in_dims, const int8_t *in,
                      const tte_dims *out_dims, int8_t *out);
/* The same for float32 (gradients flowing back through a boundary transpose). */
void tte_transpose_f32(const tte_transpose_params *params, const tte_dims *in_dims, const float *in,
                       const tte_dims *out_dims, float *out);

/* out[i] = in[i], i < size: a reshape between two different buffers (normally the plan aliases them). */
void tte_copy_s8(int32_t size, const int8_t *in, int8_t *out);

/* buf[0, size) = buf[from, from + size) for from > 0, size >= 0 (overlapping: a rolling stripe stage moves the
 * rows it keeps to the start of their slot). */
void tte_rows_shift_s8(int32_t from, int32_t size, int8_t *buf);

#endif /* TTE_SHAPE_H */
