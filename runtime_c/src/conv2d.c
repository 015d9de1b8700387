/* General int8 convolution: any kernel size, stride and padding.
 *
 * Two output pixels at a time, the kernel windows are copied (im2col) into a stack buffer as int16 values
 * x + input_offset, with 0 for the taps outside the image (TFLite skips them). Each output channel's OHWI
 * weights are one contiguous row of K = KH * KW * C_in bytes, and a 2 pixel x 2 channel block shares every
 * load. The buffer keeps the values in the order SMLAD consumes them: for each group of 4 taps k..k+3, pixel
 * 0's (k, k+2) and (k+1, k+3) halfword pairs, then pixel 1's, so that one word of weights widened by SXTB16
 * (bytes 0, 2) and SXTB16 ROR 8 (bytes 1, 3) meets them directly. Windows of more than TTE_CONV_PATCH_MAX taps
 * take a slower path without the buffer.
 */
#include "tte_conv.h"
#include "tte_dot.h"
#include "tte_fixedpoint.h"

#ifndef TTE_CONV_PATCH_MAX
#define TTE_CONV_PATCH_MAX 256 /* taps per window; the stack holds two windows of int16 (1 KB) */
#endif

typedef struct {
    int32_t h, w, cin, kh, kw, oh, ow, n, cout;
    int32_t stride_h, stride_w, pad_top, pad_left, x_off;
    const int8_t *in, *filter;
    const int32_t *bias;
    const tte_requant *quant;
    tte_out_stage out;
} conv_args;

static int32_t max32(int32_t a, int32_t b)
{
    return a > b ? a : b;
}

static int32_t min32(int32_t a, int32_t b)
{
    return a < b ? a : b;
}

static tte_channel_rq channel_rq(const tte_requant *q, int32_t oc)
{
    const int32_t i = q->per_channel ? oc : 0;
    return tte_channel_rq_make(q->multiplier[i], q->shift[i]);
}

/* Where tap k of pixel p (0 or 1) goes in the two-window buffer (see the file comment). */
static int32_t lane(int32_t p, int32_t k)
{
    return (((k >> 2) * 4 + p * 2 + (k & 1)) << 1) + ((k >> 1) & 1);
}

static void fill(int8_t *dst, int32_t count, int8_t value)
{
    int32_t i;
    for (i = 0; i < count; i++) {
        dst[i] = value;
    }
}

/* The window of output pixel `pixel` (linear over N, OH, OW) as int8 in HWC order, the taps outside the image
 * and those up to the next multiple of 4 set to the input zero point (x + input_offset = 0). */
static void window(const conv_args *a, int32_t pixel, int8_t *dst)
{
    const int32_t ox = pixel % a->ow, rest = pixel / a->ow;
    const int32_t oy = rest % a->oh, n = rest / a->oh;
    const int32_t iy0 = oy * a->stride_h - a->pad_top, ix0 = ox * a->stride_w - a->pad_left;
    const int32_t kx_start = max32(0, -ix0), kx_end = min32(a->kw, a->w - ix0);
    const int32_t row = a->kw * a->cin, k_all = a->kh * row, zp = -a->x_off;
    int32_t ky, i;
    for (ky = 0; ky < a->kh; ky++, dst += row) {
        const int32_t iy = iy0 + ky;
        const int8_t *src;
        if (iy < 0 || iy >= a->h || kx_start >= kx_end) {
            fill(dst, row, (int8_t)zp);
            continue;
        }
        src = a->in + ((n * a->h + iy) * a->w + ix0 + kx_start) * a->cin;
        fill(dst, kx_start * a->cin, (int8_t)zp);
        for (i = 0; i < (kx_end - kx_start) * a->cin; i++) {
            dst[kx_start * a->cin + i] = src[i];
        }
        fill(dst + kx_end * a->cin, (a->kw - kx_end) * a->cin, (int8_t)zp);
    }
    fill(dst, ((k_all + 3) & ~3) - k_all, (int8_t)zp);
}

