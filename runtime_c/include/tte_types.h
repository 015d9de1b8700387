/* tte runtime: shared types of the int8 kernels.
 *
 * Conventions (all kernels):
 * - Activations are int8, NHWC, contiguous; weights int8 (conv OHWI, depthwise [1, KH, KW, C * M], fully
 *   connected [O, I]); biases int32, one per output channel, or NULL for none.
 * - Offsets are the negated zero point for inputs (x + input_offset = x - zp_in, so input_offset is in
 *   [-127, 128]) and the zero point itself for outputs (output_offset in [-128, 127]).
 * - Requantization (multiplier, shift) pairs come from TFLite's QuantizeMultiplier: multiplier in
 *   [2^30, 2^31) or 0, shift in [-31, 30] (positive = left shift).
 * - act_min, act_max: the output clamp, -128 <= act_min <= act_max <= 127.
 * - The caller owns all memory; kernels never allocate. Outputs must not overlap inputs unless a kernel's
 *   header says so.
 */
#ifndef TTE_TYPES_H
#define TTE_TYPES_H

#include <stddef.h>
#include <stdint.h>

/* Tensor dimensions in NHWC order. Kernels name the meaning of each field where it differs. */
typedef struct {
    int32_t n;
    int32_t h;
    int32_t w;
    int32_t c;
} tte_dims;

/* Per-output-channel (per_channel = 1: arrays of one entry per output channel) or per-tensor (per_channel
 * = 0: arrays of one entry) requantization of an int32 accumulator: y = MBQM(acc, multiplier, shift). */
typedef struct {
    const int32_t *multiplier; /* [2^30, 2^31) or 0 */
    const int32_t *shift;      /* [-31, 30] */
    int32_t per_channel;       /* 0 or 1 */
} tte_requant;

/* conv2d and conv2d_1x1. The bottom and right paddings follow from the input and output dims. */
typedef struct {
    int32_t input_offset;  /* -zp_in, [-127, 128] */
    int32_t output_offset; /* zp_out, [-128, 127] */
    int32_t stride_h;      /* >= 1 */
    int32_t stride_w;      /* >= 1 */
    int32_t pad_top;       /* >= 0 (0 for the 1x1 variant) */
    int32_t pad_left;      /* >= 0 (0 for the 1x1 variant) */
    int32_t act_min;       /* [-128, act_max] */
    int32_t act_max;       /* [act_min, 127] */
} tte_conv_params;

/* depthwise_conv2d: output channel oc = ic * ch_mult + m reads input channel ic. */
typedef struct {
    int32_t input_offset;  /* -zp_in, [-127, 128] */
    int32_t output_offset; /* zp_out, [-128, 127] */
    int32_t stride_h;      /* >= 1 */
    int32_t stride_w;      /* >= 1 */
    int32_t pad_top;       /* >= 0 */
    int32_t pad_left;      /* >= 0 */
    int32_t ch_mult;       /* >= 1 */
    int32_t act_min;       /* [-128, act_max] */
    int32_t act_max;       /* [act_min, 127] */
} tte_dw_conv_params;

/* fully_connected: acc = sum (w + filter_offset) * (x + input_offset) + bias. */
typedef struct {
    int32_t input_offset;  /* -zp_in, [-127, 128] */
    int32_t filter_offset; /* -zp_w, [-127, 128] (0 for symmetric weights) */
    int32_t output_offset; /* zp_out, [-128, 127] */
    int32_t act_min;       /* [-128, act_max] */
    int32_t act_max;       /* [act_min, 127] */
} tte_fc_params;

/* add: TFLite's int8 ADD. Inputs are shifted left by left_shift, rescaled (shifts <= 0), summed and
 * rescaled to the output. */
typedef struct {
    int32_t input1_offset;     /* -zp_1, [-127, 128] */
    int32_t input2_offset;     /* -zp_2, [-127, 128] */
    int32_t input1_multiplier; /* [2^30, 2^31) or 0 */
    int32_t input1_shift;      /* [-31, 0] */
    int32_t input2_multiplier; /* [2^30, 2^31) or 0 */
    int32_t input2_shift;      /* [-31, 0] */
    int32_t output_multiplier; /* [2^30, 2^31) or 0 */
    int32_t output_shift;      /* [-31, 30] */
    int32_t output_offset;     /* zp_out, [-128, 127] */
    int32_t left_shift;        /* [0, 22]; TFLite uses 20 */
    int32_t act_min;           /* [-128, act_max] */
    int32_t act_max;           /* [act_min, 127] */
} tte_add_params;

/* add with precomputed input stages (tte_add_lut_s8): only the output rescaling remains. */
typedef struct {
    int32_t output_multiplier; /* [2^30, 2^31) or 0 */
    int32_t output_shift;      /* [-31, 30] */
    int32_t output_offset;     /* zp_out, [-128, 127] */
    int32_t act_min;           /* [-128, act_max] */
    int32_t act_max;           /* [act_min, 127] */
} tte_add_lut_params;

/* avg_pool2d: the window is clipped to the image; padding is not counted. */
typedef struct {
    int32_t kernel_h; /* >= 1 */
    int32_t kernel_w; /* >= 1 */
    int32_t stride_h; /* >= 1 */
    int32_t stride_w; /* >= 1 */
    int32_t pad_top;  /* >= 0, < kernel_h */
    int32_t pad_left; /* >= 0, < kernel_w */
    int32_t act_min;  /* [-128, act_max] */
    int32_t act_max;  /* [act_min, 127] */
} tte_pool_params;

/* mean: TFLite Micro's MEAN with 1/N folded into the multiplier (M' = (M << sh) / N, S' = S - sh). */
typedef struct {
    int32_t input_offset;  /* -zp_in, [-127, 128] */
    int32_t output_offset; /* zp_out, [-128, 127] */
    int32_t multiplier;    /* [0, 2^31) */
    int32_t shift;         /* [-31, 30] */
} tte_mean_params;

/* requantize: y = clamp(MBQM(x + input_offset, multiplier, shift) + output_offset, -128, 127). */
typedef struct {
    int32_t input_offset;  /* -zp_in, [-127, 128] */
    int32_t output_offset; /* zp_out, [-128, 127] */
    int32_t multiplier;    /* [2^30, 2^31) or 0 */
    int32_t shift;         /* [-31, 30] */
} tte_requantize_params;

/* pad: up to 4-D (lower ranks are given with leading 1s); pads before and after each NHWC axis. */
typedef struct {
    int32_t before[4]; /* >= 0 */
    int32_t after[4];  /* >= 0 */
    int32_t value;     /* the int8 fill value, usually zp_out, [-128, 127] */
} tte_pad_params;

/* transpose: output axis k is input axis perm[k] (up to 4-D, lower ranks with leading 1s). */
typedef struct {
    int32_t perm[4]; /* a permutation of 0..3 */
} tte_transpose_params;

#endif /* TTE_TYPES_H */
