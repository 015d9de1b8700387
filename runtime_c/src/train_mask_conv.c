/* Forward kernels of the train step for the weight layers: conv2d, depthwise and fully connected that also
 * write the 1-bit clamp mask of their output (tte_train.h).
 *
 * The integer arithmetic is that of the forward kernels (tte_conv.h, tte_fc.h): the same dot products
 * (tte_dot.h), the same wrapping bias addition and the same requantization (tte_channel_rq_apply), so the int8
 * output equals theirs bit for bit; the requantized value before the clamp gives the mask bit in the same pass.
 * Loops run over output pixels, then output channels: the output and its mask are written in NHWC order.
 *
 * A partially trained weight (tte_weight_part) is read as "flash weight + correction": the dot product runs
 * over the whole flash row, then each trained channel adds (x + x_off) * (w_sram - w_flash). Integer sums are
 * exact (wrapping int32), so this equals reading the trained channels from SRAM.
 */
#include "tte_dot.h"
#include "tte_train.h"
#include "tte_train_util.h"

/* sum over the trained channels t of (x[channels[t]] + x_off) * (ws[t] - wf[channels[t]]): the change of one
 * tap's dot product when the trained channels are read from ws instead of wf. */
static int32_t part_delta(const tte_weight_part *part, const int8_t *x, const int8_t *wf, const int8_t *ws,
                          int32_t x_off)
{
    int32_t acc = 0, t;
    for (t = 0; t < part->count; t++) {
        const int32_t c = part->channels[t];
        acc += (x[c] + x_off) * (ws[t] - wf[c]);
    }
    return acc;
}

typedef struct {
    int32_t h, w, cin, kh, kw, iy0, ix0, ky0, ky1, kx0, kx1;
} conv_window;

/* The correction of output channel oc at one output pixel, over the taps inside the image. */
static int32_t conv_part_delta(const conv_window *win, const int8_t *in_n, const int8_t *filter,
                               const tte_weight_part *part, int32_t oc, int32_t x_off)
{
    int32_t acc = 0, ky, kx;
    for (ky = win->ky0; ky < win->ky1; ky++) {
        for (kx = win->kx0; kx < win->kx1; kx++) {
            const int32_t tap = (oc * win->kh + ky) * win->kw + kx;
            const int8_t *x = in_n + ((win->iy0 + ky) * win->w + win->ix0 + kx) * win->cin;
            acc += part_delta(part, x, filter + tap * win->cin, part->sram + tap * part->count, x_off);
        }
    }
    return acc;
}

void tte_conv2d_mask_s8(const tte_conv_params *params, const tte_requant *quant, const tte_dims *in_dims,
                        const int8_t *in, const tte_dims *filter_dims, const int8_t *filter,
                        const tte_weight_part *part, const int32_t *bias, const tte_dims *out_dims, int8_t *out,
                        uint8_t *mask)
{
    const tte_out_stage o = tte_out_stage_make(params->output_offset, params->act_min, params->act_max);
    const int32_t cout = out_dims->c, x_off = params->input_offset;
    tte_bit_writer bits = tte_bits_start(mask);
    conv_window win;
    int32_t n, oy, ox, oc, ky;
    win.h = in_dims->h;
    win.w = in_dims->w;
    win.cin = in_dims->c;
    win.kh = filter_dims->h;
    win.kw = filter_dims->w;
    for (n = 0; n < out_dims->n; n++) {
        const int8_t *in_n = in + n * win.h * win.w * win.cin;
        for (oy = 0; oy < out_dims->h; oy++) {
            win.iy0 = oy * params->stride_h - params->pad_top;
            win.ky0 = tte_max32(0, -win.iy0);
            win.ky1 = tte_min32(win.kh, win.h - win.iy0);
            for (ox = 0; ox < out_dims->w; ox++) {
                int32_t span;
                win.ix0 = ox * params->stride_w - params->pad_left;
                win.kx0 = tte_max32(0, -win.ix0);
                win.kx1 = tte_min32(win.kw, win.w - win.ix0);
                span = (win.kx1 - win.kx0) * win.cin;
                for (oc = 0; oc < cout; oc++) {
                    const tte_channel_rq rq = tte_rq_of(quant, oc);
                    const int8_t *w0 = filter + (oc * win.kh * win.kw + win.kx0) * win.cin;
                    int32_t acc = 0;
                    for (ky = win.ky0; ky < win.ky1; ky++) {
                        /* taps kx0..kx1 of a kernel row: contiguous in the input and in the filter */
                        const int8_t *x = in_n + ((win.iy0 + ky) * win.w + win.ix0 + win.kx0) * win.cin;
                        acc += tte_dot_1x1_off(x, w0 + ky * win.kw * win.cin, span, x_off, 0);
                    }
                    if (part != NULL) {
                        acc += conv_part_delta(&win, in_n, filter, part, oc, x_off);
                    }
                    acc = tte_wrap_add(bias != NULL ? bias[oc] : 0, acc);
                    *out++ = tte_out_mask_s8(tte_channel_rq_apply(&rq, acc), &o, &bits);
                }
            }
        }
    }
    tte_bits_flush(&bits);
}