/* The window of `pixel` into lanes p of `patch` (x + input_offset as int16; 0 outside the image). */
static void im2col(const conv_args *a, int32_t pixel, int32_t p, int16_t *patch)
{
    int8_t stage[TTE_CONV_PATCH_MAX];
    const int32_t k_pad = (a->kh * a->kw * a->cin + 3) & ~3;
    int32_t k;
    window(a, pixel, stage);
#if TTE_HAVE_DSP
    {
        const uint32_t xo = tte_dup16(a->x_off);
        for (k = 0; k < k_pad; k += 4) {
            const uint32_t v = tte_read_s8x4(stage + k);
            tte_write_word(patch, k + 2 * p, tte_sxtab16(xo, v));
            tte_write_word(patch, k + 2 * p + 1, tte_sxtab16_ror8(xo, v));
        }
    }
#else
    for (k = 0; k < k_pad; k++) {
        patch[lane(p, k)] = (int16_t)(stage[k] + a->x_off);
    }
#endif
}

#if TTE_HAVE_DSP
/* Bytes w[0..n), n < 4, as the low bytes of a word (the rest 0): the end of a weight row, without reading
 * past it. */
static uint32_t read_tail(const int8_t *w, int32_t n)
{
    uint32_t v = 0;
    int32_t i;
    for (i = 0; i < n; i++) {
        v |= (uint32_t)(uint8_t)w[i] << (8 * i);
    }
    return v;
}
#endif

#if TTE_HAVE_DSP
/* acc[2 * p + j] += taps k..k+3 of window p times weight words wa (j = 0), wb (j = 1). */
static TTE_ALWAYS_INLINE void patch_group(const int16_t *patch, int32_t k, uint32_t wa, uint32_t wb,
                                          int32_t *a00, int32_t *a01, int32_t *a10, int32_t *a11)
{
    const uint32_t w0l = tte_sxtb16(wa), w0h = tte_sxtb16_ror8(wa);
    const uint32_t w1l = tte_sxtb16(wb), w1h = tte_sxtb16_ror8(wb);
    const uint32_t x0l = tte_read_word(patch, k), x0h = tte_read_word(patch, k + 1);
    const uint32_t x1l = tte_read_word(patch, k + 2), x1h = tte_read_word(patch, k + 3);
    *a00 = tte_smlad(x0h, w0h, tte_smlad(x0l, w0l, *a00));
    *a01 = tte_smlad(x0h, w1h, tte_smlad(x0l, w1l, *a01));
    *a10 = tte_smlad(x1h, w0h, tte_smlad(x1l, w0l, *a10));
    *a11 = tte_smlad(x1h, w1h, tte_smlad(x1l, w1l, *a11));
}
#endif

/* acc[2 * p + j] += sum_k window_p[k] * w_j[k] over k < K, for the two windows and weight rows j, j + 1.
 * `w1_more`: another weight row follows row j + 1, so the last group may read whole words past K from both
 * rows (the window lanes there are 0, so those bytes add nothing). */
static TTE_ALWAYS_INLINE void patch_dot(const int16_t *patch, const int8_t *w0, int32_t k_all, int w1_more,
                                        int32_t acc[4])
{
    int32_t a00 = acc[0], a01 = acc[1], a10 = acc[2], a11 = acc[3];
    const int8_t *w1 = w0 + k_all;
    int32_t k = 0;
#if TTE_HAVE_DSP
    const int32_t k4 = k_all & ~3;
    for (; k < k4; k += 4) {
        patch_group(patch, k, tte_read_s8x4(w0 + k), tte_read_s8x4(w1 + k), &a00, &a01, &a10, &a11);
    }
    if (k < k_all) {
        const uint32_t wa = tte_read_s8x4(w0 + k); /* row j + 1 follows */
        const uint32_t wb = w1_more ? tte_read_s8x4(w1 + k) : read_tail(w1 + k, k_all - k);
        patch_group(patch, k, wa, wb, &a00, &a01, &a10, &a11);
    }
#else
    (void)w1_more;
    for (; k < k_all; k++) {
        const int32_t x0 = patch[lane(0, k)], x1 = patch[lane(1, k)];
        a00 += x0 * w0[k];
        a01 += x0 * w1[k];
        a10 += x1 * w0[k];
        a11 += x1 * w1[k];
    }
#endif
    acc[0] = a00;
    acc[1] = a01;
    acc[2] = a10;
    acc[3] = a11;
}

