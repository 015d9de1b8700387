/* Mean over the spatial axes (global average pooling), TFLite Micro's MEAN arithmetic: 1/N is folded into the
 * multiplier at compile time, so the kernel is a sum and one requantization per channel. */
#include "tte_fixedpoint.h"
#include "tte_pool.h"

void tte_mean_s8(const tte_mean_params *params, const tte_dims *in_dims, const int8_t *in, int8_t *out)
{
    const int32_t count = in_dims->h * in_dims->w, inner = in_dims->c;
    const int32_t off = params->output_offset, bias = params->input_offset * count;
    const tte_channel_rq rq = tte_channel_rq_make(params->multiplier, params->shift);
    int32_t o, c, i;
    for (o = 0; o < in_dims->n; o++) {
        const int8_t *src = in + o * count * inner;
        int8_t *dst = out + o * inner;
        for (c = 0; c < inner; c++) {
            const int8_t *x = src + c;
            int32_t sum = bias;
            for (i = 0; i < count; i++) {
                sum += *x;
                x += inner;
            }
            dst[c] = tte_out_full_s8(tte_channel_rq_apply(&rq, sum), off);
        }
    }
}
