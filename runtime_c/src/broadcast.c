/* Broadcasting element-wise MUL, SUB and ADD: one walk over the output with per-input strides (0 along a
 * broadcast axis). */
#include "tte_broadcast.h"
#include "tte_fixedpoint.h"

typedef struct {
    int32_t s[4];
} strides4;

/* NHWC strides of `d` as read along the output's axes: 0 where the input dim is 1. */
static strides4 broadcast_strides(const tte_dims *d)
{
    strides4 st;
    st.s[3] = d->c > 1 ? 1 : 0;
    st.s[2] = d->w > 1 ? d->c : 0;
    st.s[1] = d->h > 1 ? d->w * d->c : 0;
    st.s[0] = d->n > 1 ? d->h * d->w * d->c : 0;
    return st;
}

/* The requantized value before the clamp, limited to [-256, 255] + output offset (which keeps its position
 * relative to any int8 clamp range). */
typedef int32_t (*combine_fn)(const void *params, int32_t a, int32_t b);

static void walk(const void *params, combine_fn combine, int32_t lo, int32_t hi, const tte_dims *d1,
                 const int8_t *in1, const tte_dims *d2, const int8_t *in2, const tte_dims *out_dims, int8_t *out,
                 uint8_t *mask)
{
    const strides4 s1 = broadcast_strides(d1), s2 = broadcast_strides(d2);
    int32_t n, h, w, c, i = 0;
    for (n = 0; n < out_dims->n; n++) {
        for (h = 0; h < out_dims->h; h++) {
            for (w = 0; w < out_dims->w; w++) {
                const int8_t *a = in1 + n * s1.s[0] + h * s1.s[1] + w * s1.s[2];
                const int8_t *b = in2 + n * s2.s[0] + h * s2.s[1] + w * s2.s[2];
                for (c = 0; c < out_dims->c; c++, i++) {
                    const int32_t pre = combine(params, a[c * s1.s[3]], b[c * s2.s[3]]);
                    out[i] = (int8_t)tte_clamp(pre, lo, hi);
                    if (mask != NULL) {
                        if ((i & 7) == 0) {
                            mask[i >> 3] = 0;
                        }
                        if (pre >= lo && pre <= hi) {
                            mask[i >> 3] = (uint8_t)(mask[i >> 3] | (1u << (i & 7)));
                        }
                    }
                }
            }
        }
    }
}

static int32_t mul_one(const void *params, int32_t a, int32_t b)
{
    const tte_mul_params *p = (const tte_mul_params *)params;
    /* |a + off| <= 255: the product fits in int32 (< 2^16). */
    const int32_t prod = (a + p->input1_offset) * (b + p->input2_offset);
    return tte_sat9(tte_mbqm(prod, p->output_multiplier, p->output_shift)) + p->output_offset;
}

static int32_t sub_one(const void *params, int32_t a, int32_t b)
{
    const tte_add_params *p = (const tte_add_params *)params;
    const int32_t sa = tte_mbqm((a + p->input1_offset) * (1 << p->left_shift), p->input1_multiplier, p->input1_shift);
    const int32_t sb = tte_mbqm((b + p->input2_offset) * (1 << p->left_shift), p->input2_multiplier, p->input2_shift);
    /* Each stage is at most 2^29 in magnitude: the difference fits in int32. */
    return tte_sat9(tte_mbqm(sa - sb, p->output_multiplier, p->output_shift)) + p->output_offset;
}

static int32_t add_one(const void *params, int32_t a, int32_t b)
{
    const tte_add_params *p = (const tte_add_params *)params;
    const int32_t sa = tte_mbqm((a + p->input1_offset) * (1 << p->left_shift), p->input1_multiplier, p->input1_shift);
    const int32_t sb = tte_mbqm((b + p->input2_offset) * (1 << p->left_shift), p->input2_multiplier, p->input2_shift);
    /* As in sub_one: each stage is at most 2^29 in magnitude, so the sum fits in int32. */
    return tte_sat9(tte_mbqm(sa + sb, p->output_multiplier, p->output_shift)) + p->output_offset;
}

