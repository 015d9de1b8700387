/* tte runtime: the kernels of the on-device train step (tte/train: forward with masks, loss, fp32 backward,
 * fused QAS updates). Each kernel reproduces its numpy reference bit for bit; the float rules are in
 * tte_train_math.h and the summation orders are given with each kernel below ("sum" = a float32 sum from 0.0f
 * in the order stated, each + rounded on its own).
 *
 * Conventions beyond tte_types.h:
 * - Gradients are float32 dL/d(real value) in the NHWC shape of the tensor they belong to.
 * - Masks are packed 8 per byte, element i (NHWC order) in bit (i & 7) of byte (i >> 3), the unused high bits
 *   of the last byte 0. Bit = 1 iff the requantized value before the clamp lies in [act_min, act_max].
 * - `lr` and `label` are pointers to the train step's 1-element input tensors. `rng` points to the xorshift32
 *   state (the int32 state tensor tte:rng; nonzero); NULL selects rounding to nearest.
 * - `factor` arrays are the per-output-channel QAS factors of tte/train/update_ops.py (compile-time constants).
 * - Updates are in place and touch only the parameter elements they train. They consume one PRNG draw per
 *   written element, in row-major order of the written sub-tensor.
 *
 * Partial-channel weights: a weight trained on T of its input channels lives in two parts, the whole weight as
 * compiled (`filter`, const, in flash) and the trained channels (`tte_weight_part.sram`, in SRAM, the channels
 * in ascending order as the last axis: conv [O, KH, KW, T], fully connected [O, T], depthwise
 * [1, KH, KW, T * ch_mult] with column t * ch_mult + m for output channel channels[t] * ch_mult + m). The
 * forward and input-gradient kernels read trained channels from SRAM and the others from flash; the update
 * kernels are given the SRAM part as their `filter` and write only it. With part == NULL (or every channel
 * trained) `filter` is the whole, current weight.
 */
#ifndef TTE_TRAIN_H
#define TTE_TRAIN_H

#include "tte_types.h"

/* The SRAM part of a partially trained weight (see the file comment). */
typedef struct {
    const int8_t *sram;      /* the trained channels, layout above */
    const int16_t *channels; /* [count] ascending input-channel indices */
    const int16_t *slot;     /* [C_in]: t where channels[t] == c, -1 for a frozen channel */
    int32_t count;           /* T, [1, C_in] */
} tte_weight_part;

/* Convolution geometry of the backward kernels (the forward's stride and top/left padding; the bottom/right
 * padding follows from the dims). */
typedef struct {
    int32_t stride_h; /* >= 1 */
    int32_t stride_w; /* >= 1 */
    int32_t pad_top;  /* >= 0 */
    int32_t pad_left; /* >= 0 */
    int32_t ch_mult;  /* depthwise channel multiplier (>= 1); 1 for conv2d */
} tte_conv_geom;

/* An int8 tensor's dequantization, real = (q + offset) * scale. */
typedef struct {
    int32_t offset; /* -zp, [-127, 128] */
    float scale;    /* > 0 */
} tte_dequant_params;

/* How an int8 layer's update reads its saved input and rounds. */
typedef struct {
    int32_t input_offset; /* -zp of the layer's input, [-127, 128] (unused by bias updates) */
} tte_update_params;

/* --- forward with masks (train_mask_conv.c, train_mask_dw.c, train_mask_eltwise.c) ---------------------------- */

/* tte_conv2d_s8 (same params, dims and limits) that also writes the clamp mask of its output. With `part`, the
 * trained input channels' weights come from part->sram (`filter` holds all channels; its trained ones are not
 * used). out and mask must not overlap the inputs. Stack: about 600 bytes on the pointwise path (two weight rows
 * of a split weight merged, up to TTE_MASK_ROW_MAX = 256 input channels each). */
void tte_conv2d_mask_s8(const tte_conv_params *params, const tte_requant *quant, const tte_dims *in_dims,
                        const int8_t *in, const tte_dims *filter_dims, const int8_t *filter,
                        const tte_weight_part *part, const int32_t *bias, const tte_dims *out_dims, int8_t *out,
                        uint8_t *mask);

