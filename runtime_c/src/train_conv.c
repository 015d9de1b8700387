/* Backward kernels of conv2d and depthwise_conv2d: input gradients and fused weight updates (tte_train.h).
 *
 * Input gradients are computed in gather form, one input pixel at a time: its C_in gradients start at 0.0f and
 * receive, for each kernel tap (kh, then kw) that reaches an output position and each output channel o in
 * ascending order, das * w. Per element that is exactly the reference's order (tte/train/grad_ops.py), while the
 * inner loop runs over contiguous weights.
 *
 * Weight updates are fused: for one kernel tap of one output channel, the gradients of up to TTE_TRAIN_CHUNK
 * input channels are summed over the output positions (raster order) in a stack buffer, then each element is
 * updated and its PRNG draw consumed, in row-major order of the written weights. Taps outside the image are
 * skipped: the reference adds their zero-padded products (+-0.0), which cannot change a sum that starts at +0.0.
 */
#include "tte_train.h"
#include "tte_train_math.h"
#include "tte_train_util.h"

#ifndef TTE_TRAIN_CHUNK
#define TTE_TRAIN_CHUNK 64 /* floats of partial weight gradients on the stack */
#endif

/* The output position a tap at padded coordinate p (input + pad) and kernel offset k reaches, or -1. */
static int32_t tap_output(int32_t p, int32_t k, int32_t stride, int32_t out_size)
{
    const int32_t t = p - k;
    if (t < 0 || t % stride != 0 || t / stride >= out_size) {
        return -1;
    }
    return t / stride;
}

static void zero(float *d, int32_t n)
{
    int32_t i;
    for (i = 0; i < n; i++) {
        d[i] = 0.0f;
    }
}

/* d[i] += das * w[o, kh, kw, i] for every input channel i, the trained ones read from the SRAM part. */
static void conv_row(float *d, float das, const int8_t *wf, const int8_t *ws, const tte_weight_part *part,
                     int32_t cin)
{
    int32_t i;
    if (part == NULL) {
        for (i = 0; i < cin; i++) {
            d[i] = d[i] + das * (float)wf[i];
        }
        return;
    }
    for (i = 0; i < cin; i++) {
        const int32_t s = part->slot[i];
        d[i] = d[i] + das * (float)(s < 0 ? wf[i] : ws[s]);
    }
}

void tte_conv2d_grad_input_s8_f32(const tte_conv_geom *geom, const float *w_scale, const tte_dims *grad_dims,
                                  const float *grad, const tte_dims *filter_dims, const int8_t *filter,
                                  const tte_weight_part *part, const tte_dims *in_dims, float *in_grad)
{
    const int32_t h = in_dims->h, w = in_dims->w, cin = in_dims->c, cout = grad_dims->c;
    const int32_t kh = filter_dims->h, kw = filter_dims->w, t_count = part != NULL ? part->count : 0;
    int32_t y, x, ky, kx, o;
    for (y = 0; y < h; y++) {
        for (x = 0; x < w; x++) {
            float *d = in_grad + (y * w + x) * cin;
            zero(d, cin);
            for (ky = 0; ky < kh; ky++) {
                const int32_t oy = tap_output(y + geom->pad_top, ky, geom->stride_h, grad_dims->h);
                if (oy < 0) {
                    continue;
                }
                for (kx = 0; kx < kw; kx++) {
                    const int32_t ox = tap_output(x + geom->pad_left, kx, geom->stride_w, grad_dims->w);
                    const float *g = grad + (oy * grad_dims->w + ox) * cout;
                    if (ox < 0) {
                        continue;
                    }
                    for (o = 0; o < cout; o++) {
                        const int32_t tap = (o * kh + ky) * kw + kx;
                        const int8_t *ws = part != NULL ? part->sram + tap * t_count : NULL;
                        conv_row(d, g[o] * w_scale[o], filter + tap * cin, ws, part, cin);
                    }
                }
            }
        }
    }
}

