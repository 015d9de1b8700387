/* tte runtime: depthwise convolution and its input gradient computed in place (TinyEngine's trick).
 *
 * The output is written over the input, in the same buffer `inout`: for each channel c the kernel first copies
 * channel c of the input (one plane; the forward kernels' copy includes the padding) to `scratch`, then
 * computes channel c of the output from that copy.
 * In NHWC an element of channel c sits at index p * C + c, so writing channel c of the output (p < OH * OW)
 * only overwrites channel-c elements of the input, which are already copied; the other channels are untouched
 * until their turn. This holds for any stride, padding and kernel as long as input and output have the same
 * channel count C (ch_mult = 1), the same element type and batch 1. The buffer must hold the larger of the two
 * tensors (the input gradient of a strided layer is larger than the gradient it comes from).
 *
 * Results are bit-exact with the out-of-place kernels (tte_conv.h, tte_train.h): integer sums are exact, and the
 * float sums of the input gradient are taken in the same order (taps kh, then kw, ascending).
 * Limits: batch 1, ch_mult = 1, KH * KW <= TTE_DW_INPLACE_MAX_TAPS (49, 7x7) and KH * ceil(KW / 4) <=
 * TTE_DW_INPLACE_MAX_GROUPS (16), all sizes >= 1; inout and scratch must not overlap. Stack: about 1.1 KB on
 * Cortex-M7 (a channel's weights, widened and packed, twice).
 */
#ifndef TTE_DEPTHWISE_INPLACE_H
#define TTE_DEPTHWISE_INPLACE_H

#include "tte_train.h"
#include "tte_types.h"

#define TTE_DW_INPLACE_MAX_TAPS 49
#define TTE_DW_INPLACE_MAX_GROUPS 16

/* tte_depthwise_conv2d_s8 in place: `inout` holds the input {1, H, W, C} on entry and the output {1, OH, OW, C}
 * on return (max(H W, OH OW) * C bytes). scratch: PH * PW + 4 bytes, the padded plane: PH = max(H + pad_top,
 * (OH - 1) * stride_h + KH), PW = max(W + pad_left, (OW - 1) * stride_w + KW) (a word read may pass its end). */
void tte_depthwise_conv2d_inplace_s8(const tte_dw_conv_params *params, const tte_requant *quant, int8_t *scratch,
                                     const tte_dims *in_dims, const tte_dims *filter_dims, const int8_t *filter,
                                     const int32_t *bias, const tte_dims *out_dims, int8_t *inout);

/* tte_depthwise_conv2d_mask_s8 in place (the mask is written as that kernel writes it; it must not overlap
 * inout or scratch). scratch: PH * PW + 4 bytes, as above. */
void tte_depthwise_conv2d_mask_inplace_s8(const tte_dw_conv_params *params, const tte_requant *quant,
                                          int8_t *scratch, const tte_dims *in_dims, const tte_dims *filter_dims,
                                          const int8_t *filter, const tte_weight_part *part, const int32_t *bias,
                                          const tte_dims *out_dims, int8_t *inout, uint8_t *mask);

/* tte_depthwise_conv2d_grad_input_s8_f32 in place: `inout` holds the gradient of the output {1, OH, OW, C} on
 * entry and the input gradient {1, H, W, C} on return (max(OH OW, H W) * C floats). scratch: OH * OW floats. */
void tte_depthwise_conv2d_grad_input_inplace_s8_f32(const tte_conv_geom *geom, const float *w_scale,
                                                    float *scratch, const tte_dims *grad_dims,
                                                    const tte_dims *filter_dims, const int8_t *filter,
                                                    const tte_weight_part *part, const tte_dims *in_dims,
                                                    float *inout);

#endif /* TTE_DEPTHWISE_INPLACE_H */
