/* 4-D transpose: walks the output in order and the input with the permuted strides.
 * int8 for activations at model boundaries, float32 for the gradients flowing back through them. */
#include "tte_shape.h"

#define TTE_DEFINE_TRANSPOSE(NAME, T)                                                                          \
    void NAME(const tte_transpose_params *params, const tte_dims *in_dims, const T *in, const tte_dims *out_dims, \
              T *out)                                                                                          \
    {                                                                                                          \
        const int32_t in_stride[4] = {in_dims->h * in_dims->w * in_dims->c, in_dims->w * in_dims->c,          \
                                      in_dims->c, 1};                                                          \
        const int32_t s0 = in_stride[params->perm[0]], s1 = in_stride[params->perm[1]];                       \
        const int32_t s2 = in_stride[params->perm[2]], s3 = in_stride[params->perm[3]];                       \
        int32_t i0, i1, i2, i3;                                                                                \
        for (i0 = 0; i0 < out_dims->n; i0++) {                                                                 \
            for (i1 = 0; i1 < out_dims->h; i1++) {                                                             \
                for (i2 = 0; i2 < out_dims->w; i2++) {                                                         \
                    const T *src = in + (i0 * s0 + i1 * s1 + i2 * s2);                                         \
                    for (i3 = 0; i3 < out_dims->c; i3++) {                                                     \
                        *out++ = src[i3 * s3];                                                                 \
                    }                                                                                          \
                }                                                                                              \
            }                                                                                                  \
        }                                                                                                      \
    }

TTE_DEFINE_TRANSPOSE(tte_transpose_s8, int8_t)
TTE_DEFINE_TRANSPOSE(tte_transpose_f32, float)
