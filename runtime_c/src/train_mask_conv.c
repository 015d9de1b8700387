/* Forward kernels of the train step for the weight layers: conv2d, depthwise and fully connected that also
 * write the 1-bit clamp mask of their output (tte_train.h).
 *
 * The integer arithmetic is that of the forward kernels (tte_conv.h, tte_fc.h): the same dot products
 * (tte_dot.h), the same wrapping bias addition and the same requantization (tte_channel_rq_apply), so the int8
 * output equals theirs bit for bit; the requantized value before the clamp gives the mask bit in the same pass.
 * Loops run over output pixels, then output channels: the output and its mask are written in NHWC order.
 *
 * Two fast paths: pointwise convolutions (every 1x1 tap inside the image) go two pixels by two output channels
 * through tte_dot_2x2 with the input offset folded into a per-channel constant (as the GEMM does); depthwise
 * convolutions with multiplier 1 go four channels at a time (adjacent bytes, accumulated in registers, their
 * requantization prepared once per group).
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

/* The input pixel of output pixel p (linear over N, OH, OW) of a pointwise convolution. */
static const int8_t *pointwise_pixel(const int8_t *in, const tte_dims *in_dims, const tte_dims *out_dims,
                                     const tte_conv_params *params, int32_t p)
{
    const int32_t ox = p % out_dims->w, rest = p / out_dims->w;
    const int32_t oy = rest % out_dims->h, n = rest / out_dims->h;
    return in + ((n * in_dims->h + oy * params->stride_h) * in_dims->w + ox * params->stride_w) * in_dims->c;
}

/* 1x1 kernel with every tap inside the image: blocks of 2 output channels (outer) x 2 pixels. An odd last channel
 * or pixel is computed twice and written once. */
