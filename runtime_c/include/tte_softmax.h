/* tte runtime: int8 softmax, bit-exact with TFLite Micro's SOFTMAX (reference_ops::Softmax<int8_t, int8_t>).
 *
 * Per row of `depth` values: d = x - max(row). Entries with d < diff_min give -128. The others are rescaled
 * to Q5.26 (SRDHM(d << input_left_shift, input_multiplier)), exponentiated in fixed point (gemmlowp's
 * exp_on_negative_values), summed in Q12.19 and divided by the sum through a fixed-point reciprocal. The
 * output is quantized as scale 1/256, zero point -128. No floating point, no tables, no scratch memory.
 * The parameters come from tte/ops/softmax.py (softmax_params), as TFLM's SoftmaxPrepare computes them.
 */
#ifndef TTE_SOFTMAX_H
#define TTE_SOFTMAX_H

#include <stdint.h>

typedef struct {
    int32_t input_multiplier; /* [2^30, 2^31): beta * s_in * 2^26 as a Q31 multiplier ... */
    int32_t input_left_shift; /* [1, 31]: ... and its exponent (the real multiplier is > 1) */
    int32_t diff_min;         /* <= 0: -floor(31 * 2^26 / 2^input_left_shift) */
} tte_softmax_params;

/* Softmax over the last axis of a [rows, depth] int8 tensor. rows >= 1; depth in [1, 4095] (the Q12.19 sum of
 * exps must not wrap). Where TFLM would abort (a row whose sum of exps reaches 512, possible only for rows of
 * 512+ values near the row maximum), every output of that row is -128: each probability is at most 1/512.
 * `output` may be `input` itself (in place: each value is read before it is overwritten); other overlaps are not
 * allowed. */
void tte_softmax_s8(const tte_softmax_params *params, int32_t rows, int32_t depth, const int8_t *input,
                    int8_t *output);

#endif /* TTE_SOFTMAX_H */
