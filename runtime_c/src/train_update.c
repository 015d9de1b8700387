/* Bias updates of the train step (tte_train.h): the int32 QAS update with stochastic or nearest rounding, and
 * the fp32 head's plain SGD. The bias gradient of channel o is the sum of its output gradients over the
 * positions in raster order, from 0.0f. Also the state copy that precedes an update not done in place. */
#include "tte_train.h"
#include "tte_train_math.h"

void tte_bias_update_s32_f32(const float *factor, const float *lr, const tte_dims *grad_dims, const float *grad,
                             uint32_t *rng, int32_t *bias)
{
    const int32_t positions = grad_dims->n * grad_dims->h * grad_dims->w, cout = grad_dims->c;
    const float rate = *lr;
    int32_t o = 0, p;
    for (; o + 4 <= cout; o += 4) { /* four channels summed in registers, then updated in order */
        const float *gp = grad + o;
        float g0 = 0.0f, g1 = 0.0f, g2 = 0.0f, g3 = 0.0f;
        for (p = 0; p < positions; p++, gp += cout) {
            g0 = g0 + gp[0];
            g1 = g1 + gp[1];
            g2 = g2 + gp[2];
            g3 = g3 + gp[3];
        }
        bias[o] = tte_qas_update_s32(bias[o], g0, rate, factor[o], rng);
        bias[o + 1] = tte_qas_update_s32(bias[o + 1], g1, rate, factor[o + 1], rng);
        bias[o + 2] = tte_qas_update_s32(bias[o + 2], g2, rate, factor[o + 2], rng);
        bias[o + 3] = tte_qas_update_s32(bias[o + 3], g3, rate, factor[o + 3], rng);
    }
    for (; o < cout; o++) {
        float g = 0.0f;
        for (p = 0; p < positions; p++) {
            g = g + grad[p * cout + o];
        }
        bias[o] = tte_qas_update_s32(bias[o], g, rate, factor[o], rng);
    }
}

void tte_bias_update_f32(const float *lr, int32_t size, const float *grad, float *bias)
{
    const float rate = *lr;
    int32_t o;
    for (o = 0; o < size; o++) {
        bias[o] = bias[o] - rate * grad[o];
    }
}

void tte_state_copy(int32_t bytes, const void *in, void *out)
{
    const uint8_t *src = (const uint8_t *)in;
    uint8_t *dst = (uint8_t *)out;
    int32_t i;
    for (i = 0; i < bytes; i++) {
        dst[i] = src[i];
    }
}