void tte_depthwise_conv2d_grad_input_s8_f32(const tte_conv_geom *geom, const float *w_scale,
                                            const tte_dims *grad_dims, const float *grad,
                                            const tte_dims *filter_dims, const int8_t *filter,
                                            const tte_weight_part *part, const tte_dims *in_dims, float *in_grad)
{
    const int32_t h = in_dims->h, w = in_dims->w, c_in = in_dims->c, mult = geom->ch_mult;
    const int32_t cm = c_in * mult, kh = filter_dims->h, kw = filter_dims->w;
    int32_t y, x, ky, kx, c, m;
    for (y = 0; y < h; y++) {
        for (x = 0; x < w; x++) {
            float *d = in_grad + (y * w + x) * c_in;
            zero(d, c_in);
            for (ky = 0; ky < kh; ky++) {
                const int32_t oy = tap_output(y + geom->pad_top, ky, geom->stride_h, grad_dims->h);
                if (oy < 0) {
                    continue;
                }
                for (kx = 0; kx < kw; kx++) {
                    const int32_t ox = tap_output(x + geom->pad_left, kx, geom->stride_w, grad_dims->w);
                    const float *g = grad + (oy * grad_dims->w + ox) * cm;
                    const int8_t *wt = filter + (ky * kw + kx) * cm;
                    if (ox < 0) {
                        continue;
                    }
                    for (c = 0; c < c_in; c++) {
                        const int32_t s = part != NULL ? part->slot[c] : -1;
                        const int8_t *wc = s < 0 ? wt + c * mult
                                                 : part->sram + ((ky * kw + kx) * part->count + s) * mult;
                        for (m = 0; m < mult; m++) {
                            d[c] = d[c] + (g[c * mult + m] * w_scale[c * mult + m]) * (float)wc[m];
                        }
                    }
                }
            }
        }
    }
}

/* The output positions one kernel tap (ky, kx) reads inside the image: oy in [oy0, oy1), ox in [ox0, ox1). */
typedef struct {
    int32_t oy0, oy1, ox0, ox1;
} tap_range;

/* First output index whose input coordinate o * stride - pad + k is >= 0, and the end of those < size. */
static void axis_range(int32_t k, int32_t stride, int32_t pad, int32_t size, int32_t out_size, int32_t *lo,
                       int32_t *hi)
{
    const int32_t first = pad - k; /* o * stride >= pad - k */
    const int32_t last = size - 1 + pad - k; /* o * stride <= size - 1 + pad - k */
    *lo = first <= 0 ? 0 : (first + stride - 1) / stride;
    *hi = last < 0 ? 0 : tte_min32(out_size, last / stride + 1);
    if (*hi < *lo) {
        *hi = *lo;
    }
}

static tap_range tap_positions(const tte_conv_geom *geom, const tte_dims *in_dims, const tte_dims *grad_dims,
                               int32_t ky, int32_t kx)
{
    tap_range r;
    axis_range(ky, geom->stride_h, geom->pad_top, in_dims->h, grad_dims->h, &r.oy0, &r.oy1);
    axis_range(kx, geom->stride_w, geom->pad_left, in_dims->w, grad_dims->w, &r.ox0, &r.ox1);
    return r;
}

/* Conv: acc[j] = sum over the tap's output positions p of grad[p, o] * (float)(x[tap of p, t0 + j] + x_off). */
static void conv_tap_sums(const tte_conv_geom *geom, const tte_dims *in_dims, const tte_dims *grad_dims,
                          int32_t ky, int32_t kx, const int8_t *in, int32_t x_off, const float *grad, int32_t o,
                          int32_t t0, int32_t len, float *acc)
{
    const tap_range r = tap_positions(geom, in_dims, grad_dims, ky, kx);
    int32_t oy, ox, j;
    zero(acc, len);
    for (oy = r.oy0; oy < r.oy1; oy++) {
        const int32_t iy = oy * geom->stride_h - geom->pad_top + ky;
        for (ox = r.ox0; ox < r.ox1; ox++) {
            const int32_t ix = ox * geom->stride_w - geom->pad_left + kx;
            const int8_t *x = in + (iy * in_dims->w + ix) * in_dims->c + t0;
            const float g = grad[(oy * grad_dims->w + ox) * grad_dims->c + o];
            for (j = 0; j < len; j++) {
                acc[j] = acc[j] + g * (float)(x[j] + x_off);
            }
        }
    }
}

/* Depthwise: acc[j] = sum over the tap's output positions p of grad[p, cols[j]] * (float)(x[tap of p, xcol[j]]
 * + x_off). */
