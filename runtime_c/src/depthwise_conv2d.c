/* Depthwise int8 convolution: the general kernel and the 3x3 fast path.
 *
 * With ch_mult == 1, channels go four at a time: the group's weights are widened to 16 bits once (they are the
 * same for every pixel) and each tap costs one input word, two SXTAB16 (widening and input offset) and four
 * 16x16 MACs. The group loop is outermost, so the four channels' requantization constants are set up once.
 * Remaining channels, other multipliers and kernels of more than TTE_DW_MAX_TAPS taps use a per-channel loop.
 */
#include "tte_conv.h"
#include "tte_fixedpoint.h"
#include "tte_simd.h"

#ifndef TTE_DW_MAX_TAPS
#define TTE_DW_MAX_TAPS 49 /* kernel taps (7x7) whose widened weights the 4-channel path keeps on the stack */
#endif

typedef struct {
    int32_t h, w, c, kh, kw, oh, ow, n, mult;
    int32_t stride_h, stride_w, pad_top, pad_left, x_off;
    const int8_t *in, *filter;
    const int32_t *bias;
    const tte_requant *quant;
    tte_out_stage out;
} dw_args;

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

/* The weights of tap t for channels [c, c + 4): with DSP as two words (channels c, c+2 and c+1, c+3 as
 * halfwords), otherwise as four ints. */
typedef struct {
#if TTE_HAVE_DSP
    uint32_t lo, hi;
#else
    int32_t w[4];
#endif
} dw_tap;

static void widen_taps(const dw_args *a, int32_t c, dw_tap *taps)
{
    int32_t t;
    for (t = 0; t < a->kh * a->kw; t++) {
        const int8_t *w = a->filter + t * a->c + c;
#if TTE_HAVE_DSP
        const uint32_t v = tte_read_s8x4(w);
        taps[t].lo = tte_sxtb16(v);
        taps[t].hi = tte_sxtb16_ror8(v);
#else
        taps[t].w[0] = w[0];
        taps[t].w[1] = w[1];
        taps[t].w[2] = w[2];
        taps[t].w[3] = w[3];
#endif
    }
}

typedef struct {
    int32_t a0, a1, a2, a3;
} acc4;

/* One tap of four adjacent channels: acc[j] += (x[j] + x_off) * w[j]. */
static TTE_ALWAYS_INLINE void tap4(const int8_t *x, const dw_tap *t, uint32_t xo, int32_t x_off, acc4 *acc)
{
#if TTE_HAVE_DSP
    const uint32_t xv = tte_read_s8x4(x);
    const uint32_t xl = tte_sxtab16(xo, xv), xh = tte_sxtab16_ror8(xo, xv);
    (void)x_off;
    acc->a0 = tte_smlabb(xl, t->lo, acc->a0);
    acc->a2 = tte_smlatt(xl, t->lo, acc->a2);
    acc->a1 = tte_smlabb(xh, t->hi, acc->a1);
    acc->a3 = tte_smlatt(xh, t->hi, acc->a3);
#else
    (void)xo;
    acc->a0 += (x[0] + x_off) * t->w[0];
    acc->a1 += (x[1] + x_off) * t->w[1];
    acc->a2 += (x[2] + x_off) * t->w[2];
    acc->a3 += (x[3] + x_off) * t->w[3];
#endif
}

