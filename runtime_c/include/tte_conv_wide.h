/* tte runtime: what the two files of conv2d's small-window instance share (internal): conv2d_wide.c fills the
 * stack pool with a window pair and a block of widened weight pairs and their requantization constants,
 * conv2d_wide_out.c computes and stores the block's outputs from it. The lane order is conv2d_wide.c's.
 */
#ifndef TTE_CONV_WIDE_H
#define TTE_CONV_WIDE_H

#include "tte_types.h"

/* The stack pool (words): the window pair (k_pad words), the weight pairs (k_pad words each) and their
 * requantization constants (TTE_WIDE_RQ_WORDS each). 1280 B by default: 8 channel pairs for a 28-tap window. */
#ifndef TTE_CONV_WIDE_WORDS
#define TTE_CONV_WIDE_WORDS 320
#endif
#define TTE_WIDE_RQ_WORDS 8

typedef struct {
    int32_t n, h, w, cin, kh, kw, oh, ow, cout, k, k_pad;
    int32_t stride_h, stride_w, pad_top, pad_left, x_off, out_offset;
    int32_t in_row, y_max, x_max; /* W * C_in; the last window corner inside the image: H - KH, W - KW */
    int32_t fold;  /* tte_fast_out_ok: the zero point is in the rounding constants k */
    int32_t z_add; /* else the zero point, added after the shift (0 when folded) */
    const int8_t *in, *filter;
    const int32_t *bias;
    const tte_requant *quant;
} tte_wide_args;

typedef union {
    uint32_t words[TTE_CONV_WIDE_WORDS]; /* word alignment for the SMLAD loads */
    int16_t lanes[2 * TTE_CONV_WIDE_WORDS];
    int32_t values[TTE_CONV_WIDE_WORDS];
} tte_wide_pool;

/* The outputs of the window pair in the pool for the channel pairs [0, pairs) of the block at channel oc0:
 * per pair q, its weights at lanes 2 * k_pad * (1 + q) and its requantization constants (bias0, bias1, m0, k0,
 * m1, k1, sh0, sh1) at word k_pad * (1 + pairs) + TTE_WIDE_RQ_WORDS * q. dst: window 0's output pixel (channel
 * 0); window 1's follows at dst + cout. The instances: any window (_pair_outputs), 3x3 windows over 3 channels
 * with the zero point folded into k (a->fold; _rgb3x3) or added (_rgb3x3_z), and window 0 alone for a lone
 * last pixel (_last_outputs). */
void tte_wide_pair_outputs(const tte_wide_args *a, const tte_wide_pool *pool, int32_t oc0, int32_t pairs,
                           int8_t *dst);
void tte_wide_pair_outputs_rgb3x3(const tte_wide_args *a, const tte_wide_pool *pool, int32_t oc0, int32_t pairs,
                                  int8_t *dst);
void tte_wide_pair_outputs_rgb3x3_z(const tte_wide_args *a, const tte_wide_pool *pool, int32_t oc0, int32_t pairs,
                                    int8_t *dst);
void tte_wide_last_outputs(const tte_wide_args *a, const tte_wide_pool *pool, int32_t oc0, int32_t pairs,
                           int8_t *dst);

#endif /* TTE_CONV_WIDE_H */
