/* Depthwise int8 convolution: the general kernel, the 3x3 entry, and the four-channel groups of the train step's
 * mask kernel (tte_depthwise_fast.h: the same instances with a constant `mask` flag, which also write the clamp
 * mask bits).
 *
 * With ch_mult == 1, channels go four at a time (a last group of fewer overlaps the one before it when written
 * by the mask kernel; the plain kernel takes the rest one channel at a time): the group's weights are widened to
 * 16 bits once (they are the same for every pixel) and each tap costs one input word, two SXTAB16 (widening and
 * input offset) and four 16x16 MACs. The group loop is outermost, so the four channels' requantization
 * constants are set up once. 3x3 layers in the fast requantization go through the runs of depthwise_runs.c:
 * every pixel when tte_dw_runs_ok (windows cut by at most one row or column), else the windows inside the image.
 * Remaining channels, other multipliers and kernels of more than TTE_DW_MAX_TAPS taps use a per-channel loop.
 */
#include "tte_conv.h"
#include "tte_depthwise_fast.h"
#include "tte_train_util.h"

#ifndef TTE_DW_MAX_TAPS
#define TTE_DW_MAX_TAPS 49 /* kernel taps (7x7) whose widened weights the 4-channel path keeps on the stack */
#endif

/* Writes the output of requantized accumulator `acc` and returns its mask bit (the value before the clamp
 * inside [act_min, act_max]; with `fast` the clamp is [-128, 127], so the bit is whether SSAT kept it). */
static TTE_ALWAYS_INLINE uint32_t out_bit(const tte_channel_rq *rq, int32_t acc, const tte_out_stage *o, int fast,
                                          int8_t *y)
{
    int32_t v;
    if (fast) { /* |tte_mbqm_right2| < 2^30: adding the zero point cannot overflow */
        v = tte_mbqm_right2(acc, rq->multiplier, rq->fast_k, rq->fast_sh) + o->offset;
        *y = (int8_t)tte_sat8(v);
        return (uint32_t)(*y == v);
    }
    v = tte_channel_rq_apply(rq, acc);
    *y = tte_out_s8(v, o->offset, o->act_min, o->act_max);
    return (uint32_t)((v >= o->act_min - o->offset) & (v <= o->act_max - o->offset));
}

/* Channels [c, c + 4) of every output pixel (ch_mult == 1). k3: the kernel is 3x3 (interior taps unrolled);
 * mask: also write the mask bits. */
