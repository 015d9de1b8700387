/* Depthwise convolution and its input gradient in place (tte_depthwise_inplace.h): one channel at a time, the
 * channel's input plane is copied to the scratch buffer and its output written over the input's positions.
 *
 * Forward: the plane is copied with its padding, filled with the input zero point (a tap there adds
 * (zp + x_off) * w = 0, exactly what skipping it adds), so every window is whole and a window row's taps are
 * adjacent bytes. The input offset folds into one constant per channel (x_off * sum of the weights; exact integer
 * arithmetic) and, with DSP, a word gives four taps: SXTB16 splits bytes 0, 2 and 1, 3 into halfword pairs that
 * SMLAD multiplies with the weights packed the same way (zeros past the kernel width; the word may reach 3 bytes
 * past the plane, hence the scratch's 4 spare bytes).
 * Input gradient: per input pixel, the taps that reach an output position, in the out-of-place kernel's order.
 */
#include "tte_depthwise_inplace.h"
#include "tte_fixedpoint.h"
#include "tte_simd.h"
#include "tte_train_util.h"

/* The padded plane of one channel and that channel's weights. */
typedef struct {
    int32_t h, w, ph, pw, oh, ow, kh, kw, sh, sw, pt, pl, x_off, groups;
    int32_t start; /* bias + x_off * (sum of the weights), wrapping: the accumulator before the products */
    int32_t wk[TTE_DW_INPLACE_MAX_TAPS];
#if TTE_HAVE_DSP
    uint32_t even[TTE_DW_INPLACE_MAX_GROUPS], odd[TTE_DW_INPLACE_MAX_GROUPS]; /* per row and 4-tap group */
    uint32_t even1[3], odd1[3]; /* 3x3: a row's weights for the window one byte to the right of the word */
#endif
} dw_chan;

/* Kernel shapes with an instance of their own: the loops over a window are unrolled. */
enum { SHAPE_ANY, SHAPE_3X3, SHAPE_NARROW /* 5 to 8 taps wide: two words per row */ };

/* The weights of channel c (ch_mult 1): from the SRAM part when the channel is trained, else from flash. */
static const int8_t *chan_filter(const int8_t *filter, const tte_weight_part *part, int32_t c, int32_t channels,
                                 int32_t *stride)
{
    if (part != NULL && part->slot[c] >= 0) {
        *stride = part->count;
        return part->sram + part->slot[c];
    }
    *stride = channels;
    return filter + c;
}

#if TTE_HAVE_DSP
/* Weight (ky, kx) as a halfword, 0 past the kernel width. */
static uint32_t tap16(const dw_chan *k, int32_t ky, int32_t kx)
{
    return kx < k->kw ? (uint32_t)k->wk[ky * k->kw + kx] & 0xFFFFu : 0u;
}
#endif

static void chan_weights(dw_chan *k, const int8_t *w, int32_t stride, int32_t bias)
{
    int32_t t, sum = 0;
    for (t = 0; t < k->kh * k->kw; t++) {
        k->wk[t] = w[t * stride];
        sum += k->wk[t];
    }
    k->start = tte_wrap_add(bias, sum * k->x_off);
#if TTE_HAVE_DSP
    {
        int32_t ky, g;
        for (ky = 0, t = 0; ky < k->kh; ky++) {
            for (g = 0; g < k->groups; g++, t++) {
                k->even[t] = tap16(k, ky, 4 * g) | (tap16(k, ky, 4 * g + 2) << 16);
                k->odd[t] = tap16(k, ky, 4 * g + 1) | (tap16(k, ky, 4 * g + 3) << 16);
            }
        }
        for (ky = 0; ky < 3 && k->kh == 3 && k->kw == 3; ky++) { /* bytes 1..3 of the word: taps 0..2 */
            k->even1[ky] = tap16(k, ky, 1) << 16;
            k->odd1[ky] = tap16(k, ky, 0) | (tap16(k, ky, 2) << 16);
        }
    }
#endif
}

