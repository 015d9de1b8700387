/* tte runtime: int8 convolutions (TFLite Micro's per-channel reference arithmetic, bit-exact).
 *
 * acc = sum over taps inside the image of w[oc, ky, kx, ic] * (x[iy, ix, ic] + input_offset), plus bias[oc]
 * (a wrapping int32 addition); y = clamp(MBQM(acc, multiplier[oc], shift[oc]) + output_offset, act_min,
 * act_max). Taps outside the image are skipped, which equals padding with the input zero point.
 *
 * Dims: in_dims {N, H, W, C_in}; filter_dims {C_out, KH, KW, C_in} (depthwise: {1, KH, KW, C_in * ch_mult});
 * out_dims {N, OH, OW, C_out} with OH = (H + pad_top + pad_bottom - KH) / stride_h + 1 (likewise OW), i.e.
 * the bottom/right paddings are whatever the output dims imply. bias may be NULL.
 * Limits: KH * KW * C_in < 32768 (int32 accumulation); all sizes >= 1.
 *
 * Speed (Cortex-M4/M7 with DSP): every kernel has an instance for the common case of a [-128, 127] clamp
 * and right shifts >= 2 on all channels (true for every layer of the paper's models), whose requantization
 * is 5 instructions plus add/SSAT/store per output; conv2d and the 1x1 GEMM fold the zero point into it when
 * the right shifts are <= 24 (tte_requant_fast_s8: 6 plus the store). Measured in QEMU (instructions per MAC,
 * M7, bench/profile.py on mbv2-w0.35): 1x1 conv with 8 input channels 2.6, 16 1.9, 48 and more 1.3-1.6
 * (weights widened first up to depth 384; 2.8, 2.1 and 1.5-1.7 without);
 * depthwise 3x3 3.8-4.9 (the runs of depthwise_runs.c, assembly; 5.3-5.9 before), 5x5 and 7x7 3.2-3.6 (4.3
 * before; proxyless-w0.3 and mcunet-5fps); first conv (3x3, stride 2, 3 input channels) 1.7 (conv2d_wide.c;
 * 3.5 before it).
 * Stack: conv2d about 2.2 KB (conv2d_wide.c: a pool of TTE_CONV_WIDE_WORDS words for the widened weights and
 * windows; otherwise two int16 windows of TTE_CONV_PATCH_MAX taps and one int8 window: define them smaller to
 * trade speed for stack), depthwise about 1.0 KB (TTE_DW_MAX_TAPS widened weights, or three sets of 3x3 run
 * constants), conv2d_1x1 about 1.9 KB
 * (a column pair's weights widened to int16 for depths up to TTE_GEMM_WIDE_DEPTH = 384, gemm_s8.c).
 */
#ifndef TTE_CONV_H
#define TTE_CONV_H

#include "tte_types.h"

/* Any kernel size, stride and padding. Windows of up to TTE_CONV_PATCH_MAX (default 256) taps go through an
 * int16 im2col buffer on the stack, two output pixels at a time; larger ones take a slower direct path. */
void tte_conv2d_s8(const tte_conv_params *params, const tte_requant *quant, const tte_dims *in_dims,
                   const int8_t *in, const tte_dims *filter_dims, const int8_t *filter, const int32_t *bias,
                   const tte_dims *out_dims, int8_t *out);

/* The instance of tte_conv2d_s8 for small windows (conv2d_wide.c), which tte_conv2d_s8 tries first: layers of
 * tte_fast_ok (a [-128, 127] clamp, right shifts >= 2 on every channel) whose windows, rounded up to 4 taps (k_pad), leave
 * room for at least two channel pairs of int16 weights in a stack pool of TTE_CONV_WIDE_WORDS (320) words:
 * 3 * k_pad + 16 <= 320, i.e. up to 100 taps (3x3 over 11 channels), or k_pad <= 156 with C_out <= 2.
 * Returns 1 when it computed the output, 0 (nothing written) when the layer is not of that kind. */
int tte_conv2d_wide_s8(const tte_conv_params *params, const tte_requant *quant, const tte_dims *in_dims,
                       const int8_t *in, const tte_dims *filter_dims, const int8_t *filter, const int32_t *bias,
                       const tte_dims *out_dims, int8_t *out);

/* Pointwise fast path: KH = KW = 1, pad_top = pad_left = 0 (and no bottom/right padding), any stride. The
 * image is a GEMM (pixels x output channels) computed two pixels by two output channels per pass (tte_gemm.h);
 * with stride 1 its inner loop is hand-scheduled assembly on DSP targets. */
void tte_conv2d_1x1_s8(const tte_conv_params *params, const tte_requant *quant, const tte_dims *in_dims,
                       const int8_t *in, const tte_dims *filter_dims, const int8_t *filter, const int32_t *bias,
                       const tte_dims *out_dims, int8_t *out);

/* Depthwise, any kernel size, stride, padding and channel multiplier. With ch_mult = 1, four channels per
 * pass (their weights widened once, kernels up to TTE_DW_MAX_TAPS = 49 taps); otherwise one channel at a time. */
void tte_depthwise_conv2d_s8(const tte_dw_conv_params *params, const tte_requant *quant, const tte_dims *in_dims,
                             const int8_t *in, const tte_dims *filter_dims, const int8_t *filter,
                             const int32_t *bias, const tte_dims *out_dims, int8_t *out);

/* Depthwise fast path: KH = KW = 3, ch_mult = 1 (other shapes are accepted and take the general path); any
 * stride and padding; the taps of windows inside the image are unrolled. */
void tte_depthwise_conv2d_3x3_s8(const tte_dw_conv_params *params, const tte_requant *quant,
                                 const tte_dims *in_dims, const int8_t *in, const tte_dims *filter_dims,
                                 const int8_t *filter, const int32_t *bias, const tte_dims *out_dims, int8_t *out);

#endif /* TTE_CONV_H */