/* The same for one weight row (the last channel when C_out is odd; it may end the weight array, so no lane
 * beyond K is read from it). */
static TTE_ALWAYS_INLINE void patch_dot1(const int16_t *patch, const int8_t *w0, int32_t k_all, int32_t acc[2])
{
    int32_t a0 = 0, a1 = 0, k;
    for (k = 0; k < k_all; k++) {
        a0 += patch[lane(0, k)] * w0[k];
        a1 += patch[lane(1, k)] * w0[k];
    }
    acc[0] = a0;
    acc[1] = a1;
}

static TTE_ALWAYS_INLINE void conv_patches(const conv_args *args, int8_t *out, int fast)
{
    const conv_args a = *args;
    const tte_out_stage o = a.out;
    const int32_t k = a.kh * a.kw * a.cin, pixels = a.n * a.oh * a.ow;
    union {
        uint32_t words[TTE_CONV_PATCH_MAX]; /* word alignment for the SMLAD loads (through tte_read_word) */
        int16_t lanes[2 * TTE_CONV_PATCH_MAX];
    } buffer;
    int16_t *patch = buffer.lanes;
    int32_t p = 0, oc;
    for (; p < pixels; p += 2) {
        const int pair = p + 1 < pixels;
        int8_t *dst = out + p * a.cout;
        im2col(&a, p, 0, patch);
        im2col(&a, pair ? p + 1 : p, 1, patch);
        for (oc = 0; oc + 2 <= a.cout; oc += 2) {
            const tte_channel_rq rq0 = channel_rq(a.quant, oc), rq1 = channel_rq(a.quant, oc + 1);
            const int32_t b0 = a.bias ? a.bias[oc] : 0, b1 = a.bias ? a.bias[oc + 1] : 0;
            if (fast == 2) { /* tte_fast_out_ok: the zero point is in k (and SMLAD sums start at the biases) */
                int32_t acc[4];
                const int32_t k0 = tte_fast_k_out(&rq0, o.offset), k1 = tte_fast_k_out(&rq1, o.offset);
                acc[0] = TTE_HAVE_DSP ? b0 : 0;
                acc[1] = TTE_HAVE_DSP ? b1 : 0;
                acc[2] = acc[0];
                acc[3] = acc[1];
                patch_dot(patch, a.filter + oc * k, k, oc + 2 < a.cout, acc);
#if !TTE_HAVE_DSP /* int32 sums must not overflow in C: add the biases wrapping */
                acc[0] = tte_wrap_add(acc[0], b0);
                acc[1] = tte_wrap_add(acc[1], b1);
                acc[2] = tte_wrap_add(acc[2], b0);
                acc[3] = tte_wrap_add(acc[3], b1);
#endif
                dst[oc] = tte_requant_fast_s8(acc[0], rq0.multiplier, k0, rq0.fast_sh);
                dst[oc + 1] = tte_requant_fast_s8(acc[1], rq1.multiplier, k1, rq1.fast_sh);
                if (pair) {
                    dst[a.cout + oc] = tte_requant_fast_s8(acc[2], rq0.multiplier, k0, rq0.fast_sh);
                    dst[a.cout + oc + 1] = tte_requant_fast_s8(acc[3], rq1.multiplier, k1, rq1.fast_sh);
                }
                continue;
            }
            int32_t acc[4] = {0, 0, 0, 0};
            patch_dot(patch, a.filter + oc * k, k, oc + 2 < a.cout, acc);
            dst[oc] = tte_requant_out(&rq0, tte_wrap_add(acc[0], b0), &o, fast);
            dst[oc + 1] = tte_requant_out(&rq1, tte_wrap_add(acc[1], b1), &o, fast);
            if (pair) {
                dst[a.cout + oc] = tte_requant_out(&rq0, tte_wrap_add(acc[2], b0), &o, fast);
                dst[a.cout + oc + 1] = tte_requant_out(&rq1, tte_wrap_add(acc[3], b1), &o, fast);
            }
        }
        if (oc < a.cout) {
            const tte_channel_rq rq0 = channel_rq(a.quant, oc);
            const int32_t b0 = a.bias ? a.bias[oc] : 0;
            int32_t acc[2];
            patch_dot1(patch, a.filter + oc * k, k, acc);
            dst[oc] = tte_requant_out(&rq0, tte_wrap_add(acc[0], b0), &o, fast);
            if (pair) {
                dst[a.cout + oc] = tte_requant_out(&rq0, tte_wrap_add(acc[1], b0), &o, fast);
            }
        }
    }
}