/* tte_depthwise_conv2d_s8 with the clamp mask; part->sram is [1, KH, KW, T * ch_mult]. */
void tte_depthwise_conv2d_mask_s8(const tte_dw_conv_params *params, const tte_requant *quant,
                                  const tte_dims *in_dims, const int8_t *in, const tte_dims *filter_dims,
                                  const int8_t *filter, const tte_weight_part *part, const int32_t *bias,
                                  const tte_dims *out_dims, int8_t *out, uint8_t *mask);

/* tte_fully_connected_s8 with the clamp mask; part->sram is [O, T]. */
void tte_fully_connected_mask_s8(const tte_fc_params *params, const tte_requant *quant, const tte_dims *in_dims,
                                 const int8_t *in, const tte_dims *filter_dims, const int8_t *filter,
                                 const tte_weight_part *part, const int32_t *bias, const tte_dims *out_dims,
                                 int8_t *out, uint8_t *mask);

/* tte_add_s8 / tte_add_lut_s8 / tte_requantize_s8 with the clamp mask (size elements, mask of (size + 7) / 8
 * bytes). out may be an input (in place). */
void tte_add_mask_s8(const tte_add_params *params, int32_t size, const int8_t *in1, const int8_t *in2,
                     int8_t *out, uint8_t *mask);
void tte_add_lut_mask_s8(const tte_add_lut_params *params, const int32_t *table1, const int32_t *table2,
                         int32_t size, const int8_t *in1, const int8_t *in2, int8_t *out, uint8_t *mask);
void tte_requantize_mask_s8(const tte_requantize_params *params, int32_t size, const int8_t *in, int8_t *out,
                            uint8_t *mask);

/* tte_avg_pool2d_s8 with the mask of its clamp (the unclamped average lies in [-128, 127]). */
void tte_avg_pool2d_mask_s8(const tte_pool_params *params, const tte_dims *in_dims, const int8_t *in,
                            const tte_dims *out_dims, int8_t *out, uint8_t *mask);

/* tte_mean_s8 with the mask of its int8 saturation; output [outer, inner]. */
void tte_mean_mask_s8(const tte_mean_params *params, const tte_dims *in_dims, const int8_t *in, int8_t *out,
                      uint8_t *mask);

/* out[r, t] = in[r, channels[t]] for r < rows, t < count: the trained input channels a weight update needs. */
void tte_gather_channels_s8(int32_t rows, int32_t in_channels, const int8_t *in, int32_t count,
                            const int16_t *channels, int8_t *out);

/* The fp32 classifier head (tte/train/head.py): x_real[i] = (float)(x[i] + offset) * scale;
 * y[b, o] = (sum over i ascending of x_real[i] * w[o, i]) + bias[o]. in_dims {B, 1, 1, I},
 * filter_dims {O, 1, 1, I}, out_dims {B, 1, 1, O}. */
void tte_fully_connected_s8_f32(const tte_dequant_params *in_q, const tte_dims *in_dims, const int8_t *in,
                                const tte_dims *filter_dims, const float *filter, const float *bias,
                                const tte_dims *out_dims, float *out);

/* --- loss (train_loss.c) ------------------------------------------------------------------------------------- */

/* Softmax cross-entropy of `size` logits against *label (in [0, size)): z = logits, m = max z,
 * e[i] = tte_exp_f32(z[i] - m), S = sum of e (ascending i), grad[i] = e[i] / S - (i == label),
 * *loss = tte_log_f32(S) - (z[label] - m). grad may be `logits` itself. A label out of range gives grad =
 * softmax and *loss = -1 (a real loss is >= 0). */
void tte_softmax_cross_entropy_f32(int32_t size, const float *logits, const int32_t *label, float *loss,
                                   float *grad);

/* The same on int8 logits, dequantized first: z[i] = (float)(q[i] + offset) * scale. */
void tte_softmax_cross_entropy_s8_f32(const tte_dequant_params *logits_q, int32_t size, const int8_t *logits,
                                      const int32_t *label, float *loss, float *grad);