/* Channel c of `inout` (NHWC, `channels` wide) into the padded plane, the padding = the input zero point. */
static void copy_plane(const dw_chan *k, const int8_t *inout, int32_t channels, int32_t c, int8_t *plane)
{
    const int8_t zp = (int8_t)(-k->x_off);
    int32_t y, x;
    for (y = 0; y < k->ph; y++, plane += k->pw) {
        const int32_t iy = y - k->pt;
        x = 0;
        if (iy >= 0 && iy < k->h) {
            const int8_t *src = inout + iy * k->w * channels + c;
            for (; x < k->pl; x++) {
                plane[x] = zp;
            }
            for (; x < k->pl + k->w; x++, src += channels) {
                plane[x] = *src;
            }
        }
        for (; x < k->pw; x++) {
            plane[x] = zp;
        }
    }
}

#if TTE_HAVE_DSP
/* acc + the four taps of a word at x: bytes 0, 2 with `even` and 1, 3 with `odd`. */
static TTE_ALWAYS_INLINE int32_t word_taps(const int8_t *x, uint32_t even, uint32_t odd, int32_t acc)
{
    const uint32_t v = tte_read_s8x4(x);
    acc = tte_smlad(tte_sxtb16(v), even, acc);
    return tte_smlad(tte_sxtb16_ror8(v), odd, acc);
}
#endif

/* The accumulator of the window at x (its top-left tap in the plane): k->start + the sum of x * w. */
static TTE_ALWAYS_INLINE int32_t window_acc(const dw_chan *k, const int8_t *x, int shape)
{
    const int32_t kh = shape == SHAPE_3X3 ? 3 : k->kh;
    int32_t acc = k->start, ky;
#if TTE_HAVE_DSP
    int32_t t = 0, g;
    for (ky = 0; ky < kh; ky++, x += k->pw) {
        if (shape == SHAPE_3X3) {
            acc = word_taps(x, k->even[ky], k->odd[ky], acc);
        } else if (shape == SHAPE_NARROW) {
            acc = word_taps(x, k->even[t], k->odd[t], acc);
            acc = word_taps(x + 4, k->even[t + 1], k->odd[t + 1], acc);
            t += 2;
        } else {
            for (g = 0; g < k->groups; g++, t++) {
                acc = word_taps(x + 4 * g, k->even[t], k->odd[t], acc);
            }
        }
    }
#else
    const int32_t kw = shape == SHAPE_3X3 ? 3 : k->kw;
    const int32_t *wk = k->wk;
    int32_t kx;
    for (ky = 0; ky < kh; ky++, x += k->pw, wk += kw) {
        for (kx = 0; kx < kw; kx++) {
            acc += x[kx] * wk[kx];
        }
    }
#endif
    return acc;
}

#if TTE_HAVE_DSP
/* The 3x3 windows at x and x + 1 (stride 1): each row's word serves both, its halfword pairs multiplied with the
 * second window's weights packed one byte over (even1, odd1). */
static TTE_ALWAYS_INLINE void window_pair_3x3(const dw_chan *k, const int8_t *x, int32_t *acc0, int32_t *acc1)
{
    int32_t s0 = k->start, s1 = k->start, ky;
    for (ky = 0; ky < 3; ky++, x += k->pw) {
        const uint32_t v = tte_read_s8x4(x);
        const uint32_t e = tte_sxtb16(v), o = tte_sxtb16_ror8(v);
        s0 = tte_smlad(e, k->even[ky], s0);
        s0 = tte_smlad(o, k->odd[ky], s0);
        s1 = tte_smlad(e, k->even1[ky], s1);
        s1 = tte_smlad(o, k->odd1[ky], s1);
    }
    *acc0 = s0;
    *acc1 = s1;
}
#endif

typedef struct {
    tte_channel_rq rq;
    tte_out_stage o;
} chan_out;