/* Without the buffer: for each output pixel and kernel row, the taps inside the image are one contiguous run
 * of (kx_end - kx_start) * C_in bytes in both the input and the filter. */
static void conv_rows(const conv_args *args, int8_t *out)
{
    const conv_args a = *args;
    const tte_out_stage o = a.out;
    const int32_t filter_stride = a.kh * a.kw * a.cin;
    int32_t n, oy, ox, oc, ky;
    for (n = 0; n < a.n; n++) {
        for (oy = 0; oy < a.oh; oy++) {
            const int32_t iy0 = oy * a.stride_h - a.pad_top;
            const int32_t ky_start = max32(0, -iy0), ky_end = min32(a.kh, a.h - iy0);
            for (ox = 0; ox < a.ow; ox++) {
                const int32_t ix0 = ox * a.stride_w - a.pad_left;
                const int32_t kx_start = max32(0, -ix0), kx_end = min32(a.kw, a.w - ix0);
                const int32_t span = (kx_end - kx_start) * a.cin;
                /* An offset, not a pointer, until the row is known to be inside the image. */
                const int32_t x_base = ((n * a.h + iy0) * a.w + ix0 + kx_start) * a.cin;
                int8_t *dst = out + ((n * a.oh + oy) * a.ow + ox) * a.cout;
                for (oc = 0; oc < a.cout; oc++) {
                    const int8_t *w0 = a.filter + oc * filter_stride + kx_start * a.cin;
                    const tte_channel_rq rq = channel_rq(a.quant, oc);
                    int32_t acc = 0;
                    for (ky = ky_start; ky < ky_end; ky++) {
                        acc += tte_dot_1x1_off(a.in + (x_base + ky * a.w * a.cin), w0 + ky * a.kw * a.cin, span,
                                               a.x_off, 0);
                    }
                    dst[oc] = tte_requant_out(&rq, tte_wrap_add(a.bias ? a.bias[oc] : 0, acc), &o, 0);
                }
            }
        }
    }
}

static TTE_NOINLINE void conv_patches_fast(const conv_args *a, int8_t *out)
{
    conv_patches(a, out, 1);
}

static TTE_NOINLINE void conv_patches_fast_out(const conv_args *a, int8_t *out)
{
    conv_patches(a, out, 2);
}

static TTE_NOINLINE void conv_patches_general(const conv_args *a, int8_t *out)
{
    conv_patches(a, out, 0);
}

void tte_conv2d_s8(const tte_conv_params *params, const tte_requant *quant, const tte_dims *in_dims,
                   const int8_t *in, const tte_dims *filter_dims, const int8_t *filter, const int32_t *bias,
                   const tte_dims *out_dims, int8_t *out)
{
    conv_args a;
    if (tte_conv2d_wide_s8(params, quant, in_dims, in, filter_dims, filter, bias, out_dims, out)) {
        return;
    }
    a.h = in_dims->h;
    a.w = in_dims->w;
    a.cin = in_dims->c;
    a.kh = filter_dims->h;
    a.kw = filter_dims->w;
    a.n = out_dims->n;
    a.oh = out_dims->h;
    a.ow = out_dims->w;
    a.cout = out_dims->c;
    a.stride_h = params->stride_h;
    a.stride_w = params->stride_w;
    a.pad_top = params->pad_top;
    a.pad_left = params->pad_left;
    a.x_off = params->input_offset;
    a.in = in;
    a.filter = filter;
    a.bias = bias;
    a.quant = quant;
    a.out = tte_out_stage_make(params->output_offset, params->act_min, params->act_max);
    if (a.kh * a.kw * a.cin > TTE_CONV_PATCH_MAX) {
        conv_rows(&a, out);
    } else if (tte_fast_out_ok(quant, a.cout, &a.out)) {
        conv_patches_fast_out(&a, out);
    } else if (tte_fast_ok(quant, a.cout, &a.out)) {
        conv_patches_fast(&a, out);
    } else {
        conv_patches_general(&a, out);
    }
}
