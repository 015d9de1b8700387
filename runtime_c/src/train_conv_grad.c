/* Input gradients of conv2d and depthwise_conv2d (tte_train.h), in gather form: one input pixel at a time, its
 * gradients start at 0.0f and receive, for each kernel tap (kh, then kw) that reaches an output position, and
 * then each output channel o (conv) or multiplier index m (depthwise) in ascending order, das * (float)w with
 * das = grad * w_scale. Per element that is exactly the reference's order (tte/train/grad_ops.py).
 *
 * Speed: pointwise convolutions (1x1, stride 1, no padding: most of MobileNet's) are a matrix product done in
 * blocks of four pixels by four input channels (sixteen sums in registers; each weight converted to float once per
 * pixel block, each das once per channel block); split weights take their frozen channels from flash and the
 * trained ones from the SRAM matrix in such blocks. Other convolutions: four input channels accumulate in
 * registers over all taps (and output channels): their weights are four adjacent bytes. Depthwise: eight, then
 * four channels at a time over the taps of a pixel.
 * Split weights (tte_weight_part) and other multipliers take a per-channel path that picks each channel's
 * weights from flash or SRAM.
 */
#include "tte_train.h"
#include "tte_train_util.h"

typedef struct {
    const tte_conv_geom *geom;
    const float *w_scale, *grad;
    const int8_t *filter;
    const tte_weight_part *part;
    int32_t oh, ow, cout, kh, kw, cin;
} grad_args;

/* The output position a tap at padded coordinate p (input + pad) and kernel offset k reaches, or -1. */
static int32_t tap_output(int32_t p, int32_t k, int32_t stride, int32_t out_size)
{
    const int32_t t = p - k;
    if (t < 0 || t % stride != 0 || t / stride >= out_size) {
        return -1;
    }
    return t / stride;
}

/* The gradient row of the output that tap (ky, kx) of input pixel (y, x) reaches, or NULL. */
static const float *tap_grad(const grad_args *a, int32_t y, int32_t x, int32_t ky, int32_t kx, int32_t row)
{
    const int32_t oy = tap_output(y + a->geom->pad_top, ky, a->geom->stride_h, a->oh);
    const int32_t ox = oy < 0 ? -1 : tap_output(x + a->geom->pad_left, kx, a->geom->stride_w, a->ow);
    return ox < 0 ? NULL : a->grad + (oy * a->ow + ox) * row;
}

/* Conv, four input channels i0..i0+3 of a whole weight. */
static void conv_grad4(const grad_args *a, int32_t y, int32_t x, int32_t i0, float *d)
{
    const int32_t o_step = a->kh * a->kw * a->cin;
    float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
    int32_t ky, kx, o;
    for (ky = 0; ky < a->kh; ky++) {
        for (kx = 0; kx < a->kw; kx++) {
            const float *g = tap_grad(a, y, x, ky, kx, a->cout);
            const int8_t *w = a->filter + (ky * a->kw + kx) * a->cin + i0;
            if (g == NULL) {
                continue;
            }
            for (o = 0; o < a->cout; o++, w += o_step) {
                const float das = g[o] * a->w_scale[o];
                a0 = a0 + das * (float)w[0];
                a1 = a1 + das * (float)w[1];
                a2 = a2 + das * (float)w[2];
                a3 = a3 + das * (float)w[3];
            }
        }
    }
    d[0] = a0;
    d[1] = a1;
    d[2] = a2;
    d[3] = a3;
}

/* Conv, one input channel i, from flash or (a trained channel of a split weight) from SRAM. */
static float conv_grad1(const grad_args *a, int32_t y, int32_t x, int32_t i)
{
    const int32_t s = a->part != NULL ? a->part->slot[i] : -1;
    const int8_t *base = s < 0 ? a->filter + i : a->part->sram + s;
    const int32_t stride = s < 0 ? a->cin : a->part->count, o_step = a->kh * a->kw * stride;
    float acc = 0.0f;
    int32_t ky, kx, o;
    for (ky = 0; ky < a->kh; ky++) {
        for (kx = 0; kx < a->kw; kx++) {
            const float *g = tap_grad(a, y, x, ky, kx, a->cout);
            const int8_t *w = base + (ky * a->kw + kx) * stride;
            if (g == NULL) {
                continue;
            }
            for (o = 0; o < a->cout; o++, w += o_step) {
                acc = acc + (g[o] * a->w_scale[o]) * (float)*w;
            }
        }
    }
    return acc;
}

/* --- pointwise: a 1x1 kernel, stride 1, no padding, so in_grad[p, i] = sum over o of das[p, o] * w[o, i] ------ */

/* Four pixels (gradient rows, the last ones repeated in a tail block) times four weight columns (offsets in the
 * rows of a weight matrix, repeated likewise). */
typedef struct {
    const float *g[4];
    int32_t col[4];
} pw_block;

/* acc[4 p + j] = sum over o ascending of (g[p][o] * w_scale[o]) * (float)w[o * ws + col[j]]: sixteen sums in
 * registers, each weight converted once per pixel block and each das once per column block. */
