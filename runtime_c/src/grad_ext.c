/* Activation-table and slicing kernels of the train step. */
#include "tte_grad_ext.h"

void tte_lut_mask_s8(const int8_t *table, const uint8_t *mask_table, int32_t size, const int8_t *in, int8_t *out,
                     uint8_t *mask)
{
    int32_t i;
    for (i = 0; i < size; i++) {
        const int32_t k = in[i] + 128;
        if ((i & 7) == 0) {
            mask[i >> 3] = 0;
        }
        mask[i >> 3] = (uint8_t)(mask[i >> 3] | (mask_table[k] << (i & 7)));
        out[i] = table[k];
    }
}

void tte_lut_step_grad_f32(float lo, float hi, int32_t size, const float *grad, const uint8_t *mask, float *in_grad)
{
    int32_t i;
    for (i = 0; i < size; i++) {
        in_grad[i] = grad[i] * (((mask[i >> 3] >> (i & 7)) & 1) ? hi : lo);
    }
}

void tte_lut_table_grad_f32(const float *deriv, int32_t size, const float *grad, const int8_t *in, float *in_grad)
{
    int32_t i;
    for (i = 0; i < size; i++) {
        in_grad[i] = grad[i] * deriv[in[i] + 128];
    }
}

/* The element offset of slice position (i0, i1, i2, 0) in a tensor of dims d. */
static int32_t slice_base(const tte_slice_params *p, const tte_dims *d, int32_t i0, int32_t i1, int32_t i2)
{
    return (((p->begin[0] + i0 * p->stride[0]) * d->h + p->begin[1] + i1 * p->stride[1]) * d->w + p->begin[2] +
            i2 * p->stride[2]) * d->c + p->begin[3];
}

void tte_slice_f32(const tte_slice_params *params, const tte_dims *in_dims, const float *in, const tte_dims *out_dims,
                   float *out)
{
    int32_t i0, i1, i2, i3;
    for (i0 = 0; i0 < out_dims->n; i0++) {
        for (i1 = 0; i1 < out_dims->h; i1++) {
            for (i2 = 0; i2 < out_dims->w; i2++) {
                const float *src = in + slice_base(params, in_dims, i0, i1, i2);
                for (i3 = 0; i3 < out_dims->c; i3++) {
                    *out++ = src[i3 * params->stride[3]];
                }
            }
        }
    }
}

void tte_slice_grad_f32(const tte_slice_params *params, const tte_dims *grad_dims, const float *grad,
                        const tte_dims *in_dims, float *in_grad)
{
    const int32_t total = in_dims->n * in_dims->h * in_dims->w * in_dims->c;
    int32_t i0, i1, i2, i3;
    for (i0 = 0; i0 < total; i0++) {
        in_grad[i0] = 0.0f;
    }
    for (i0 = 0; i0 < grad_dims->n; i0++) {
        for (i1 = 0; i1 < grad_dims->h; i1++) {
            for (i2 = 0; i2 < grad_dims->w; i2++) {
                float *dst = in_grad + slice_base(params, in_dims, i0, i1, i2);
                for (i3 = 0; i3 < grad_dims->c; i3++) {
                    dst[i3 * params->stride[3]] = *grad++;
                }
            }
        }
    }
}
