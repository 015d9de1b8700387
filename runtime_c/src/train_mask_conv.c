/* Forward kernels of the train step for the weight layers: conv2d and fully connected that also write the 1-bit
 * clamp mask of their output (tte_train.h).
 *
 * The integer arithmetic is that of the forward kernels (tte_conv.h, tte_fc.h): the same dot products
 * (tte_dot.h), the same wrapping bias addition and the same requantization (tte_channel_rq_apply), so the int8
 * output equals theirs bit for bit; the requantized value before the clamp gives the mask bit in the same pass.
 * Loops run over output pixels, then output channels: the output and its mask are written in NHWC order.
 *
 * The fast path: pointwise convolutions (every 1x1 tap inside the image) go two pixels by two output channels
 * through tte_dot_2x2 with the input offset folded into a per-channel constant (as the GEMM does); where both
 * channels' requantization takes tte_mbqm_right2, the output stage runs from locals and writes two mask bits at
 * once (tte_fast_out, tte_put_bits2). The depthwise variant is in train_mask_dw.c.
 *
 * A split pointwise weight with at most TTE_MASK_ROW_MAX input channels is merged (flash row, trained channels
 * from SRAM) into two stack rows per channel pair. Otherwise a partially trained weight (tte_weight_part) is read
 * as "flash weight + correction": the dot product runs over the whole flash row, then each trained channel adds
 * (x + x_off) * (w_sram - w_flash). Integer sums are exact (wrapping int32), so this equals reading the trained
 * channels from SRAM.
 */
#include "tte_dot.h"
#include "tte_gemm.h"
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

#ifndef TTE_MASK_ROW_MAX
#define TTE_MASK_ROW_MAX 256 /* input channels of a split pointwise weight merged on the stack (two rows) */
#endif

/* Output channel oc's weight row with the trained channels of a split weight read from SRAM: the flash row when
 * nothing needs merging, else `buf` (cin <= TTE_MASK_ROW_MAX) filled with the merged row. */
static const int8_t *merged_row(const int8_t *filter, const tte_weight_part *part, int32_t oc, int32_t cin,
                                int8_t *buf)
{
    const int8_t *wf = filter + oc * cin, *ws;
    int32_t i;
    if (part == NULL) {
        return wf;
    }
    ws = part->sram + oc * part->count;
    for (i = 0; i < cin; i++) {
        buf[i] = wf[i];
    }
    for (i = 0; i < part->count; i++) {
        buf[part->channels[i]] = ws[i];
    }
    return buf;
}

/* acc = the four raw dot products of pixels x0, x1 with rows w0, w1 (acc[2 i + c]: pixel i, row c). Not inlined:
 * the dot loop keeps every pointer in a register. */
static TTE_NOINLINE void dot_2x2(const int8_t *x0, const int8_t *x1, const int8_t *w0, const int8_t *w1,
                                 int32_t len, int32_t acc[4])
{
    acc[0] = acc[1] = acc[2] = acc[3] = 0;
    tte_dot_2x2(x0, x1, w0, w1, len, acc);
}

/* One pointwise channel pair: weights, bias + offset terms, requantization, and the split weight's SRAM part
 * when the rows could not be merged (then each output adds its trained channels' correction). */
typedef struct {
    const int8_t *w[2];
    const int8_t *ws[2];
    const tte_weight_part *part;
    tte_channel_rq rq[2];
    int32_t k[2], ch[2], x_off, cin, cout;
} pw_pair;

/* Output (pixel p, row c of the pair) with its mask bit. */
static void pw_emit(const pw_pair *a, const int8_t *x, int32_t p, int32_t c, int32_t acc, const tte_out_stage *o,
                    int8_t *out, uint8_t *mask)
{
    if (a->part != NULL) {
        acc += part_delta(a->part, x, a->w[c], a->ws[c], a->x_off);
    }
    tte_out_mask_at(out, mask, p * a->cout + a->ch[c], tte_channel_rq_apply(&a->rq[c], tte_wrap_add(a->k[c], acc)),
                    o);
}

/* The pixel pairs of a pair of output channels (oc, oc + 1 < cout) whose requantization takes tte_mbqm_right2, with
 * a whole (or merged) weight and a dense input; returns the first pixel not done (an odd last one). */
static int32_t pw_pair_fast(const pw_pair *a, const tte_out_stage *o, const int8_t *in, int32_t pixels, int8_t *out,
                            uint8_t *mask)
{
    const tte_fast_stage f = {o->act_min - o->offset, o->act_max - o->offset, o->offset, o->act_min, o->act_max};
    const int32_t k0 = a->k[0], m0 = a->rq[0].multiplier, fk0 = a->rq[0].fast_k, sh0 = a->rq[0].fast_sh;
    const int32_t k1 = a->k[1], m1 = a->rq[1].multiplier, fk1 = a->rq[1].fast_k, sh1 = a->rq[1].fast_sh;
    const int32_t cin = a->cin, cout = a->cout;
    const int8_t *w0 = a->w[0], *w1 = a->w[1];
    int32_t p, i = a->ch[0], acc[4];
    int8_t *y = out + a->ch[0];
    for (p = 0; p + 2 <= pixels; p += 2, in += 2 * cin, y += 2 * cout, i += 2 * cout) {
        uint32_t bits;
        dot_2x2(in, in + cin, w0, w1, cin, acc);
        bits = tte_fast_out(acc[0], k0, m0, fk0, sh0, f, y) |
               (tte_fast_out(acc[1], k1, m1, fk1, sh1, f, y + 1) << 1);
        tte_put_bits2(mask, i, bits);
        bits = tte_fast_out(acc[2], k0, m0, fk0, sh0, f, y + cout) |
               (tte_fast_out(acc[3], k1, m1, fk1, sh1, f, y + cout + 1) << 1);
        tte_put_bits2(mask, i + cout, bits);
    }
    return p;
}