/* Channels [c, c + 4) of every output pixel (ch_mult == 1). k3: the kernel is 3x3 (interior taps unrolled). */
static TTE_ALWAYS_INLINE void dw_group4(const dw_args *args, int8_t *out, int32_t c, int fast, int k3)
{
    const dw_args a = *args;
    const tte_out_stage o = a.out;
    const int32_t kh = k3 ? 3 : a.kh, kw = k3 ? 3 : a.kw, cs = a.c, row = a.w * a.c;
    const tte_channel_rq rq0 = channel_rq(a.quant, c), rq1 = channel_rq(a.quant, c + 1);
    const tte_channel_rq rq2 = channel_rq(a.quant, c + 2), rq3 = channel_rq(a.quant, c + 3);
    const int32_t b0 = a.bias ? a.bias[c] : 0, b1 = a.bias ? a.bias[c + 1] : 0;
    const int32_t b2 = a.bias ? a.bias[c + 2] : 0, b3 = a.bias ? a.bias[c + 3] : 0;
    const uint32_t xo = (uint32_t)(a.x_off & 0xFFFF) * 0x00010001u;
    dw_tap taps[TTE_DW_MAX_TAPS];
    int32_t n, oy, ox, ky, kx;
    widen_taps(&a, c, taps);
    for (n = 0; n < a.n; n++) {
        for (oy = 0; oy < a.oh; oy++) {
            const int32_t iy0 = oy * a.stride_h - a.pad_top;
            const int32_t ky_start = max32(0, -iy0), ky_end = min32(kh, a.h - iy0);
            const int rows_inside = ky_start == 0 && ky_end == kh;
            int8_t *dst = out + ((n * a.oh + oy) * a.ow) * cs + c;
            int32_t ix0 = -a.pad_left;
            for (ox = 0; ox < a.ow; ox++, ix0 += a.stride_w, dst += cs) {
                acc4 acc = {0, 0, 0, 0};
                if (rows_inside && ix0 >= 0 && ix0 + kw <= a.w) {
                    const int8_t *x = a.in + (((n * a.h + iy0) * a.w + ix0) * cs + c);
                    const dw_tap *t = taps;
                    for (ky = 0; ky < kh; ky++, x += row) {
                        if (k3) {
                            tap4(x, t, xo, a.x_off, &acc);
                            tap4(x + cs, t + 1, xo, a.x_off, &acc);
                            tap4(x + 2 * cs, t + 2, xo, a.x_off, &acc);
                            t += 3;
                        } else {
                            for (kx = 0; kx < kw; kx++, t++) {
                                tap4(x + kx * cs, t, xo, a.x_off, &acc);
                            }
                        }
                    }
                } else {
                    const int32_t kx_start = max32(0, -ix0), kx_end = min32(kw, a.w - ix0);
                    for (ky = ky_start; ky < ky_end; ky++) {
                        const int8_t *x = a.in + (((n * a.h + iy0 + ky) * a.w + ix0 + kx_start) * cs + c);
                        for (kx = kx_start; kx < kx_end; kx++, x += cs) {
                            tap4(x, &taps[ky * kw + kx], xo, a.x_off, &acc);
                        }
                    }
                }
                dst[0] = tte_requant_out(&rq0, tte_wrap_add(acc.a0, b0), &o, fast);
                dst[1] = tte_requant_out(&rq1, tte_wrap_add(acc.a1, b1), &o, fast);
                dst[2] = tte_requant_out(&rq2, tte_wrap_add(acc.a2, b2), &o, fast);
                dst[3] = tte_requant_out(&rq3, tte_wrap_add(acc.a3, b3), &o, fast);
            }
        }
    }
}

static void dw_group4_fast(const dw_args *a, int8_t *out, int32_t c)
{
    dw_group4(a, out, c, 1, 0);
}

static void dw_group4_general(const dw_args *a, int8_t *out, int32_t c)
{
    dw_group4(a, out, c, 0, 0);
}

static void dw_group4_3x3_fast(const dw_args *a, int8_t *out, int32_t c)
{
    dw_group4(a, out, c, 1, 1);
}

static void dw_group4_3x3_general(const dw_args *a, int8_t *out, int32_t c)
{
    dw_group4(a, out, c, 0, 1);
}