static void dw_tap_sums(const tte_conv_geom *geom, const tte_dims *in_dims, const tte_dims *grad_dims,
                        int32_t ky, int32_t kx, const int8_t *in, int32_t x_off, const float *grad,
                        const int32_t *cols, const int32_t *xcol, int32_t len, float *acc)
{
    const tap_range r = tap_positions(geom, in_dims, grad_dims, ky, kx);
    int32_t oy, ox, j;
    zero(acc, len);
    for (oy = r.oy0; oy < r.oy1; oy++) {
        const int32_t iy = oy * geom->stride_h - geom->pad_top + ky;
        for (ox = r.ox0; ox < r.ox1; ox++) {
            const int32_t ix = ox * geom->stride_w - geom->pad_left + kx;
            const int8_t *x = in + (iy * in_dims->w + ix) * in_dims->c;
            const float *g = grad + (oy * grad_dims->w + ox) * grad_dims->c;
            for (j = 0; j < len; j++) {
                acc[j] = acc[j] + g[cols[j]] * (float)(x[xcol[j]] + x_off);
            }
        }
    }
}

void tte_conv2d_update_weight_s8_f32(const tte_update_params *params, const tte_conv_geom *geom,
                                     const float *factor, const float *lr, const tte_dims *in_dims,
                                     const int8_t *in, const tte_dims *grad_dims, const float *grad,
                                     const int16_t *channels, const tte_dims *filter_dims, uint32_t *rng,
                                     int8_t *filter)
{
    const int32_t t_count = in_dims->c, wc = filter_dims->c, kh = filter_dims->h, kw = filter_dims->w;
    const int dense = wc == t_count;
    const float rate = *lr;
    float acc[TTE_TRAIN_CHUNK];
    int32_t o, ky, kx, t0, j;
    for (o = 0; o < grad_dims->c; o++) {
        for (ky = 0; ky < kh; ky++) {
            for (kx = 0; kx < kw; kx++) {
                int8_t *wrow = filter + ((o * kh + ky) * kw + kx) * wc;
                for (t0 = 0; t0 < t_count; t0 += TTE_TRAIN_CHUNK) {
                    const int32_t len = tte_min32(TTE_TRAIN_CHUNK, t_count - t0);
                    conv_tap_sums(geom, in_dims, grad_dims, ky, kx, in, params->input_offset, grad, o, t0, len,
                                  acc);
                    for (j = 0; j < len; j++) {
                        int8_t *q = wrow + (dense ? t0 + j : channels[t0 + j]);
                        *q = tte_qas_update_s8(*q, acc[j], rate, factor[o], rng);
                    }
                }
            }
        }
    }
}

void tte_depthwise_conv2d_update_weight_s8_f32(const tte_update_params *params, const tte_conv_geom *geom,
                                               const float *factor, const float *lr, const tte_dims *in_dims,
                                               const int8_t *in, const tte_dims *grad_dims, const float *grad,
                                               const int16_t *channels, const tte_dims *filter_dims,
                                               uint32_t *rng, int8_t *filter)
{
    const int32_t mult = geom->ch_mult, written = in_dims->c * mult, wc = filter_dims->c;
    const int32_t kh = filter_dims->h, kw = filter_dims->w;
    const int dense = wc == written;
    const float rate = *lr;
    float acc[TTE_TRAIN_CHUNK];
    int32_t cols[TTE_TRAIN_CHUNK], xcol[TTE_TRAIN_CHUNK];
    int32_t ky, kx, j0, j;
    for (ky = 0; ky < kh; ky++) {
        for (kx = 0; kx < kw; kx++) {
            int8_t *wrow = filter + (ky * kw + kx) * wc;
            for (j0 = 0; j0 < written; j0 += TTE_TRAIN_CHUNK) {
                const int32_t len = tte_min32(TTE_TRAIN_CHUNK, written - j0);
                for (j = 0; j < len; j++) { /* column j0 + j = t M + m is output channel channels[t] M + m */
                    xcol[j] = (j0 + j) / mult;
                    cols[j] = channels[xcol[j]] * mult + (j0 + j) % mult;
                }
                dw_tap_sums(geom, in_dims, grad_dims, ky, kx, in, params->input_offset, grad, cols, xcol, len,
                            acc);
                for (j = 0; j < len; j++) {
                    int8_t *q = wrow + (dense ? j0 + j : cols[j]);
                    *q = tte_qas_update_s8(*q, acc[j], rate, factor[cols[j]], rng);
                }
            }
        }
    }
}