static TTE_ALWAYS_INLINE void dw_group4(const tte_dw_args *args, int8_t *out, int32_t c, int fast, int k3, int mask)
{
    const tte_dw_args a = *args;
    const tte_out_stage o = a.out;
    const int32_t kh = k3 ? 3 : a.kh, kw = k3 ? 3 : a.kw, cs = a.c, row = a.w * a.c;
    const tte_channel_rq rq0 = tte_rq_of(a.quant, c), rq1 = tte_rq_of(a.quant, c + 1);
    const tte_channel_rq rq2 = tte_rq_of(a.quant, c + 2), rq3 = tte_rq_of(a.quant, c + 3);
    const int32_t b0 = a.bias ? a.bias[c] : 0, b1 = a.bias ? a.bias[c + 1] : 0;
    const int32_t b2 = a.bias ? a.bias[c + 2] : 0, b3 = a.bias ? a.bias[c + 3] : 0;
    const uint32_t xo = (uint32_t)(a.x_off & 0xFFFF) * 0x00010001u;
    /* K x K runs for the windows inside the image (measured no faster than this loop with the mask) */
    const int runk = fast && !k3 && !mask && a.kh == a.kw && (a.kh == 5 || a.kh == 7);
    tte_dw_tap taps[TTE_DW_MAX_TAPS];
    tte_dw_run3 r3;
    int32_t n, oy, ox, ky, kx;
    tte_dw_widen_taps(&a, c, taps);
    if (fast && k3) {
        tte_dw_run3_make(&a, c, taps, &r3);
    } else if (runk) {
        tte_dw_runk_make(&a, c, taps, &r3);
    }
    for (n = 0; n < a.n; n++) {
        for (oy = 0; oy < a.oh; oy++) {
            const int32_t iy0 = oy * a.stride_h - a.pad_top;
            const int32_t ky_start = tte_max32(0, -iy0), ky_end = tte_min32(kh, a.h - iy0);
            const int rows_inside = ky_start == 0 && ky_end == kh;
            int8_t *dst = out + ((n * a.oh + oy) * a.ow) * cs + c;
            int32_t ix0 = -a.pad_left;
            for (ox = 0; ox < a.ow; ox++, ix0 += a.stride_w, dst += cs) {
                tte_dw_acc4 acc = {0, 0, 0, 0};
                if ((runk || (fast && k3)) && rows_inside && ix0 >= 0 && ix0 + kw <= a.w) { /* windows inside */
                    const int32_t count = tte_min32(a.ow - ox, (a.w - kw - ix0) / a.stride_w + 1);
                    const int8_t *x = a.in + (((n * a.h + iy0) * a.w + ix0) * cs + c);
                    if (runk) {
                        tte_dw_runk_plain(&r3, kw, x, dst, count);
                    } else if (mask) {
                        tte_dw_run3_mask(&r3, x, dst, count, (int32_t)(dst - out));
                    } else {
                        tte_dw_run3_plain(&r3, x, dst, count);
                    }
                    ox += count - 1;
                    ix0 += (count - 1) * a.stride_w;
                    dst += (count - 1) * cs;
                    continue;
                }
                if (rows_inside && ix0 >= 0 && ix0 + kw <= a.w) {
                    const int8_t *x = a.in + (((n * a.h + iy0) * a.w + ix0) * cs + c);
                    const tte_dw_tap *t = taps;
                    for (ky = 0; ky < kh; ky++, x += row) {
                        if (k3) {
                            tte_dw_tap4(x, t, xo, a.x_off, &acc);
                            tte_dw_tap4(x + cs, t + 1, xo, a.x_off, &acc);
                            tte_dw_tap4(x + 2 * cs, t + 2, xo, a.x_off, &acc);
                            t += 3;
                        } else {
                            for (kx = 0; kx < kw; kx++, t++) {
                                tte_dw_tap4(x + kx * cs, t, xo, a.x_off, &acc);
                            }
                        }
                    }
                } else {
                    const int32_t kx_start = tte_max32(0, -ix0), kx_end = tte_min32(kw, a.w - ix0);
                    for (ky = ky_start; ky < ky_end; ky++) {
                        const int8_t *x = a.in + (((n * a.h + iy0 + ky) * a.w + ix0 + kx_start) * cs + c);
                        for (kx = kx_start; kx < kx_end; kx++, x += cs) {
                            tte_dw_tap4(x, &taps[ky * kw + kx], xo, a.x_off, &acc);
                        }
                    }
                }
                if (mask) {
                    const uint32_t bits = out_bit(&rq0, tte_wrap_add(acc.a0, b0), &o, fast, dst) |
                                          (out_bit(&rq1, tte_wrap_add(acc.a1, b1), &o, fast, dst + 1) << 1) |
                                          (out_bit(&rq2, tte_wrap_add(acc.a2, b2), &o, fast, dst + 2) << 2) |
                                          (out_bit(&rq3, tte_wrap_add(acc.a3, b3), &o, fast, dst + 3) << 3);
                    tte_put_bits4(a.mask, (int32_t)(dst - out), bits);
                    continue;
                }
                dst[0] = tte_requant_out(&rq0, tte_wrap_add(acc.a0, b0), &o, fast);
                dst[1] = tte_requant_out(&rq1, tte_wrap_add(acc.a1, b1), &o, fast);
                dst[2] = tte_requant_out(&rq2, tte_wrap_add(acc.a2, b2), &o, fast);
                dst[3] = tte_requant_out(&rq3, tte_wrap_add(acc.a3, b3), &o, fast);
            }
        }
    }
}

typedef void (*dw_group_fn)(const tte_dw_args *a, int8_t *out, int32_t c);

#define DW_INSTANCE(name, fast, k3, mask)                                                                          \
    static void name(const tte_dw_args *a, int8_t *out, int32_t c)                                                     \
    {                                                                                                              \
        dw_group4(a, out, c, fast, k3, mask);                                                                      \
    }

DW_INSTANCE(dw_group4_fast, 1, 0, 0)
DW_INSTANCE(dw_group4_general, 0, 0, 0)
DW_INSTANCE(dw_group4_3x3_fast, 1, 1, 0)
DW_INSTANCE(dw_group4_3x3_general, 0, 1, 0)
DW_INSTANCE(dw_mask4_fast, 1, 0, 1)
DW_INSTANCE(dw_mask4_general, 0, 0, 1)
DW_INSTANCE(dw_mask4_3x3_fast, 1, 1, 1)
DW_INSTANCE(dw_mask4_3x3_general, 0, 1, 1)

static void dw_runs_plain(const tte_dw_args *a, int8_t *out, int32_t c)
{
    tte_dw_runs(a, out, c, 0);
}

static void dw_runs_mask(const tte_dw_args *a, int8_t *out, int32_t c)
{
    tte_dw_runs(a, out, c, 1);
}

/* The group instance for the layer: dw_runs for 3x3 layers of runs_ok in the fast requantization, otherwise
 * [fast][k3] without or with the mask. */