static TTE_NOINLINE void pw_sums(const float *w_scale, const int8_t *w, int32_t ws, int32_t cout,
                                 const pw_block *b, float acc[16])
{
    const float *g0 = b->g[0], *g1 = b->g[1], *g2 = b->g[2], *g3 = b->g[3];
    const int32_t c0 = b->col[0], c1 = b->col[1], c2 = b->col[2], c3 = b->col[3];
    TTE_F32_BLOCK4X4_DECL;
    int32_t o;
    for (o = 0; o < cout; o++, w += ws) {
        const float w0 = (float)w[c0], w1 = (float)w[c1], w2 = (float)w[c2], w3 = (float)w[c3];
        TTE_F32_SCALED_ROWS4(w_scale[o], o, g0, g1, g2, g3, w0, w1, w2, w3);
    }
    TTE_F32_BLOCK4X4_STORE(acc);
}

/* Every pixel for `n` (1..4) columns of the weight matrix w [O, ws]: column col[j] is input channel ch[j]. */
static void pw_columns(const grad_args *a, const int8_t *w, int32_t ws, int32_t n, const int32_t *col,
                       const int32_t *ch, int32_t pixels, float *in_grad)
{
    pw_block b;
    float acc[16];
    int32_t p, k, j;
    for (j = 0; j < 4; j++) {
        b.col[j] = col[j < n ? j : n - 1];
    }
    for (p = 0; p < pixels; p += 4) {
        const int32_t rows = tte_min32(4, pixels - p);
        for (k = 0; k < 4; k++) {
            b.g[k] = a->grad + (p + (k < rows ? k : rows - 1)) * a->cout;
        }
        pw_sums(a->w_scale, w, ws, a->cout, &b, acc);
        for (k = 0; k < rows; k++) {
            for (j = 0; j < n; j++) {
                in_grad[(p + k) * a->cin + ch[j]] = acc[4 * k + j];
            }
        }
    }
}

/* The pointwise input gradient: the frozen channels (all with a whole weight) from flash, four at a time, then
 * the trained channels of a split weight from its SRAM matrix [O, T]. */
static void pw_grad_input(const grad_args *a, int32_t pixels, float *in_grad)
{
    const tte_weight_part *part = a->part;
    int32_t col[4], n = 0, i;
    for (i = 0; i < a->cin; i++) {
        if (part == NULL || part->slot[i] < 0) {
            col[n++] = i;
        }
        if (n == 4 || (n > 0 && i == a->cin - 1)) {
            pw_columns(a, a->filter, a->cin, n, col, col, pixels, in_grad);
            n = 0;
        }
    }
    for (i = 0; part != NULL && i < part->count; i += 4) {
        int32_t ch[4], j;
        n = tte_min32(4, part->count - i);
        for (j = 0; j < n; j++) {
            col[j] = i + j;
            ch[j] = part->channels[i + j];
        }
        pw_columns(a, part->sram, part->count, n, col, ch, pixels, in_grad);
    }
}

void tte_conv2d_grad_input_s8_f32(const tte_conv_geom *geom, const float *w_scale, const tte_dims *grad_dims,
                                  const float *grad, const tte_dims *filter_dims, const int8_t *filter,
                                  const tte_weight_part *part, const tte_dims *in_dims, float *in_grad)
{
    const grad_args a = {geom, w_scale, grad, filter, part, grad_dims->h, grad_dims->w, grad_dims->c,
                         filter_dims->h, filter_dims->w, in_dims->c};
    const int32_t four = part == NULL ? a.cin & ~3 : 0;
    int32_t y, x, i;
    if (a.kh == 1 && a.kw == 1 && geom->stride_h == 1 && geom->stride_w == 1 && geom->pad_top == 0 &&
        geom->pad_left == 0 && a.oh == in_dims->h && a.ow == in_dims->w) {
        pw_grad_input(&a, in_dims->h * in_dims->w, in_grad);
        return;
    }
    for (y = 0; y < in_dims->h; y++) {
        for (x = 0; x < in_dims->w; x++) {
            float *d = in_grad + (y * in_dims->w + x) * a.cin;
            for (i = 0; i < four; i += 4) {
                conv_grad4(&a, y, x, i, d + i);
            }
            for (i = four; i < a.cin; i++) {
                d[i] = conv_grad1(&a, y, x, i);
            }
        }
    }
}

/* Depthwise, one input channel c: every multiplier m, weights from flash or SRAM. */
static float dw_grad1(const grad_args *a, int32_t y, int32_t x, int32_t c, int32_t mult)
{
    const int32_t s = a->part != NULL ? a->part->slot[c] : -1;
    const int8_t *base = s < 0 ? a->filter + c * mult : a->part->sram + s * mult;
    const int32_t stride = s < 0 ? a->cout : a->part->count * mult;
    float acc = 0.0f;
    int32_t ky, kx, m;
    for (ky = 0; ky < a->kh; ky++) {
        for (kx = 0; kx < a->kw; kx++) {
            const float *g = tap_grad(a, y, x, ky, kx, a->cout);
            const int8_t *w = base + (ky * a->kw + kx) * stride;
            if (g == NULL) {
                continue;
            }
            for (m = 0; m < mult; m++) {
                acc = acc + (g[c * mult + m] * a->w_scale[c * mult + m]) * (float)w[m];
            }
        }
    }
    return acc;
}