/* The pixel pairs of a channel pair through the GEMM pass (tte_gemm_mask_pair) when its clamp is [-128, 127] and
 * both requantizations fold the zero point (tte_fast_k_out); returns the pixels done (0: not taken). */
static int32_t pw_pair_gemm(const pw_pair *a, const tte_out_stage *o, const int8_t *in, int32_t pixels, int8_t *out,
                            uint8_t *mask)
{
    tte_gemm_mask_args g;
    if (o->act_min != -128 || o->act_max != 127 || a->rq[0].shift < -TTE_FAST_OUT_MAX_SHIFT ||
        a->rq[1].shift < -TTE_FAST_OUT_MAX_SHIFT) {
        return 0;
    }
    g.bias0 = a->k[0];
    g.bias1 = a->k[1];
    g.m0 = a->rq[0].multiplier;
    g.k0 = tte_fast_k_out(&a->rq[0], o->offset);
    g.m1 = a->rq[1].multiplier;
    g.k1 = tte_fast_k_out(&a->rq[1], o->offset);
    g.sh0 = a->rq[0].fast_sh;
    g.sh1 = a->rq[1].fast_sh;
    g.mask = mask;
    g.idx = a->ch[0];
    return tte_gemm_mask_pair(&g, pixels, in, a->cin, a->cout, a->w[0], a->w[1], out + a->ch[0]);
}

/* 1x1 kernel with every tap inside the image: blocks of 2 output channels (outer) x 2 pixels. An odd last channel
 * or pixel is computed twice and written once. A split weight with at most TTE_MASK_ROW_MAX input channels has
 * its two rows merged once per channel pair; a wider one adds the trained channels' correction per output. */
static void conv_pointwise_mask(const tte_conv_params *params, const tte_requant *quant, const tte_dims *in_dims,
                                const int8_t *in, const int8_t *filter, const tte_weight_part *part,
                                const int32_t *bias, const tte_dims *out_dims, int8_t *out, uint8_t *mask)
{
    const tte_out_stage o = tte_out_stage_make(params->output_offset, params->act_min, params->act_max);
    const int32_t pixels = out_dims->n * out_dims->h * out_dims->w;
    const int merge = part != NULL && in_dims->c <= TTE_MASK_ROW_MAX;
    const int dense = params->stride_h == 1 && params->stride_w == 1 && in_dims->h == out_dims->h &&
                      in_dims->w == out_dims->w;
    int8_t rows[2][TTE_MASK_ROW_MAX];
    pw_pair a;
    int32_t oc, p, j, acc[4];
    a.part = merge ? NULL : part;
    a.x_off = params->input_offset;
    a.cin = in_dims->c;
    a.cout = out_dims->c;
    tte_mask_clear(mask, pixels * a.cout);
    for (oc = 0; oc < a.cout; oc += 2) {
        a.ch[0] = oc;
        a.ch[1] = oc + 1 < a.cout ? oc + 1 : oc;
        for (j = 0; j < 2; j++) { /* bias + x_off * sum(w): the input offset, once per channel */
            a.w[j] = merged_row(filter, merge ? part : NULL, a.ch[j], a.cin, rows[j]);
            a.ws[j] = part != NULL ? part->sram + a.ch[j] * part->count : NULL;
            a.k[j] = tte_wrap_add(bias != NULL ? bias[a.ch[j]] : 0, a.x_off * tte_sum_s8(a.w[j], a.cin));
            a.rq[j] = tte_rq_of(quant, a.ch[j]);
        }
        p = 0;
        if (dense && a.part == NULL && a.ch[1] != oc && a.rq[0].fast_k != 0 && a.rq[1].fast_k != 0) {
            p = pw_pair_gemm(&a, &o, in, pixels, out, mask);
            if (p == 0) {
                p = pw_pair_fast(&a, &o, in, pixels, out, mask);
            }
        }
        for (; p < pixels; p += 2) {
            const int32_t p1 = p + 1 < pixels ? p + 1 : p;
            const int8_t *x0 = dense ? in + p * a.cin : pointwise_pixel(in, in_dims, out_dims, params, p);
            const int8_t *x1 = dense ? in + p1 * a.cin : pointwise_pixel(in, in_dims, out_dims, params, p1);
            dot_2x2(x0, x1, a.w[0], a.w[1], a.cin, acc);
            pw_emit(&a, x0, p, 0, acc[0], &o, out, mask);
            if (a.ch[1] != oc) {
                pw_emit(&a, x0, p, 1, acc[1], &o, out, mask);
            }
            if (p1 != p) {
                pw_emit(&a, x1, p1, 0, acc[2], &o, out, mask);
                if (a.ch[1] != oc) {
                    pw_emit(&a, x1, p1, 1, acc[3], &o, out, mask);
                }
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
