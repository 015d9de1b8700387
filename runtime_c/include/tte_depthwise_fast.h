/* tte runtime: the four-channel depthwise groups shared by depthwise_conv2d.c, depthwise_runs.c and the mask
 * kernel (internal). */
#ifndef TTE_DEPTHWISE_FAST_H
#define TTE_DEPTHWISE_FAST_H

#include "tte_fixedpoint.h"
#include "tte_simd.h"
#include "tte_types.h"

/* A depthwise layer as the group kernels read it. */
typedef struct {
    int32_t h, w, c, kh, kw, oh, ow, n, mult;
    int32_t stride_h, stride_w, pad_top, pad_left, x_off;
    const int8_t *in, *filter;
    const int32_t *bias;
    const tte_requant *quant;
    tte_out_stage out;
    uint8_t *mask; /* NULL, or the cleared clamp mask (tte_train.h) of the instances with the mask flag */
} tte_dw_args;

/* The weights of tap t for channels [c, c + 4): with DSP as two words (channels c, c+2 and c+1, c+3 as
 * halfwords), otherwise as four ints. */
typedef struct {
#if TTE_HAVE_DSP
    uint32_t lo, hi;
#else
    int32_t w[4];
#endif
} tte_dw_tap;

/* The first KH * KW taps of channels [c, c + 4). */
static inline void tte_dw_widen_taps(const tte_dw_args *a, int32_t c, tte_dw_tap *taps)
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
} tte_dw_acc4;

/* One tap of four adjacent channels: acc[j] += (x[j] + x_off) * w[j]. */
static TTE_ALWAYS_INLINE void tte_dw_tap4(const int8_t *x, const tte_dw_tap *t, uint32_t xo, int32_t x_off,
                                          tte_dw_acc4 *acc)
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

/* What the fast 3x3 run of a channel group reads, through one pointer (so that the loop keeps its registers for
 * the sums): widened taps, requantization (tte_mbqm_right2), biases and strides. */
typedef struct {
    tte_dw_tap taps[9];          /* byte offset 0 (DSP: 8 bytes a tap; the assembly reads these offsets) */
    int32_t m[4];                /* 72 */
    int32_t k[4];                /* 88: fast_k */
    int32_t sh[4];               /* 104: fast_sh */
    int32_t b[4];                /* 120 */
    int32_t kout[4];             /* 136: tte_fast_k_out (the zero point inside), when `folded` */
    int32_t cs, row, step, back; /* 152: channels, input row, pixel step; back = step - 3 * row */
    uint32_t xo;                 /* 168: the input offset in both halfwords */
    int32_t zp, x_off, folded;   /* folded: every right shift <= TTE_FAST_OUT_MAX_SHIFT (the assembly applies) */
    uint8_t *mask;               /* 184: the mask of the mask instance (its bits are ORed in) */
    int32_t at;                  /* 188: the mask index of the next pixel's first channel (advanced as it goes) */
    const tte_dw_tap *tapk;      /* 192: K x K runs (K = 5, 7): the K * K widened taps */
    int32_t rowback, backk;      /* 196, 200: row - K * cs; step - K * row */
} tte_dw_run3;

/* The run constants of channels [c, c + 4) of a 3x3 layer (taps: their 9 widened taps). */
void tte_dw_run3_make(const tte_dw_args *a, int32_t c, const tte_dw_tap *taps, tte_dw_run3 *r);

/* `count` output pixels of one output row whose 3x3 windows lie inside the image (fast requantization): x at
 * the first window's top-left tap of channel c, dst at its output; tte_dw_run3_mask also ORs the mask bits at
 * element `at` onwards into r->mask. */
void tte_dw_run3_plain(tte_dw_run3 *r, const int8_t *x, int8_t *dst, int32_t count);
void tte_dw_run3_mask(tte_dw_run3 *r, const int8_t *x, int8_t *dst, int32_t count, int32_t at);

/* tte_dw_run3_make and tte_dw_run3_plain for K x K windows, K = 5 or 7, over the taps at `taps` (which must
 * outlive the run). */
void tte_dw_runk_make(const tte_dw_args *a, int32_t c, const tte_dw_tap *taps, tte_dw_run3 *r);
void tte_dw_runk_plain(tte_dw_run3 *r, int32_t k, const int8_t *x, int8_t *dst, int32_t count);

/* True when every pixel of a 3x3 layer can take a run (tte_dw_runs); then tte_dw_runs computes channels
 * [c, c + 4) of the whole output (and the mask bits when `mask`, into a->mask). */
int tte_dw_runs_ok(const tte_dw_args *a);
void tte_dw_runs(const tte_dw_args *a, int8_t *out, int32_t c, int mask);

/* tte_depthwise_conv2d_mask_s8 for a whole weight (no split part) when the four-channel groups apply: ch_mult 1,
 * C >= 4, KH * KW <= 49. Clears the mask, writes out and the mask bits, returns 1; returns 0 (nothing written)
 * for other layers. Same arguments as tte_depthwise_conv2d_s8 plus the mask ((N OH OW C + 7) / 8 bytes). */
int tte_depthwise_conv2d_mask_groups_s8(const tte_dw_conv_params *params, const tte_requant *quant,
                                        const tte_dims *in_dims, const int8_t *in, const tte_dims *filter_dims,
                                        const int8_t *filter, const int32_t *bias, const tte_dims *out_dims,
                                        int8_t *out, uint8_t *mask);

#endif /* TTE_DEPTHWISE_FAST_H */
