/* conv2d for small windows (the first layer: 3x3 over 3 channels): the weights widened once per call.
 *
 * The instance for tte_fast_ok layers (a [-128, 127] clamp, right shifts >= 2) whose windows are small enough
 * (see tte_conv.h). Per call, for a block of output channel pairs that fits the stack pool, the OHWI weight rows
 * are widened to int16 (zero beyond K, up to the next multiple of 4) and the per-channel requantization
 * constants are computed once. Then, two output pixels at a time, both windows are copied (interior kernel rows
 * with word copies) and widened to x + input_offset in int16 (0 outside the image), and every channel pair's
 * 2 x 2 block of sums takes, per 4 taps, 4 double-word loads and 8 SMLAD, with no widening of weights in the
 * loop. Measured in QEMU (M7, mbv2's first conv: 128 x 128 x 3 -> 64 x 64 x 16, stride 2): 1.76 instructions
 * per MAC, from 3.51 with the window kernel of conv2d.c.
 *
 * Lane order (shared by windows and weights, so SMLAD pairs them directly): the taps k..k+3 of a group g are
 * the halfword pairs (k, k+2) and (k + 1, k + 3). A window pair's group is 4 words: window 0's two, then
 * window 1's; a weight pair's group likewise: channel 2q's two, then channel 2q + 1's. An odd last channel
 * is paired with zero weights and its outputs are not stored.
 *
 * This file gathers the windows and the weights into the pool and walks the pixels; the dot products and the
 * requantized outputs are in conv2d_wide_out.c (tte_conv_wide.h).
 */
#include "tte_conv.h"
#include "tte_conv_wide.h"
#include "tte_fixedpoint.h"
#include "tte_simd.h"

/* The window pair's int8 staging buffer (the bytes of one window, widened into the pool). */
#define STAGE_MAX ((TTE_CONV_WIDE_WORDS - TTE_WIDE_RQ_WORDS) / 2)

/* Output pixel coordinates and their window's corner, advanced one pixel at a time (no division per window).
 * base: the corner's offset in the input (an offset, not a pointer: it may lie outside the image). */
typedef struct {
    int32_t n, oy, ox, iy0, ix0, base;
} cursor;

/* Halfword of tap k of member m (window or channel 0 or 1) within a group-interleaved pair block. */
static int32_t lane(int32_t m, int32_t k)
{
    return (k >> 2) * 8 + m * 4 + (k & 1) * 2 + ((k >> 1) & 1);
}

static void fill(int8_t *dst, int32_t count, int8_t value)
{
    int32_t i;
    for (i = 0; i < count; i++) {
        dst[i] = value;
    }
}

static TTE_ALWAYS_INLINE void copy_bytes(int8_t *dst, const int8_t *src, int32_t count)
{
#if defined(__arm__) && !defined(__ARM_FEATURE_UNALIGNED)
    const int32_t words = 0; /* no unaligned word access (Cortex-M0): bytes only */
#else
    const int32_t words = count & ~3;
#endif
    int32_t i = 0;
    for (; i < words; i += 4) {
        tte_write_s8x4(dst + i, tte_read_s8x4(src + i));
    }
    for (; i < count; i++) {
        dst[i] = src[i];
    }
}

static void cursor_start(const tte_wide_args *a, cursor *c)
{
    c->n = 0;
    c->oy = 0;
    c->ox = 0;
    c->iy0 = -a->pad_top;
    c->ix0 = -a->pad_left;
    c->base = (c->iy0 * a->w + c->ix0) * a->cin;
}

static void advance(const tte_wide_args *a, cursor *c)
{
    c->ix0 += a->stride_w;
    c->base += a->stride_w * a->cin;
    if (++c->ox < a->ow) {
        return;
    }
    c->ox = 0;
    c->ix0 = -a->pad_left;
    c->iy0 += a->stride_h;
    if (++c->oy == a->oh) {
        c->oy = 0;
        c->iy0 = -a->pad_top;
        c->n++;
    }
    c->base = ((c->n * a->h + c->iy0) * a->w + c->ix0) * a->cin;
}

/* The window at `c` as int8 in HWC order, taps [0, K), when it crosses the image border: the taps outside hold
 * the input zero point (x + input_offset = 0). Taps [K, k_pad) are set once per call (run_block). */