/* Output i from accumulator acc (with its mask bit when masked). */
static TTE_ALWAYS_INLINE void chan_out1(const chan_out *co, int32_t acc, int8_t *out, uint8_t *mask, int32_t i,
                                        int masked, int fast)
{
    if (masked) {
        tte_out_mask_at(out, mask, i, tte_channel_rq_apply(&co->rq, acc), &co->o);
    } else {
        out[i] = tte_requant_out(&co->rq, acc, &co->o, fast);
    }
}

/* Every output pixel of one channel, from its plane, written at (p * channels + c); with a mask its bits too.
 * masked, fast (tte_fast_ok), shape: constants of each instance. */
static TTE_ALWAYS_INLINE void chan_forward(const dw_chan *kp, const chan_out *cop, const int8_t *plane,
                                           int32_t channels, int32_t c, int8_t *out, uint8_t *mask, int masked,
                                           int fast, int shape)
{
    /* Local copies: the int8 stores through `out` may alias anything a pointer reaches, not these. */
    const dw_chan kc = *kp;
    const chan_out co = *cop;
    const dw_chan *k = &kc;
    int32_t oy, ox, i = c;
    for (oy = 0; oy < k->oh; oy++) {
        const int8_t *x = plane + oy * k->sh * k->pw;
        ox = 0;
#if TTE_HAVE_DSP
        if (shape == SHAPE_3X3 && k->sw == 1) { /* two windows a step */
            for (; ox + 2 <= k->ow; ox += 2, x += 2, i += 2 * channels) {
                int32_t acc0, acc1;
                window_pair_3x3(k, x, &acc0, &acc1);
                chan_out1(&co, acc0, out, mask, i, masked, fast);
                chan_out1(&co, acc1, out, mask, i + channels, masked, fast);
            }
        }
#endif
        for (; ox < k->ow; ox++, x += k->sw, i += channels) {
            chan_out1(&co, window_acc(k, x, shape), out, mask, i, masked, fast);
        }
    }
}

typedef void (*chan_fn)(const dw_chan *k, const chan_out *co, const int8_t *plane, int32_t channels, int32_t c,
                        int8_t *out, uint8_t *mask);

/* The instances: (mask, fast requantization) x kernel shape. */
#define TTE_DW_INSTANCE(name, masked, fast, shape)                                                              \
    static void name(const dw_chan *k, const chan_out *co, const int8_t *plane, int32_t channels, int32_t c,     \
                     int8_t *out, uint8_t *mask)                                                                 \
    {                                                                                                            \
        chan_forward(k, co, plane, channels, c, out, mask, masked, fast, shape);                                 \
    }
TTE_DW_INSTANCE(fwd_fast_any, 0, 1, SHAPE_ANY)
TTE_DW_INSTANCE(fwd_fast_3x3, 0, 1, SHAPE_3X3)
TTE_DW_INSTANCE(fwd_fast_narrow, 0, 1, SHAPE_NARROW)
TTE_DW_INSTANCE(fwd_any, 0, 0, SHAPE_ANY)
TTE_DW_INSTANCE(fwd_3x3, 0, 0, SHAPE_3X3)
TTE_DW_INSTANCE(fwd_narrow, 0, 0, SHAPE_NARROW)
TTE_DW_INSTANCE(mask_any, 1, 0, SHAPE_ANY)
TTE_DW_INSTANCE(mask_3x3, 1, 0, SHAPE_3X3)
TTE_DW_INSTANCE(mask_narrow, 1, 0, SHAPE_NARROW)

static const chan_fn INSTANCES[3][3] = {
    {fwd_any, fwd_3x3, fwd_narrow}, {fwd_fast_any, fwd_fast_3x3, fwd_fast_narrow}, {mask_any, mask_3x3, mask_narrow}};

