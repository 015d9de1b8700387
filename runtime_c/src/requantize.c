/* int8 -> int8 with a new scale and zero point (TFLite QUANTIZE between two int8 tensors). */
#include "tte_eltwise.h"
#include "tte_fixedpoint.h"

void tte_requantize_s8(const tte_requantize_params *params, int32_t size, const int8_t *in, int8_t *out)
{
    const tte_channel_rq rq = tte_channel_rq_make(params->multiplier, params->shift);
    const int32_t off = params->output_offset, x_off = params->input_offset;
    int32_t i;
    for (i = 0; i < size; i++) {
        out[i] = tte_out_full_s8(tte_channel_rq_apply(&rq, in[i] + x_off), off);
    }
}