/* --- element-wise and shape gradients (train_grad.c) --------------------------------------------------------- */

/* out[i] = bit i of mask ? grad[i] : 0.0f. out may be grad. */
void tte_apply_mask_f32(int32_t size, const float *grad, const uint8_t *mask, float *out);

/* out[i] = a[i] + b[i]. out may be a or b. */
void tte_grad_add_f32(int32_t size, const float *a, const float *b, float *out);

/* Mean over the middle axes of in_dims {outer, reduce_a, reduce_b, inner} (as tte_mean_s8):
 * in_grad[o, r, i] = grad[o, i] * (1.0f / (float)(reduce_a * reduce_b)). */
void tte_mean_grad_f32(const tte_dims *in_dims, const float *grad, float *in_grad);

/* Average pool: in_grad[h, w, c] = sum over taps (kh, then kw, ascending) whose window lies at an output
 * position (oh, ow) of grad[oh, ow, c] * (1.0f / (float)count[oh, ow]), count = the window's taps inside the
 * image. grad_dims {1, OH, OW, C}, in_dims {1, H, W, C}; params as for tte_avg_pool2d_s8 (act unused). */
void tte_avg_pool2d_grad_f32(const tte_pool_params *params, const tte_dims *grad_dims, const float *grad,
                             const tte_dims *in_dims, float *in_grad);

/* Pad: in_grad = the part of grad inside the pads. grad_dims = in_dims + before + after (params->value unused). */
void tte_pad_grad_f32(const tte_pad_params *params, const tte_dims *grad_dims, const float *grad,
                      const tte_dims *in_dims, float *in_grad);

/* --- input gradients (train_conv_grad.c, train_fc.c) ---------------------------------------------------------- */

/* Conv: das[p, o] = grad[p, o] * w_scale[o]; in_grad[h, w, i] = sum over taps (kh, then kw, ascending; only
 * those that reach an output position) and then o ascending of das[oh, ow, o] * (float)w[o, kh, kw, i].
 * grad_dims {1, OH, OW, O}, filter_dims {O, KH, KW, I}, in_dims {1, H, W, I}; w_scale [O] (per-tensor scales
 * repeated). With `part`, trained channels read part->sram [O, KH, KW, T]. in_grad must not overlap grad. */
void tte_conv2d_grad_input_s8_f32(const tte_conv_geom *geom, const float *w_scale, const tte_dims *grad_dims,
                                  const float *grad, const tte_dims *filter_dims, const int8_t *filter,
                                  const tte_weight_part *part, const tte_dims *in_dims, float *in_grad);

/* Depthwise: in_grad[h, w, c] = sum over taps (kh, kw) and then m ascending of
 * (grad[oh, ow, c M + m] * w_scale[c M + m]) * (float)w[kh, kw, c M + m]. filter_dims {1, KH, KW, C M};
 * part->sram [1, KH, KW, T M]. Stack: about 600 bytes (the taps of a pixel; kernels up to 7x7 on the fast path). */
void tte_depthwise_conv2d_grad_input_s8_f32(const tte_conv_geom *geom, const float *w_scale,
                                            const tte_dims *grad_dims, const float *grad,
                                            const tte_dims *filter_dims, const int8_t *filter,
                                            const tte_weight_part *part, const tte_dims *in_dims, float *in_grad);

/* Fully connected (batch 1): in_grad[i] = sum over o ascending of (grad[o] * w_scale[o]) *
 * (float)(w[o, i] + filter_offset). filter_dims {O, 1, 1, I}; in_grad has I values; part->sram [O, T]. */
void tte_fully_connected_grad_input_s8_f32(int32_t filter_offset, const float *w_scale, const float *grad,
                                           const tte_dims *filter_dims, const int8_t *filter,
                                           const tte_weight_part *part, float *in_grad);

/* The fp32 head: in_grad[i] = sum over o ascending of grad[o] * w[o, i]. */
void tte_fully_connected_grad_input_f32(const float *grad, const tte_dims *filter_dims, const float *filter,
                                        float *in_grad);