/* Where output channel oc's weights are: the first tap and the distance between taps. */
static const int8_t *dw_weights(const int8_t *filter, const tte_weight_part *part, int32_t c, int32_t m,
                                int32_t mult, int32_t channels, int32_t *stride)
{
    if (part != NULL && part->slot[c] >= 0) {
        *stride = part->count * mult;
        return part->sram + part->slot[c] * mult + m;
    }
    *stride = channels * mult;
    return filter + c * mult + m;
}

void tte_depthwise_conv2d_mask_s8(const tte_dw_conv_params *params, const tte_requant *quant,
                                  const tte_dims *in_dims, const int8_t *in, const tte_dims *filter_dims,
                                  const int8_t *filter, const tte_weight_part *part, const int32_t *bias,
                                  const tte_dims *out_dims, int8_t *out, uint8_t *mask)
{
    const tte_out_stage o = tte_out_stage_make(params->output_offset, params->act_min, params->act_max);
    const int32_t h = in_dims->h, w = in_dims->w, c_in = in_dims->c, mult = params->ch_mult;
    const int32_t kh = filter_dims->h, kw = filter_dims->w, x_off = params->input_offset;
    tte_bit_writer bits = tte_bits_start(mask);
    int32_t n, oy, ox, c, m, ky, kx;
    for (n = 0; n < out_dims->n; n++) {
        const int8_t *in_n = in + n * h * w * c_in;
        for (oy = 0; oy < out_dims->h; oy++) {
            const int32_t iy0 = oy * params->stride_h - params->pad_top;
            const int32_t ky0 = tte_max32(0, -iy0), ky1 = tte_min32(kh, h - iy0);
            for (ox = 0; ox < out_dims->w; ox++) {
                const int32_t ix0 = ox * params->stride_w - params->pad_left;
                const int32_t kx0 = tte_max32(0, -ix0), kx1 = tte_min32(kw, w - ix0);
                for (c = 0; c < c_in; c++) {
                    for (m = 0; m < mult; m++) {
                        const int32_t oc = c * mult + m;
                        const tte_channel_rq rq = tte_rq_of(quant, oc);
                        int32_t stride, acc = 0;
                        const int8_t *wp = dw_weights(filter, part, c, m, mult, c_in, &stride);
                        for (ky = ky0; ky < ky1; ky++) {
                            const int8_t *x = in_n + ((iy0 + ky) * w + ix0) * c_in + c;
                            for (kx = kx0; kx < kx1; kx++) {
                                acc += (x[kx * c_in] + x_off) * wp[(ky * kw + kx) * stride];
                            }
                        }
                        acc = tte_wrap_add(bias != NULL ? bias[oc] : 0, acc);
                        *out++ = tte_out_mask_s8(tte_channel_rq_apply(&rq, acc), &o, &bits);
                    }
                }
            }
        }
    }
    tte_bits_flush(&bits);
}

void tte_fully_connected_mask_s8(const tte_fc_params *params, const tte_requant *quant, const tte_dims *in_dims,
                                 const int8_t *in, const tte_dims *filter_dims, const int8_t *filter,
                                 const tte_weight_part *part, const int32_t *bias, const tte_dims *out_dims,
                                 int8_t *out, uint8_t *mask)
{
    const tte_out_stage o = tte_out_stage_make(params->output_offset, params->act_min, params->act_max);
    const int32_t depth = filter_dims->c, cout = filter_dims->n;
    const int32_t x_off = params->input_offset, w_off = params->filter_offset;
    tte_bit_writer bits = tte_bits_start(mask);
    int32_t b, oc;
    (void)out_dims;
    for (b = 0; b < in_dims->n; b++) {
        const int8_t *x = in + b * depth;
        for (oc = 0; oc < cout; oc++) {
            const tte_channel_rq rq = tte_rq_of(quant, oc);
            const int8_t *wf = filter + oc * depth;
            int32_t acc = tte_dot_1x1_off(x, wf, depth, x_off, w_off);
            if (part != NULL) { /* (w_sram + w_off) - (w_flash + w_off): the filter offset cancels */
                acc += part_delta(part, x, wf, part->sram + oc * part->count, x_off);
            }
            acc = tte_wrap_add(bias != NULL ? bias[oc] : 0, acc);
            *out++ = tte_out_mask_s8(tte_channel_rq_apply(&rq, acc), &o, &bits);
        }
    }
    tte_bits_flush(&bits);
}
