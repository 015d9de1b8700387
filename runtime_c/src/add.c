/* Element-wise int8 addition, TFLite Micro's arithmetic. */
#include "tte_eltwise.h"
#include "tte_fixedpoint.h"

void tte_add_s8(const tte_add_params *params, int32_t size, const int8_t *in1, const int8_t *in2, int8_t *out)
{
    const tte_channel_rq rq1 = tte_channel_rq_make(params->input1_multiplier, params->input1_shift);
    const tte_channel_rq rq2 = tte_channel_rq_make(params->input2_multiplier, params->input2_shift);
    const tte_channel_rq rqo = tte_channel_rq_make(params->output_multiplier, params->output_shift);
    const int32_t off = params->output_offset, lo = params->act_min, hi = params->act_max;
    const int32_t off1 = params->input1_offset, off2 = params->input2_offset, ls = params->left_shift;
    int32_t i;
    for (i = 0; i < size; i++) {
        /* (x + offset) is in [-255, 255]: shifted by up to 22 bits it stays inside int32. */
        const int32_t a = tte_channel_rq_apply(&rq1, (in1[i] + off1) * (1 << ls));
        const int32_t b = tte_channel_rq_apply(&rq2, (in2[i] + off2) * (1 << ls));
        out[i] = tte_out_s8(tte_channel_rq_apply(&rqo, a + b), off, lo, hi);
    }
}