static TTE_NOINLINE void window_edge(const tte_wide_args *a, const cursor *c, int8_t *dst)
{
    const int32_t iy0 = c->iy0, ix0 = c->ix0, row = a->kw * a->cin;
    const int32_t kx_start = ix0 < 0 ? -ix0 : 0, kx_end = a->w - ix0 < a->kw ? a->w - ix0 : a->kw;
    const int32_t before = kx_start * a->cin, inside = (kx_end - kx_start) * a->cin;
    const int8_t zp = (int8_t)-a->x_off;
    int32_t ky;
    for (ky = 0; ky < a->kh; ky++, dst += row) {
        const int32_t iy = iy0 + ky;
        if (iy < 0 || iy >= a->h || inside <= 0) {
            fill(dst, row, zp);
            continue;
        }
        fill(dst, before, zp);
        copy_bytes(dst + before, a->in + (c->base + ky * a->w * a->cin + before), inside);
        fill(dst + before + inside, row - before - inside, zp);
    }
}

/* The window at `c` into `stage` (kh rows of `row` bytes), then widened into lanes m of the pool. kh, row and
 * k_pad are constants in the 3x3 RGB instance, so its loops unroll. */
static TTE_ALWAYS_INLINE void window(const tte_wide_args *a, const cursor *c, int32_t m, int32_t kh, int32_t row,
                                     int32_t k_pad, int8_t *stage, tte_wide_pool *pool)
{
    int32_t k;
    /* Inside the image: 0 <= iy0 <= y_max and 0 <= ix0 <= x_max (never when the kernel is larger than it). */
    if (c->iy0 >= 0 && c->ix0 >= 0 && c->iy0 <= a->y_max && c->ix0 <= a->x_max) {
        const int8_t *src = a->in + c->base;
        int32_t ky;
        for (ky = 0; ky < kh; ky++, src += a->in_row) {
            copy_bytes(stage + ky * row, src, row);
        }
    } else {
        window_edge(a, c, stage);
    }
#if TTE_HAVE_DSP
    {
        const uint32_t xo = tte_dup16(a->x_off);
#if defined(__GNUC__) && __GNUC__ >= 8
#pragma GCC unroll 8
#endif
        for (k = 0; k < k_pad; k += 4) {
            const uint32_t v = tte_read_s8x4(stage + k);
            tte_write_word(pool->words, k + 2 * m, tte_sxtab16(xo, v));
            tte_write_word(pool->words, k + 2 * m + 1, tte_sxtab16_ror8(xo, v));
        }
    }
#else
    for (k = 0; k < k_pad; k++) {
        pool->lanes[lane(m, k)] = (int16_t)(stage[k] + a->x_off);
    }
#endif
}

/* Both windows of a pixel pair (c1 may equal c0 for a lone last pixel). */
static TTE_NOINLINE void windows_any(const tte_wide_args *a, const cursor *c0, const cursor *c1, int8_t *stage,
                                     tte_wide_pool *pool)
{
    const int32_t row = a->kw * a->cin;
    window(a, c0, 0, a->kh, row, a->k_pad, stage, pool);
    window(a, c1, 1, a->kh, row, a->k_pad, stage, pool);
}

static TTE_NOINLINE void windows_rgb3x3(const tte_wide_args *a, const cursor *c0, const cursor *c1, int8_t *stage,
                                        tte_wide_pool *pool)
{
    window(a, c0, 0, 3, 9, 28, stage, pool);
    window(a, c1, 1, 3, 9, 28, stage, pool);
}

/* Weight pairs [0, pairs) of the block starting at channel oc0 into the pool after the window pair, and their
 * requantization constants after them: bias0, bias1, m0, k0, m1, k1, sh0, sh1 (tte_mbqm_right2; k with the zero
 * point folded in when a->fold). */
static void prepare_block(const tte_wide_args *a, int32_t oc0, int32_t pairs, tte_wide_pool *pool)
{
    int16_t *wl = pool->lanes + 2 * a->k_pad;
    int32_t *rq = pool->values + a->k_pad * (1 + pairs);
    int32_t q, j, k;
    for (q = 0; q < pairs; q++, wl += 2 * a->k_pad, rq += TTE_WIDE_RQ_WORDS) {
        for (j = 0; j < 2; j++) {
            const int32_t oc = oc0 + 2 * q + j < a->cout ? oc0 + 2 * q + j : oc0 + 2 * q; /* phantom: a copy */
            const int32_t qi = a->quant->per_channel ? oc : 0;
            const tte_channel_rq crq = tte_channel_rq_make(a->quant->multiplier[qi], a->quant->shift[qi]);
            const int real = oc0 + 2 * q + j < a->cout;
            for (k = 0; k < a->k_pad; k++) {
                wl[lane(j, k)] = (int16_t)(real && k < a->k ? a->filter[oc * a->k + k] : 0);
            }
            rq[j] = real && a->bias ? a->bias[oc] : 0;
            rq[2 + 2 * j] = crq.multiplier;
            rq[3 + 2 * j] = a->fold ? tte_fast_k_out(&crq, a->out_offset) : crq.fast_k;
            rq[6 + j] = crq.fast_sh;
        }
    }
}