void tte_mul_s8(const tte_mul_params *params, const tte_dims *in1_dims, const int8_t *in1, const tte_dims *in2_dims,
                const int8_t *in2, const tte_dims *out_dims, int8_t *out)
{
    walk(params, mul_one, params->act_min, params->act_max, in1_dims, in1, in2_dims, in2, out_dims, out, NULL);
}

void tte_sub_s8(const tte_add_params *params, const tte_dims *in1_dims, const int8_t *in1, const tte_dims *in2_dims,
                const int8_t *in2, const tte_dims *out_dims, int8_t *out)
{
    walk(params, sub_one, params->act_min, params->act_max, in1_dims, in1, in2_dims, in2, out_dims, out, NULL);
}

void tte_add_broadcast_s8(const tte_add_params *params, const tte_dims *in1_dims, const int8_t *in1,
                          const tte_dims *in2_dims, const int8_t *in2, const tte_dims *out_dims, int8_t *out)
{
    walk(params, add_one, params->act_min, params->act_max, in1_dims, in1, in2_dims, in2, out_dims, out, NULL);
}

void tte_mul_mask_s8(const tte_mul_params *params, const tte_dims *in1_dims, const int8_t *in1,
                     const tte_dims *in2_dims, const int8_t *in2, const tte_dims *out_dims, int8_t *out, uint8_t *mask)
{
    walk(params, mul_one, params->act_min, params->act_max, in1_dims, in1, in2_dims, in2, out_dims, out, mask);
}

void tte_sub_mask_s8(const tte_add_params *params, const tte_dims *in1_dims, const int8_t *in1,
                     const tte_dims *in2_dims, const int8_t *in2, const tte_dims *out_dims, int8_t *out, uint8_t *mask)
{
    walk(params, sub_one, params->act_min, params->act_max, in1_dims, in1, in2_dims, in2, out_dims, out, mask);
}

void tte_add_broadcast_mask_s8(const tte_add_params *params, const tte_dims *in1_dims, const int8_t *in1,
                               const tte_dims *in2_dims, const int8_t *in2, const tte_dims *out_dims, int8_t *out,
                               uint8_t *mask)
{
    walk(params, add_one, params->act_min, params->act_max, in1_dims, in1, in2_dims, in2, out_dims, out, mask);
}

/* Sum of `terms(i)` into in_grad at the broadcast position of output element i, in output order. */
static void reduce_walk(const tte_dims *in_dims, const tte_dims *out_dims, const float *grad, const int8_t *other,
                        const tte_dims *other_dims, int32_t other_offset, float scale, float *in_grad)
{
    const strides4 s = broadcast_strides(in_dims), so = broadcast_strides(other_dims);
    const int32_t total = in_dims->n * in_dims->h * in_dims->w * in_dims->c;
    int32_t n, h, w, c, i = 0;
    for (n = 0; n < total; n++) {
        in_grad[n] = 0.0f;
    }
    for (n = 0; n < out_dims->n; n++) {
        for (h = 0; h < out_dims->h; h++) {
            for (w = 0; w < out_dims->w; w++) {
                float *dst = in_grad + n * s.s[0] + h * s.s[1] + w * s.s[2];
                const int8_t *o = other == NULL ? NULL : other + n * so.s[0] + h * so.s[1] + w * so.s[2];
                for (c = 0; c < out_dims->c; c++, i++) {
                    const float f = o == NULL ? scale : (float)(o[c * so.s[3]] + other_offset) * scale;
                    dst[c * s.s[3]] += grad[i] * f;
                }
            }
        }
    }
}

void tte_mul_input_grad_s8_f32(int32_t other_offset, float other_scale, const tte_dims *grad_dims, const float *grad,
                               const tte_dims *other_dims, const int8_t *other, const tte_dims *in_dims, float *in_grad)
{
    reduce_walk(in_dims, grad_dims, grad, other, other_dims, other_offset, other_scale, in_grad);
}

void tte_reduce_grad_f32(float scale, const tte_dims *grad_dims, const float *grad, const tte_dims *in_dims,
                         float *in_grad)
{
    reduce_walk(in_dims, grad_dims, grad, NULL, grad_dims, 0, scale, in_grad);
}
