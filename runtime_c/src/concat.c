/* Concatenation and slicing: copies. */
#include "tte_concat.h"

void tte_concat_s8(int32_t count, const int8_t *const *inputs, const int32_t *copy_sizes, int32_t outer, int8_t *out)
{
    int32_t row, i, k;
    for (row = 0; row < outer; row++) {
        for (i = 0; i < count; i++) {
            const int8_t *src = inputs[i] + row * copy_sizes[i];
            for (k = 0; k < copy_sizes[i]; k++) {
                *out++ = src[k];
            }
        }
    }
}

void tte_slice_s8(const tte_slice_params *params, const tte_dims *in_dims, const int8_t *in, const tte_dims *out_dims,
                  int8_t *out)
{
    const int32_t s3 = params->stride[3];
    const int32_t s2 = in_dims->c * params->stride[2];
    const int32_t s1 = in_dims->w * in_dims->c * params->stride[1];
    const int32_t s0 = in_dims->h * in_dims->w * in_dims->c * params->stride[0];
    const int8_t *base = in + ((params->begin[0] * in_dims->h + params->begin[1]) * in_dims->w + params->begin[2]) *
                                  in_dims->c + params->begin[3];
    int32_t i0, i1, i2, i3;
    for (i0 = 0; i0 < out_dims->n; i0++) {
        for (i1 = 0; i1 < out_dims->h; i1++) {
            for (i2 = 0; i2 < out_dims->w; i2++) {
                const int8_t *src = base + i0 * s0 + i1 * s1 + i2 * s2;
                for (i3 = 0; i3 < out_dims->c; i3++) {
                    *out++ = src[i3 * s3];
                }
            }
        }
    }
}