static void forward_inplace(const tte_dw_conv_params *p, const tte_requant *quant, int8_t *scratch,
                            const tte_dims *in_dims, const tte_dims *filter_dims, const int8_t *filter,
                            const tte_weight_part *part, const int32_t *bias, const tte_dims *out_dims,
                            int8_t *inout, uint8_t *mask)
{
    const int32_t channels = in_dims->c;
    chan_out co;
    dw_chan k;
    chan_fn run;
    int32_t c, shape;
    k.h = in_dims->h;
    k.w = in_dims->w;
    k.oh = out_dims->h;
    k.ow = out_dims->w;
    k.kh = filter_dims->h;
    k.kw = filter_dims->w;
    k.sh = p->stride_h;
    k.sw = p->stride_w;
    k.pt = p->pad_top;
    k.pl = p->pad_left;
    k.ph = tte_max32(k.h + k.pt, (k.oh - 1) * k.sh + k.kh);
    k.pw = tte_max32(k.w + k.pl, (k.ow - 1) * k.sw + k.kw);
    k.x_off = p->input_offset;
    k.groups = (k.kw + 3) / 4;
    shape = k.kh == 3 && k.kw == 3 ? SHAPE_3X3 : (k.groups == 2 ? SHAPE_NARROW : SHAPE_ANY);
    co.o = tte_out_stage_make(p->output_offset, p->act_min, p->act_max);
    run = INSTANCES[mask != NULL ? 2 : tte_fast_ok(quant, channels, &co.o)][shape];
    if (mask != NULL) {
        tte_mask_clear(mask, k.oh * k.ow * channels);
    }
    for (c = 0; c < channels; c++) {
        int32_t stride;
        const int8_t *w = chan_filter(filter, part, c, channels, &stride);
        copy_plane(&k, inout, channels, c, scratch);
        chan_weights(&k, w, stride, bias != NULL ? bias[c] : 0);
        co.rq = tte_rq_of(quant, c);
        run(&k, &co, scratch, channels, c, inout, mask);
    }
}

void tte_depthwise_conv2d_inplace_s8(const tte_dw_conv_params *params, const tte_requant *quant, int8_t *scratch,
                                     const tte_dims *in_dims, const tte_dims *filter_dims, const int8_t *filter,
                                     const int32_t *bias, const tte_dims *out_dims, int8_t *inout)
{
    forward_inplace(params, quant, scratch, in_dims, filter_dims, filter, NULL, bias, out_dims, inout, NULL);
}

void tte_depthwise_conv2d_mask_inplace_s8(const tte_dw_conv_params *params, const tte_requant *quant,
                                          int8_t *scratch, const tte_dims *in_dims, const tte_dims *filter_dims,
                                          const int8_t *filter, const tte_weight_part *part, const int32_t *bias,
                                          const tte_dims *out_dims, int8_t *inout, uint8_t *mask)
{
    forward_inplace(params, quant, scratch, in_dims, filter_dims, filter, part, bias, out_dims, inout, mask);
}

/* --- input gradient ------------------------------------------------------------------------------------------ */

/* The taps of one axis that reach an output position from input coordinate i (padded: p = i + pad): kernel
 * offsets j = first, first + stride, ... <= *last with (p - j) % stride == 0 and output (p - j) / stride in
 * [0, out_size). Returns the output position of `first`; *last < first when none. */
static int32_t axis_taps(int32_t p, int32_t k, int32_t stride, int32_t out_size, int32_t *first, int32_t *last)
{
    int32_t j = tte_max32(0, p - stride * (out_size - 1));
    if (j <= p) {
        j += (p - j) % stride;
    }
    *first = j;
    *last = tte_min32(k - 1, p);
    return (p - j) / stride;
}

/* The input gradient of one channel at pixel (y, x): the taps that reach an output position, (kh, kw) order. */
static float grad_taps(const tte_conv_geom *g, const float *das, const float *wk, const tte_dims *grad_dims,
                       int32_t kh, int32_t kw, int32_t y, int32_t x)
{
    int32_t ky0, ky1, kx0, kx1, ky, kx, oy, ox;
    const int32_t oy0 = axis_taps(y + g->pad_top, kh, g->stride_h, grad_dims->h, &ky0, &ky1);
    const int32_t ox0 = axis_taps(x + g->pad_left, kw, g->stride_w, grad_dims->w, &kx0, &kx1);
    float acc = 0.0f;
    for (ky = ky0, oy = oy0; ky <= ky1; ky += g->stride_h, oy--) {
        const float *d = das + oy * grad_dims->w, *wr = wk + ky * kw;
        for (kx = kx0, ox = ox0; kx <= kx1; kx += g->stride_w, ox--) {
            acc = acc + d[ox] * wr[kx];
        }
    }
    return acc;
}

