/* Fully connected layers in the train step: input gradients (int8 weights dequantized on the fly, and the fp32
 * head), fused weight updates, and the fp32 head's forward pass (tte_train.h). Batch 1 for the backward
 * kernels. The input gradient accumulates the whole vector one output channel (weight row) at a time, which
 * per element is the reference's order: o ascending from 0.0f. */
#include "tte_train.h"
#include "tte_train_math.h"

void tte_fully_connected_s8_f32(const tte_dequant_params *in_q, const tte_dims *in_dims, const int8_t *in,
                                const tte_dims *filter_dims, const float *filter, const float *bias,
                                const tte_dims *out_dims, float *out)
{
    const int32_t depth = filter_dims->c, cout = filter_dims->n;
    int32_t b, o, i;
    (void)out_dims;
    for (b = 0; b < in_dims->n; b++) {
        const int8_t *x = in + b * depth;
        for (o = 0; o < cout; o++) {
            const float *w = filter + o * depth;
            float acc = 0.0f;
            for (i = 0; i < depth; i++) {
                acc = acc + ((float)(x[i] + in_q->offset) * in_q->scale) * w[i];
            }
            *out++ = acc + bias[o];
        }
    }
}

void tte_fully_connected_grad_input_s8_f32(int32_t filter_offset, const float *w_scale, const float *grad,
                                           const tte_dims *filter_dims, const int8_t *filter,
                                           const tte_weight_part *part, float *in_grad)
{
    const int32_t depth = filter_dims->c, cout = filter_dims->n;
    int32_t o, i;
    for (i = 0; i < depth; i++) {
        in_grad[i] = 0.0f;
    }
    for (o = 0; o < cout; o++) {
        const float das = grad[o] * w_scale[o];
        const int8_t *wf = filter + o * depth;
        if (part == NULL) {
            for (i = 0; i < depth; i++) {
                in_grad[i] = in_grad[i] + das * (float)(wf[i] + filter_offset);
            }
        } else {
            const int8_t *ws = part->sram + o * part->count;
            for (i = 0; i < depth; i++) {
                const int32_t s = part->slot[i];
                in_grad[i] = in_grad[i] + das * (float)((s < 0 ? wf[i] : ws[s]) + filter_offset);
            }
        }
    }
}

void tte_fully_connected_grad_input_f32(const float *grad, const tte_dims *filter_dims, const float *filter,
                                        float *in_grad)
{
    const int32_t depth = filter_dims->c, cout = filter_dims->n;
    int32_t o, i;
    for (i = 0; i < depth; i++) {
        in_grad[i] = 0.0f;
    }
    for (o = 0; o < cout; o++) {
        const float *w = filter + o * depth;
        for (i = 0; i < depth; i++) {
            in_grad[i] = in_grad[i] + grad[o] * w[i];
        }
    }
}

void tte_fully_connected_update_weight_s8_f32(const tte_update_params *params, const float *factor,
                                              const float *lr, int32_t in_count, const int8_t *in,
                                              const float *grad, const int16_t *channels,
                                              const tte_dims *filter_dims, uint32_t *rng, int8_t *filter)
{
    const int32_t wc = filter_dims->c;
    const int dense = wc == in_count;
    const float rate = *lr;
    int32_t o, t;
    for (o = 0; o < filter_dims->n; o++) {
        int8_t *row = filter + o * wc;
        for (t = 0; t < in_count; t++) {
            int8_t *q = row + (dense ? t : channels[t]);
            const float g = grad[o] * (float)(in[t] + params->input_offset);
            *q = tte_qas_update_s8(*q, g, rate, factor[o], rng);
        }
    }
}

void tte_fully_connected_update_weight_f32(const tte_dequant_params *in_q, const float *lr, int32_t in_count,
                                           const int8_t *in, const float *grad, const int16_t *channels,
                                           const tte_dims *filter_dims, float *filter)
{
    const int32_t wc = filter_dims->c;
    const int dense = wc == in_count;
    const float rate = *lr;
    int32_t o, t;
    for (o = 0; o < filter_dims->n; o++) {
        float *row = filter + o * wc;
        for (t = 0; t < in_count; t++) {
            float *w = row + (dense ? t : channels[t]);
            const float x = (float)(in[t] + in_q->offset) * in_q->scale;
            *w = *w - rate * (grad[o] * x);
        }
    }
}