static void conv_pointwise_mask(const tte_conv_params *params, const tte_requant *quant, const tte_dims *in_dims,
                                const int8_t *in, const int8_t *filter, const tte_weight_part *part,
                                const int32_t *bias, const tte_dims *out_dims, int8_t *out, uint8_t *mask)
{
    const tte_out_stage o = tte_out_stage_make(params->output_offset, params->act_min, params->act_max);
    const int32_t cin = in_dims->c, cout = out_dims->c, x_off = params->input_offset;
    const int32_t pixels = out_dims->n * out_dims->h * out_dims->w;
    int32_t oc, p, j;
    tte_mask_clear(mask, pixels * cout);
    for (oc = 0; oc < cout; oc += 2) {
        const int32_t oc1 = oc + 1 < cout ? oc + 1 : oc;
        const int8_t *w[2];
        int32_t k[2];
        tte_channel_rq rq[2];
        w[0] = filter + oc * cin;
        w[1] = filter + oc1 * cin;
        for (j = 0; j < 2; j++) { /* bias + x_off * sum(w): the input offset, once per channel */
            const int32_t c = j ? oc1 : oc;
            k[j] = tte_wrap_add(bias != NULL ? bias[c] : 0, x_off * tte_sum_s8(w[j], cin));
            rq[j] = tte_rq_of(quant, c);
        }
        for (p = 0; p < pixels; p += 2) {
            const int32_t p1 = p + 1 < pixels ? p + 1 : p;
            const int8_t *x[2];
            int32_t acc[4] = {0, 0, 0, 0};
            x[0] = pointwise_pixel(in, in_dims, out_dims, params, p);
            x[1] = pointwise_pixel(in, in_dims, out_dims, params, p1);
            tte_dot_2x2(x[0], x[1], w[0], w[1], cin, acc);
            for (j = 0; j < 4; j++) { /* acc[2 i + c]: pixel i, channel c */
                const int32_t c = j & 1, i = j >> 1, ch = c ? oc1 : oc;
                if ((c && oc1 == oc) || (i && p1 == p)) {
                    continue;
                }
                if (part != NULL) {
                    acc[j] += part_delta(part, x[i], w[c], part->sram + ch * part->count, x_off);
                }
                tte_out_mask_at(out, mask, (i ? p1 : p) * cout + ch,
                                tte_channel_rq_apply(&rq[c], tte_wrap_add(k[c], acc[j])), &o);
            }
        }
    }
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
    if (win.kh == 1 && win.kw == 1 && params->pad_top == 0 && params->pad_left == 0 &&
        (out_dims->h - 1) * params->stride_h < win.h && (out_dims->w - 1) * params->stride_w < win.w) {
        conv_pointwise_mask(params, quant, in_dims, in, filter, part, bias, out_dims, out, mask);
        return;
    }
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

/* acc[j] = sum over the window taps inside the image of (x + x_off) * w for channels c .. c+3 (adjacent bytes):
 * x points at the window's first valid tap in the input and w in the filter, rows x_row and w_row apart. */
static void dw_window4(const int8_t *x, const int8_t *w, int32_t rows, int32_t cols, int32_t ch, int32_t x_row,
                       int32_t w_row, int32_t x_off, int32_t acc[4])
{
    int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, r, k;
    for (r = 0; r < rows; r++, x += x_row, w += w_row) {
        const int8_t *xt = x, *wt = w;
        for (k = 0; k < cols; k++, xt += ch, wt += ch) {
            a0 += (xt[0] + x_off) * wt[0];
            a1 += (xt[1] + x_off) * wt[1];
            a2 += (xt[2] + x_off) * wt[2];
            a3 += (xt[3] + x_off) * wt[3];
        }
    }
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = a2;
    acc[3] = a3;
}

/* Multiplier 1 and a whole weight: groups of four channels (the last group may overlap the previous one, as
 * outputs are written by index), their requantization prepared once, then every output pixel's window. */
static void dw_mask_mult1(const tte_dw_conv_params *params, const tte_requant *quant, const tte_dims *in_dims,
                          const int8_t *in, const tte_dims *filter_dims, const int8_t *filter,
                          const int32_t *bias, const tte_dims *out_dims, int8_t *out, uint8_t *mask)
{
    const tte_out_stage o = tte_out_stage_make(params->output_offset, params->act_min, params->act_max);
    const int32_t h = in_dims->h, w = in_dims->w, ch = in_dims->c, x_off = params->input_offset;
    const int32_t kh = filter_dims->h, kw = filter_dims->w;
    int32_t n, oy, ox, c0, j;
    tte_mask_clear(mask, out_dims->n * out_dims->h * out_dims->w * ch);
    for (c0 = 0; c0 < ch; c0 += 4) {
        const int32_t c = tte_min32(c0, ch - 4); /* the last group ends at the last channel */
        tte_channel_rq rq[4];
        int32_t b[4];
        for (j = 0; j < 4; j++) {
            rq[j] = tte_rq_of(quant, c + j);
            b[j] = bias != NULL ? bias[c + j] : 0;
        }
        for (n = 0; n < out_dims->n; n++) {
            const int8_t *in_n = in + n * h * w * ch + c;
            for (oy = 0; oy < out_dims->h; oy++) {
                const int32_t iy0 = oy * params->stride_h - params->pad_top;
                const int32_t ky0 = tte_max32(0, -iy0), ky1 = tte_min32(kh, h - iy0);
                for (ox = 0; ox < out_dims->w; ox++) {
                    const int32_t ix0 = ox * params->stride_w - params->pad_left;
                    const int32_t kx0 = tte_max32(0, -ix0), kx1 = tte_min32(kw, w - ix0);
                    const int32_t at = ((n * out_dims->h + oy) * out_dims->w + ox) * ch + c;
                    int32_t acc[4];
                    dw_window4(in_n + ((iy0 + ky0) * w + ix0 + kx0) * ch, filter + (ky0 * kw + kx0) * ch + c,
                               ky1 - ky0, kx1 - kx0, ch, w * ch, kw * ch, x_off, acc);
                    for (j = 0; j < 4; j++) {
                        tte_out_mask_at(out, mask, at + j, tte_channel_rq_apply(&rq[j], tte_wrap_add(b[j], acc[j])),
                                        &o);
                    }
                }
            }
        }
    }
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
    if (mult == 1 && part == NULL && c_in >= 4) {
        dw_mask_mult1(params, quant, in_dims, in, filter_dims, filter, bias, out_dims, out, mask);
        return;
    }
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