/* 3x3, stride 1, a pixel whose nine taps all reach the output: r points at das[y + pad_top][x + pad_left]. */
static TTE_ALWAYS_INLINE float grad_3x3(const float *r, int32_t ow, const float *w)
{
    float acc = 0.0f;
    acc = acc + r[0] * w[0];
    acc = acc + r[-1] * w[1];
    acc = acc + r[-2] * w[2];
    r -= ow;
    acc = acc + r[0] * w[3];
    acc = acc + r[-1] * w[4];
    acc = acc + r[-2] * w[5];
    r -= ow;
    acc = acc + r[0] * w[6];
    acc = acc + r[-1] * w[7];
    return acc + r[-2] * w[8];
}

/* One channel's input gradient, rows of pixels; 3x3 stride-1 pixels inside take the unrolled sum. */
static void grad_channel(const tte_conv_geom *g, const float *das, const float *wk, const tte_dims *grad_dims,
                         const tte_dims *filter_dims, const tte_dims *in_dims, float *dst, int32_t channels)
{
    const int32_t kh = filter_dims->h, kw = filter_dims->w, oh = grad_dims->h, ow = grad_dims->w;
    const int k3 = kh == 3 && kw == 3 && g->stride_h == 1 && g->stride_w == 1;
    const int32_t x0 = tte_max32(0, 2 - g->pad_left), x1 = tte_min32(in_dims->w, ow - g->pad_left);
    float w9[9]; /* a local copy stays in registers: the stores through dst may alias wk, not it */
    int32_t y, x;
    for (x = 0; x < 9; x++) {
        w9[x] = k3 ? wk[x] : 0.0f;
    }
    for (y = 0; y < in_dims->h; y++) {
        const int32_t py = y + g->pad_top;
        const int rows = k3 && py >= 2 && py < oh;
        for (x = 0; x < in_dims->w; x++, dst += channels) {
            if (rows && x == x0 && x1 > x0) {
                const float *r = das + py * ow + x + g->pad_left;
                for (; x < x1; x++, r++, dst += channels) {
                    *dst = grad_3x3(r, ow, w9);
                }
                if (x == in_dims->w) {
                    break;
                }
            }
            *dst = grad_taps(g, das, wk, grad_dims, kh, kw, y, x);
        }
    }
}

void tte_depthwise_conv2d_grad_input_inplace_s8_f32(const tte_conv_geom *geom, const float *w_scale,
                                                    float *scratch, const tte_dims *grad_dims,
                                                    const tte_dims *filter_dims, const int8_t *filter,
                                                    const tte_weight_part *part, const tte_dims *in_dims,
                                                    float *inout)
{
    const int32_t channels = in_dims->c, taps = filter_dims->h * filter_dims->w;
    const int32_t out_pixels = grad_dims->h * grad_dims->w;
    float wk[TTE_DW_INPLACE_MAX_TAPS];
    int32_t c, q, t;
    for (c = 0; c < channels; c++) {
        int32_t stride;
        const int8_t *w = chan_filter(filter, part, c, channels, &stride);
        const float s = w_scale[c];
        for (q = 0; q < out_pixels; q++) { /* das, rounded as the out-of-place kernel rounds grad * w_scale */
            scratch[q] = inout[q * channels + c] * s;
        }
        for (t = 0; t < taps; t++) {
            wk[t] = (float)w[t * stride];
        }
        grad_channel(geom, scratch, wk, grad_dims, filter_dims, in_dims, inout + c, channels);
    }
}