#ifndef TTE_DW_MAX_TAPS
#define TTE_DW_MAX_TAPS 49 /* kernel taps (7x7) of the depthwise fast path; larger kernels take the general one */
#endif

/* The taps of input pixel (y, x) that reach an output position, in (ky, kx) order: the offsets of that output's
 * gradient row and of the tap's weights. Returns their count. */
static int32_t dw_taps(const grad_args *a, int32_t y, int32_t x, int32_t *goff, int32_t *woff)
{
    int32_t ky, kx, n = 0;
    for (ky = 0; ky < a->kh; ky++) {
        for (kx = 0; kx < a->kw; kx++) {
            const float *g = tap_grad(a, y, x, ky, kx, a->cout);
            if (g != NULL) {
                goff[n] = (int32_t)(g - a->grad);
                woff[n++] = (ky * a->kw + kx) * a->cout;
            }
        }
    }
    return n;
}

/* Depthwise, multiplier 1, whole weight: channels c0 .. c0+3 in registers over the listed taps. */
static void dw_grad4(const grad_args *a, const int32_t *goff, const int32_t *woff, int32_t taps, int32_t c0,
                     float *d)
{
    const float *s = a->w_scale + c0, *grad = a->grad + c0;
    const int8_t *filter = a->filter + c0;
    float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
    int32_t t;
    for (t = 0; t < taps; t++) {
        const float *g = grad + goff[t];
        const int8_t *w = filter + woff[t];
        a0 = a0 + (g[0] * s[0]) * (float)w[0];
        a1 = a1 + (g[1] * s[1]) * (float)w[1];
        a2 = a2 + (g[2] * s[2]) * (float)w[2];
        a3 = a3 + (g[3] * s[3]) * (float)w[3];
    }
    d[0] = a0;
    d[1] = a1;
    d[2] = a2;
    d[3] = a3;
}

/* Depthwise, multiplier 1, whole weight: channels c0 .. c0+7 in registers over the listed taps, their scales
 * loaded once (grad and filter point at channel c0). */
static TTE_NOINLINE void dw_grad8(const float *grad, const float *s, const int8_t *filter, const int32_t *goff,
                                  const int32_t *woff, int32_t taps, float *d)
{
    const float s0 = s[0], s1 = s[1], s2 = s[2], s3 = s[3], s4 = s[4], s5 = s[5], s6 = s[6], s7 = s[7];
    float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f, a4 = 0.0f, a5 = 0.0f, a6 = 0.0f, a7 = 0.0f;
    int32_t t;
    for (t = 0; t < taps; t++) {
        const float *g = grad + goff[t];
        const int8_t *w = filter + woff[t];
        a0 = a0 + (g[0] * s0) * (float)w[0];
        a1 = a1 + (g[1] * s1) * (float)w[1];
        a2 = a2 + (g[2] * s2) * (float)w[2];
        a3 = a3 + (g[3] * s3) * (float)w[3];
        a4 = a4 + (g[4] * s4) * (float)w[4];
        a5 = a5 + (g[5] * s5) * (float)w[5];
        a6 = a6 + (g[6] * s6) * (float)w[6];
        a7 = a7 + (g[7] * s7) * (float)w[7];
    }
    d[0] = a0, d[1] = a1, d[2] = a2, d[3] = a3, d[4] = a4, d[5] = a5, d[6] = a6, d[7] = a7;
}

void tte_depthwise_conv2d_grad_input_s8_f32(const tte_conv_geom *geom, const float *w_scale,
                                            const tte_dims *grad_dims, const float *grad,
                                            const tte_dims *filter_dims, const int8_t *filter,
                                            const tte_weight_part *part, const tte_dims *in_dims, float *in_grad)
{
    const grad_args a = {geom, w_scale, grad, filter, part, grad_dims->h, grad_dims->w, grad_dims->c,
                         filter_dims->h, filter_dims->w, in_dims->c};
    const int32_t ch = in_dims->c, mult = geom->ch_mult;
    int32_t goff[TTE_DW_MAX_TAPS], woff[TTE_DW_MAX_TAPS];
    int32_t y, x, c;
    for (y = 0; y < in_dims->h; y++) {
        for (x = 0; x < in_dims->w; x++) {
            float *d = in_grad + (y * in_dims->w + x) * ch;
            c = 0;
            if (mult == 1 && part == NULL && a.kh * a.kw <= TTE_DW_MAX_TAPS) {
                const int32_t taps = dw_taps(&a, y, x, goff, woff);
                for (; c + 8 <= ch; c += 8) {
                    dw_grad8(grad + c, w_scale + c, filter + c, goff, woff, taps, d + c);
                }
                for (; c + 4 <= ch; c += 4) {
                    dw_grad4(&a, goff, woff, taps, c, d + c);
                }
            }
            for (; c < ch; c++) {
                d[c] = dw_grad1(&a, y, x, c, mult);
            }
        }
    }
}