/* Output channels of input channels [c_begin, c_end), any multiplier: oc = ic * mult + m reads channel ic. */
static void dw_channels(const dw_args *args, int8_t *out, int32_t c_begin, int32_t c_end)
{
    const dw_args a = *args;
    const tte_out_stage o = a.out;
    const int32_t cout = a.c * a.mult;
    int32_t ic, m, n, oy, ox, ky, kx;
    for (ic = c_begin; ic < c_end; ic++) {
        for (m = 0; m < a.mult; m++) {
            const int32_t oc = ic * a.mult + m;
            const tte_channel_rq rq = channel_rq(a.quant, oc);
            const int32_t b = a.bias ? a.bias[oc] : 0;
            for (n = 0; n < a.n; n++) {
                for (oy = 0; oy < a.oh; oy++) {
                    const int32_t iy0 = oy * a.stride_h - a.pad_top;
                    const int32_t ky_start = max32(0, -iy0), ky_end = min32(a.kh, a.h - iy0);
                    for (ox = 0; ox < a.ow; ox++) {
                        const int32_t ix0 = ox * a.stride_w - a.pad_left;
                        const int32_t kx_start = max32(0, -ix0), kx_end = min32(a.kw, a.w - ix0);
                        int32_t acc = 0;
                        for (ky = ky_start; ky < ky_end; ky++) {
                            const int8_t *x = a.in + (((n * a.h + iy0 + ky) * a.w + ix0 + kx_start) * a.c + ic);
                            const int8_t *w = a.filter + ((ky * a.kw + kx_start) * cout + oc);
                            for (kx = kx_start; kx < kx_end; kx++, x += a.c, w += cout) {
                                acc += (*x + a.x_off) * *w;
                            }
                        }
                        out[((n * a.oh + oy) * a.ow + ox) * cout + oc] =
                            tte_requant_out(&rq, tte_wrap_add(b, acc), &o, 0);
                    }
                }
            }
        }
    }
}

static dw_args make_args(const tte_dw_conv_params *p, const tte_requant *quant, const tte_dims *in_dims,
                         const int8_t *in, const tte_dims *filter_dims, const int8_t *filter, const int32_t *bias,
                         const tte_dims *out_dims)
{
    dw_args a;
    a.h = in_dims->h;
    a.w = in_dims->w;
    a.c = in_dims->c;
    a.kh = filter_dims->h;
    a.kw = filter_dims->w;
    a.n = out_dims->n;
    a.oh = out_dims->h;
    a.ow = out_dims->w;
    a.mult = p->ch_mult;
    a.stride_h = p->stride_h;
    a.stride_w = p->stride_w;
    a.pad_top = p->pad_top;
    a.pad_left = p->pad_left;
    a.x_off = p->input_offset;
    a.in = in;
    a.filter = filter;
    a.bias = bias;
    a.quant = quant;
    a.out = tte_out_stage_make(p->output_offset, p->act_min, p->act_max);
    return a;
}

static void dw_run(const dw_args *a, int8_t *out, int k3)
{
    int32_t c = 0;
    if (a->mult == 1 && a->kh * a->kw <= TTE_DW_MAX_TAPS) {
        const int fast = tte_fast_ok(a->quant, a->c, &a->out);
        for (; c + 4 <= a->c; c += 4) {
            if (k3) {
                (fast ? dw_group4_3x3_fast : dw_group4_3x3_general)(a, out, c);
            } else {
                (fast ? dw_group4_fast : dw_group4_general)(a, out, c);
            }
        }
    }
    dw_channels(a, out, c, a->c);
}

void tte_depthwise_conv2d_s8(const tte_dw_conv_params *params, const tte_requant *quant, const tte_dims *in_dims,
                             const int8_t *in, const tte_dims *filter_dims, const int8_t *filter,
                             const int32_t *bias, const tte_dims *out_dims, int8_t *out)
{
    const dw_args a = make_args(params, quant, in_dims, in, filter_dims, filter, bias, out_dims);
    dw_run(&a, out, 0);
}

void tte_depthwise_conv2d_3x3_s8(const tte_dw_conv_params *params, const tte_requant *quant,
                                 const tte_dims *in_dims, const int8_t *in, const tte_dims *filter_dims,
                                 const int8_t *filter, const int32_t *bias, const tte_dims *out_dims, int8_t *out)
{
    const dw_args a = make_args(params, quant, in_dims, in, filter_dims, filter, bias, out_dims);
    dw_run(&a, out, a.kh == 3 && a.kw == 3);
}