/* Every pixel for the channel pairs [0, pairs) of the block at oc0. */
static void run_block(const tte_wide_args *a, int32_t oc0, int32_t pairs, tte_wide_pool *pool, int8_t *out)
{
    int8_t stage[STAGE_MAX];
    const int32_t pixels = a->n * a->oh * a->ow;
    const int rgb3x3 = a->kh == 3 && a->kw == 3 && a->cin == 3;
    cursor c0, c1;
    int32_t p;
    prepare_block(a, oc0, pairs, pool);
    fill(stage + a->k, a->k_pad - a->k, (int8_t)-a->x_off);
    cursor_start(a, &c0);
    for (p = 0; p < pixels; p += 2) {
        const int pair = p + 1 < pixels;
        c1 = c0;
        if (pair) {
            advance(a, &c1);
        }
        (rgb3x3 ? windows_rgb3x3 : windows_any)(a, &c0, &c1, stage, pool);
        c0 = c1;
        advance(a, &c0);
        if (!pair) {
            tte_wide_last_outputs(a, pool, oc0, pairs, out + p * a->cout);
        } else {
            (!rgb3x3   ? tte_wide_pair_outputs
             : a->fold ? tte_wide_pair_outputs_rgb3x3
                       : tte_wide_pair_outputs_rgb3x3_z)(a, pool, oc0, pairs, out + p * a->cout);
        }
    }
}

int tte_conv2d_wide_s8(const tte_conv_params *params, const tte_requant *quant, const tte_dims *in_dims,
                       const int8_t *in, const tte_dims *filter_dims, const int8_t *filter, const int32_t *bias,
                       const tte_dims *out_dims, int8_t *out)
{
    const tte_out_stage o = tte_out_stage_make(params->output_offset, params->act_min, params->act_max);
    tte_wide_pool pool;
    tte_wide_args a;
    int32_t oc0, max_pairs;
    a.k = filter_dims->h * filter_dims->w * in_dims->c;
    a.k_pad = (a.k + 3) & ~3;
    max_pairs = (TTE_CONV_WIDE_WORDS - a.k_pad) / (a.k_pad + TTE_WIDE_RQ_WORDS);
    /* Each block copies every window again: blocks of one channel pair would cost more than they save. */
    if (max_pairs < 2 && (max_pairs < 1 || out_dims->c > 2)) {
        return 0;
    }
    if (!tte_fast_ok(quant, out_dims->c, &o)) {
        return 0;
    }
    a.n = out_dims->n;
    a.h = in_dims->h;
    a.w = in_dims->w;
    a.cin = in_dims->c;
    a.kh = filter_dims->h;
    a.kw = filter_dims->w;
    a.oh = out_dims->h;
    a.ow = out_dims->w;
    a.cout = out_dims->c;
    a.stride_h = params->stride_h;
    a.stride_w = params->stride_w;
    a.pad_top = params->pad_top;
    a.pad_left = params->pad_left;
    a.x_off = params->input_offset;
    a.out_offset = params->output_offset;
    a.in_row = a.w * a.cin;
    a.y_max = a.h - a.kh; /* negative when the kernel is taller than the image */
    a.x_max = a.w - a.kw;
    a.fold = tte_fast_out_ok(quant, out_dims->c, &o);
    a.z_add = a.fold ? 0 : a.out_offset;
    a.in = in;
    a.filter = filter;
    a.bias = bias;
    a.quant = quant;
    for (oc0 = 0; oc0 < a.cout; oc0 += 2 * max_pairs) {
        const int32_t left = (a.cout - oc0 + 1) >> 1;
        run_block(&a, oc0, left < max_pairs ? left : max_pairs, &pool, out);
    }
    return 1;
}
