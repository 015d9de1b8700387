/* tte runtime: int8 MUL, SUB and ADD with broadcasting (TFLite Micro's arithmetic).
 *
 * Shapes are up to 4-D NHWC (lower ranks with leading 1s); each input dim equals the output dim or is 1 (then
 * the input is repeated along it), numpy's broadcasting. out must not overlap an input that is broadcast.
 */
#ifndef TTE_BROADCAST_H
#define TTE_BROADCAST_H

#include "tte_types.h"

/* mul: y = clamp(MBQM((a + input1_offset) * (b + input2_offset), output_multiplier, output_shift)
 *                + output_offset, act_min, act_max). */
typedef struct {
    int32_t input1_offset;     /* -zp_1, [-127, 128] */
    int32_t input2_offset;     /* -zp_2, [-127, 128] */
    int32_t output_multiplier; /* [2^30, 2^31) or 0 */
    int32_t output_shift;      /* [-31, 30] */
    int32_t output_offset;     /* zp_out, [-128, 127] */
    int32_t act_min;           /* [-128, act_max] */
    int32_t act_max;           /* [act_min, 127] */
} tte_mul_params;

void tte_mul_s8(const tte_mul_params *params, const tte_dims *in1_dims, const int8_t *in1, const tte_dims *in2_dims,
                const int8_t *in2, const tte_dims *out_dims, int8_t *out);

/* sub: tte_add_s8's arithmetic (tte_add_params) with the second rescaled input subtracted:
 * y = clamp(MBQM(MBQM(a' , M1, S1) - MBQM(b', M2, S2), Mo, So) + output_offset, act_min, act_max),
 * a' = (a + input1_offset) << left_shift, b' likewise. */
void tte_sub_s8(const tte_add_params *params, const tte_dims *in1_dims, const int8_t *in1, const tte_dims *in2_dims,
                const int8_t *in2, const tte_dims *out_dims, int8_t *out);

/* add_broadcast: tte_sub_s8 with the rescaled inputs added (TFLite's ADD of tensors of different shapes; equal
 * shapes use tte_add_s8 of tte_eltwise.h). */
void tte_add_broadcast_s8(const tte_add_params *params, const tte_dims *in1_dims, const int8_t *in1,
                          const tte_dims *in2_dims, const int8_t *in2, const tte_dims *out_dims, int8_t *out);

/* Training forward: as tte_mul_s8 / tte_sub_s8 / tte_add_broadcast_s8, plus the clamp mask (bit i & 7 of byte i >> 3 = 1 iff the
 * requantized value before the clamp of output element i lies in [act_min, act_max]). */
void tte_mul_mask_s8(const tte_mul_params *params, const tte_dims *in1_dims, const int8_t *in1,
                     const tte_dims *in2_dims, const int8_t *in2, const tte_dims *out_dims, int8_t *out, uint8_t *mask);
void tte_sub_mask_s8(const tte_add_params *params, const tte_dims *in1_dims, const int8_t *in1,
                     const tte_dims *in2_dims, const int8_t *in2, const tte_dims *out_dims, int8_t *out, uint8_t *mask);

void tte_add_broadcast_mask_s8(const tte_add_params *params, const tte_dims *in1_dims, const int8_t *in1,
                               const tte_dims *in2_dims, const int8_t *in2, const tte_dims *out_dims, int8_t *out,
                               uint8_t *mask);

/* Gradient of one MUL operand: in_grad = 0, then for each output element i (NHWC order)
 * in_grad[bcast(i)] += grad[i] * ((float)(other[bcast'(i)] + other_offset) * other_scale), every product
 * rounded to float; in_dims is this operand's shape, other_dims the other operand's. */
void tte_mul_input_grad_s8_f32(int32_t other_offset, float other_scale, const tte_dims *grad_dims, const float *grad,
                               const tte_dims *other_dims, const int8_t *other, const tte_dims *in_dims, float *in_grad);

/* in_grad = 0, then in_grad[bcast(i)] += grad[i] * scale in output order (SUB's operands, scale +1 or -1; ADD's, scale +1). */
void tte_reduce_grad_f32(float scale, const tte_dims *grad_dims, const float *grad, const tte_dims *in_dims,
                         float *in_grad);

#endif /* TTE_BROADCAST_H */