static dw_group_fn group_fn(const tte_dw_args *a, int k3, int mask)
{
    static const dw_group_fn fns[2][2][2] = {
        {{dw_group4_general, dw_group4_3x3_general}, {dw_group4_fast, dw_group4_3x3_fast}},
        {{dw_mask4_general, dw_mask4_3x3_general}, {dw_mask4_fast, dw_mask4_3x3_fast}}};
    if (k3 && tte_dw_runs_ok(a) && tte_fast_ok(a->quant, a->c, &a->out)) {
        return mask ? dw_runs_mask : dw_runs_plain;
    }
    return fns[mask][tte_fast_ok(a->quant, a->c, &a->out)][k3];
}

/* Output channels of input channels [c_begin, c_end), any multiplier: oc = ic * mult + m reads channel ic. */
static void dw_channels(const tte_dw_args *args, int8_t *out, int32_t c_begin, int32_t c_end)
{
    const tte_dw_args a = *args;
    const tte_out_stage o = a.out;
    const int32_t cout = a.c * a.mult;
    int32_t ic, m, n, oy, ox, ky, kx;
    for (ic = c_begin; ic < c_end; ic++) {
        for (m = 0; m < a.mult; m++) {
            const int32_t oc = ic * a.mult + m;
            const tte_channel_rq rq = tte_rq_of(a.quant, oc);
            const int32_t b = a.bias ? a.bias[oc] : 0;
            for (n = 0; n < a.n; n++) {
                for (oy = 0; oy < a.oh; oy++) {
                    const int32_t iy0 = oy * a.stride_h - a.pad_top;
                    const int32_t ky_start = tte_max32(0, -iy0), ky_end = tte_min32(a.kh, a.h - iy0);
                    for (ox = 0; ox < a.ow; ox++) {
                        const int32_t ix0 = ox * a.stride_w - a.pad_left;
                        const int32_t kx_start = tte_max32(0, -ix0), kx_end = tte_min32(a.kw, a.w - ix0);
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

static tte_dw_args make_args(const tte_dw_conv_params *p, const tte_requant *quant, const tte_dims *in_dims,
                         const int8_t *in, const tte_dims *filter_dims, const int8_t *filter, const int32_t *bias,
                         const tte_dims *out_dims)
{
    tte_dw_args a;
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
    a.mask = NULL;
    return a;
}

static void dw_run(const tte_dw_args *a, int8_t *out, int k3)
{
    int32_t c = 0;
    if (a->mult == 1 && a->kh * a->kw <= TTE_DW_MAX_TAPS) {
        const dw_group_fn fn = group_fn(a, k3, 0);
        for (; c + 4 <= a->c; c += 4) {
            fn(a, out, c);
        }
    }
    dw_channels(a, out, c, a->c);
}

void tte_depthwise_conv2d_s8(const tte_dw_conv_params *params, const tte_requant *quant, const tte_dims *in_dims,
                             const int8_t *in, const tte_dims *filter_dims, const int8_t *filter,
                             const int32_t *bias, const tte_dims *out_dims, int8_t *out)
{
    const tte_dw_args a = make_args(params, quant, in_dims, in, filter_dims, filter, bias, out_dims);
    dw_run(&a, out, 0);
}

void tte_depthwise_conv2d_3x3_s8(const tte_dw_conv_params *params, const tte_requant *quant,
                                 const tte_dims *in_dims, const int8_t *in, const tte_dims *filter_dims,
                                 const int8_t *filter, const int32_t *bias, const tte_dims *out_dims, int8_t *out)
{
    const tte_dw_args a = make_args(params, quant, in_dims, in, filter_dims, filter, bias, out_dims);
    dw_run(&a, out, a.kh == 3 && a.kw == 3);
}

int tte_depthwise_conv2d_mask_groups_s8(const tte_dw_conv_params *params, const tte_requant *quant,
                                        const tte_dims *in_dims, const int8_t *in, const tte_dims *filter_dims,
                                        const int8_t *filter, const int32_t *bias, const tte_dims *out_dims,
                                        int8_t *out, uint8_t *mask)
{
    tte_dw_args a = make_args(params, quant, in_dims, in, filter_dims, filter, bias, out_dims);
    dw_group_fn fn;
    int32_t c;
    if (a.mult != 1 || a.c < 4 || a.kh * a.kw > TTE_DW_MAX_TAPS) {
        return 0;
    }
    a.mask = mask;
    fn = group_fn(&a, a.kh == 3 && a.kw == 3, 1);
    tte_mask_clear(mask, a.n * a.oh * a.ow * a.c);
    for (c = 0; c < a.c; c += 4) { /* the last group ends at the last channel (it may overlap the one before) */
        fn(&a, out, tte_min32(c, a.c - 4));
    }
    return 1;
}
