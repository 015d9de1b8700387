/* tte runtime: concatenation and slicing of int8 tensors (byte copies; quantization unchanged). */
#ifndef TTE_CONCAT_H
#define TTE_CONCAT_H

#include "tte_types.h"

/* Joins `count` inputs along one axis. Seen as [outer, rest]: input i contributes rows of copy_sizes[i] bytes
 * (its size along the axis times the product of the later dims) to each of the `outer` output rows. */
void tte_concat_s8(int32_t count, const int8_t *const *inputs, const int32_t *copy_sizes, int32_t outer, int8_t *out);

/* slice: out[i0][i1][i2][i3] = in[begin[0] + i0 * stride[0]]...[begin[3] + i3 * stride[3]] (up to 4-D, lower ranks
 * with leading 1s); begin >= 0, stride >= 1, and every read index lies inside in_dims. */
typedef struct {
    int32_t begin[4];
    int32_t stride[4];
} tte_slice_params;

void tte_slice_s8(const tte_slice_params *params, const tte_dims *in_dims, const int8_t *in, const tte_dims *out_dims,
                  int8_t *out);

#endif /* TTE_CONCAT_H */
