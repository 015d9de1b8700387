/* Softmax cross-entropy of the train step (tte/train/grad_ops.py, softmax_ce_reference), bit-exact: the
 * maximum, tte_exp_f32 of the shifted logits, their sum in ascending order, one division per output and
 * tte_log_f32 of the sum. */
#include "tte_train.h"
#include "tte_train_math.h"

/* grad = softmax - onehot(label) from z (which grad may alias) and the loss. */
static void softmax_ce(int32_t size, const float *z, int32_t label, float *loss, float *grad)
{
    const int valid = label >= 0 && label < size;
    float m = z[0], s = 0.0f, z_label;
    int32_t i;
    for (i = 1; i < size; i++) {
        m = z[i] > m ? z[i] : m;
    }
    z_label = valid ? z[label] : m; /* read before grad (possibly z) is overwritten */
    for (i = 0; i < size; i++) {
        grad[i] = tte_exp_f32(z[i] - m);
        s += grad[i];
    }
    for (i = 0; i < size; i++) {
        grad[i] = grad[i] / s;
    }
    if (!valid) {
        *loss = -1.0f;
        return;
    }
    grad[label] = grad[label] - 1.0f;
    *loss = tte_log_f32(s) - (z_label - m);
}

void tte_softmax_cross_entropy_f32(int32_t size, const float *logits, const int32_t *label, float *loss,
                                   float *grad)
{
    softmax_ce(size, logits, *label, loss, grad);
}

void tte_softmax_cross_entropy_s8_f32(const tte_dequant_params *logits_q, int32_t size, const int8_t *logits,
                                      const int32_t *label, float *loss, float *grad)
{
    int32_t i;
    for (i = 0; i < size; i++) { /* the dequantized logits, then the float kernel in place */
        grad[i] = (float)(logits[i] + logits_q->offset) * logits_q->scale;
    }
    softmax_ce(size, grad, *label, loss, grad);
}