/* --- fused updates (train_update.c, train_conv_update.c, train_fc.c) ------------------------------------------ */

/* Copies `bytes` bytes: a state tensor into the buffer of its new value when the two are not the same memory
 * (updates then work in place on the copy). */
void tte_state_copy(int32_t bytes, const void *in, void *out);

/* Bias: g[o] = sum over positions p (raster order) of grad[p, o]; bias[o] = tte_qas_update_s32(bias[o], g[o],
 * *lr, factor[o], rng), o ascending. grad_dims {N, H, W, O} (positions = N H W). */
void tte_bias_update_s32_f32(const float *factor, const float *lr, const tte_dims *grad_dims, const float *grad,
                             uint32_t *rng, int32_t *bias);

/* The fp32 head's bias: bias[o] = bias[o] - *lr * grad[o], o < size. */
void tte_bias_update_f32(const float *lr, int32_t size, const float *grad, float *bias);

/* Conv weight, fused: for each written element (o, kh, kw, t) in row-major order,
 * g = sum over output positions p (raster order; taps outside the image skipped) of
 * grad[p, o] * (float)(x[tap of p, t] + input_offset), then w = tte_qas_update_s8(w, g, *lr, factor[o], rng).
 * in_dims {1, H, W, T}: the saved trained input channels (or the whole input when all are trained);
 * grad_dims {1, OH, OW, O}; filter_dims {O, KH, KW, C}: with C == T the filter holds exactly the trained
 * channels (the SRAM part, or the whole weight when every channel trains), otherwise it is the whole weight
 * and element t is written at channel channels[t]. Stack: about 600 bytes on Cortex-M7. */
void tte_conv2d_update_weight_s8_f32(const tte_update_params *params, const tte_conv_geom *geom,
                                     const float *factor, const float *lr, const tte_dims *in_dims,
                                     const int8_t *in, const tte_dims *grad_dims, const float *grad,
                                     const int16_t *channels, const tte_dims *filter_dims, uint32_t *rng,
                                     int8_t *filter);

/* Depthwise weight, fused: written elements (kh, kw, j) with j < T M, j = t M + m standing for output channel
 * oc = channels[t] M + m; g = sum over p of grad[p, oc] * (float)(x[tap of p, t] + input_offset);
 * w = tte_qas_update_s8(w, g, *lr, factor[oc], rng). filter_dims {1, KH, KW, C'}: C' == T M holds the trained
 * columns only, otherwise the whole weight (column oc). */
void tte_depthwise_conv2d_update_weight_s8_f32(const tte_update_params *params, const tte_conv_geom *geom,
                                               const float *factor, const float *lr, const tte_dims *in_dims,
                                               const int8_t *in, const tte_dims *grad_dims, const float *grad,
                                               const int16_t *channels, const tte_dims *filter_dims,
                                               uint32_t *rng, int8_t *filter);

/* Fully connected weight (batch 1), fused: elements (o, t) in row-major order, g = grad[o] *
 * (float)(x[t] + input_offset), w = tte_qas_update_s8(w, g, *lr, factor[o], rng). in_count = T,
 * filter_dims {O, 1, 1, C}: C == T the trained columns only, otherwise the whole weight (column channels[t]). */
void tte_fully_connected_update_weight_s8_f32(const tte_update_params *params, const float *factor,
                                              const float *lr, int32_t in_count, const int8_t *in,
                                              const float *grad, const int16_t *channels,
                                              const tte_dims *filter_dims, uint32_t *rng, int8_t *filter);

/* The fp32 head's weight: w[o, c] = w[o, c] - *lr * (grad[o] * x_real[t]) with
 * x_real[t] = (float)(x[t] + offset) * scale and c = t (C == T) or channels[t]. */
void tte_fully_connected_update_weight_f32(const tte_dequant_params *in_q, const float *lr, int32_t in_count,
                                           const int8_t *in, const float *grad, const int16_t *channels,
                                           const tte_dims *filter_dims, float *filter);

#endif /* TTE_TRAIN_H */
