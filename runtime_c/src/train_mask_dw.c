/* The depthwise forward kernel of the train step that also writes the 1-bit clamp mask of its output
 * (tte_train.h), with the integer arithmetic of the forward kernels (see train_mask_conv.c), so its int8 output
 * equals theirs bit for bit; the requantized value before the clamp gives the mask bit in the same pass.
 *
 * A whole weight with multiplier 1 takes the forward kernel's four-channel groups and 3x3 runs with the mask flag
 * (tte_depthwise_conv2d_mask_groups_s8, depthwise_conv2d.c). Kernels too large for those groups go four channels
 * at a time here (dw_mask_mult1: adjacent bytes accumulated in registers, SMLABB/SMLATT on the DSP path; where all
 * four channels' requantization takes tte_mbqm_right2 the output stage writes four mask bits at once). Other
 * multipliers and split weights take the general path.
 */
#include "tte_depthwise_fast.h"
#include "tte_simd.h"
#include "tte_train.h"
#include "tte_train_util.h"

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

#if TTE_HAVE_DSP
/* Four channels of one tap (x and w point at adjacent bytes) multiplied per channel (SMLABB/SMLATT). */
#define DW_TAP4(xp, wp, a0, a1, a2, a3)                                                                             \
    do {                                                                                                           \
        const uint32_t xv_ = tte_read_s8x4(xp), wv_ = tte_read_s8x4(wp);                                           \
        const uint32_t xl_ = tte_sxtab16(xo, xv_), xh_ = tte_sxtab16_ror8(xo, xv_);                                \
        const uint32_t wl_ = tte_sxtb16(wv_), wh_ = tte_sxtb16_ror8(wv_);                                          \
        a0 = tte_smlabb(xl_, wl_, a0);                                                                              \
        a2 = tte_smlatt(xl_, wl_, a2);                                                                              \
        a1 = tte_smlabb(xh_, wh_, a1);                                                                              \
        a3 = tte_smlatt(xh_, wh_, a3);                                                                              \
    } while (0)
#else
#define DW_TAP4(xp, wp, a0, a1, a2, a3)                                                                             \
    do {                                                                                                           \
        a0 += ((xp)[0] + x_off) * (wp)[0];                                                                         \
        a1 += ((xp)[1] + x_off) * (wp)[1];                                                                         \
        a2 += ((xp)[2] + x_off) * (wp)[2];                                                                         \
        a3 += ((xp)[3] + x_off) * (wp)[3];                                                                         \
    } while (0)
#endif

/* acc[j] = sum over the window taps inside the image of (x + x_off) * w for channels c .. c+3 (adjacent bytes):
 * x points at the window's first valid tap in the input and w in the filter, rows x_row and w_row apart. The DSP
 * path reads the four channels of a tap as one word. */
static void dw_window4(const int8_t *x, const int8_t *w, int32_t rows, int32_t cols, int32_t ch, int32_t x_row,
                       int32_t w_row, int32_t x_off, int32_t acc[4])
{
    int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, r, k;
#if TTE_HAVE_DSP
    const uint32_t xo = tte_dup16(x_off);
#endif
    for (r = 0; r < rows; r++, x += x_row, w += w_row) {
        const int8_t *xt = x, *wt = w;
        for (k = 0; k < cols; k++, xt += ch, wt += ch) {
            DW_TAP4(xt, wt, a0, a1, a2, a3);
        }
    }
    acc[0] = a0, acc[1] = a1, acc[2] = a2, acc[3] = a3;
}

/* The requantization of four channels that all take tte_mbqm_right2, in locals. */
typedef struct {
    int32_t b[4], m[4], fk[4], sh[4];
} rq4;

/* The four outputs of a channel group at `at` (output index of its first channel) and their mask bits. */
static TTE_ALWAYS_INLINE void out4_fast(const rq4 *q, const int32_t acc[4], tte_fast_stage f, int32_t at,
                                        int8_t *out, uint8_t *mask)
{
    const uint32_t bits = tte_fast_out(acc[0], q->b[0], q->m[0], q->fk[0], q->sh[0], f, out + at) |
                          (tte_fast_out(acc[1], q->b[1], q->m[1], q->fk[1], q->sh[1], f, out + at + 1) << 1) |
                          (tte_fast_out(acc[2], q->b[2], q->m[2], q->fk[2], q->sh[2], f, out + at + 2) << 2) |
                          (tte_fast_out(acc[3], q->b[3], q->m[3], q->fk[3], q->sh[3], f, out + at + 3) << 3);
    tte_put_bits4(mask, at, bits);
}

/* The depthwise arguments a channel group needs. */
typedef struct {
    const tte_dw_conv_params *params;
    const tte_dims *in_dims, *out_dims;
    const int8_t *in, *filter;
    int32_t kh, kw;
} dw_args;

/* Every output pixel of the channel group c .. c+3: window sums, then outputs and mask bits. (Eight channels at a
 * time would need more registers than Cortex-M has: the sums spill.) */
static void dw_mask_group(const dw_args *a, const tte_requant *quant, const int32_t *bias, int32_t c, int8_t *out,
                          uint8_t *mask)
{
    const tte_dw_conv_params *params = a->params;
    const tte_out_stage o = tte_out_stage_make(params->output_offset, params->act_min, params->act_max);
    const tte_fast_stage f = {o.act_min - o.offset, o.act_max - o.offset, o.offset, o.act_min, o.act_max};
    const int32_t h = a->in_dims->h, w = a->in_dims->w, ch = a->in_dims->c, x_off = params->input_offset;
    const int32_t kh = a->kh, kw = a->kw;
    tte_channel_rq rq[4];
    int32_t b[4], fast = 1, n, oy, ox, j;
    rq4 q;
    for (j = 0; j < 4; j++) {
        rq[j] = tte_rq_of(quant, c + j);
        b[j] = bias != NULL ? bias[c + j] : 0;
        q.b[j] = b[j];
        q.m[j] = rq[j].multiplier;
        q.fk[j] = rq[j].fast_k;
        q.sh[j] = rq[j].fast_sh;
        fast = fast && rq[j].fast_k != 0;
    }
    for (n = 0; n < a->out_dims->n; n++) {
        const int8_t *in_n = a->in + n * h * w * ch + c;
        for (oy = 0; oy < a->out_dims->h; oy++) {
            const int32_t iy0 = oy * params->stride_h - params->pad_top;
            const int32_t ky0 = tte_max32(0, -iy0), ky1 = tte_min32(kh, h - iy0);
            for (ox = 0; ox < a->out_dims->w; ox++) {
                const int32_t ix0 = ox * params->stride_w - params->pad_left;
                const int32_t kx0 = tte_max32(0, -ix0), kx1 = tte_min32(kw, w - ix0);
                const int32_t at = ((n * a->out_dims->h + oy) * a->out_dims->w + ox) * ch + c;
                const int8_t *x = in_n + ((iy0 + ky0) * w + ix0 + kx0) * ch;
                const int8_t *wt = a->filter + (ky0 * kw + kx0) * ch + c;
                int32_t acc[4];
                dw_window4(x, wt, ky1 - ky0, kx1 - kx0, ch, w * ch, kw * ch, x_off, acc);
                if (fast) {
                    out4_fast(&q, acc, f, at, out, mask);
                    continue;
                }
                for (j = 0; j < 4; j++) {
                    tte_out_mask_at(out, mask, at + j, tte_channel_rq_apply(&rq[j], tte_wrap_add(b[j], acc[j])), &o);
                }
            }
        }
    }
}

/* Multiplier 1 and a whole weight: groups of four channels (the last group may overlap the previous one, as
 * outputs are written by index and mask bits ORed), their requantization prepared once. */
static void dw_mask_mult1(const tte_dw_conv_params *params, const tte_requant *quant, const tte_dims *in_dims,
                          const int8_t *in, const tte_dims *filter_dims, const int8_t *filter,
                          const int32_t *bias, const tte_dims *out_dims, int8_t *out, uint8_t *mask)
{
    const dw_args a = {params, in_dims, out_dims, in, filter, filter_dims->h, filter_dims->w};
    const int32_t ch = in_dims->c;
    int32_t c0;
    tte_mask_clear(mask, out_dims->n * out_dims->h * out_dims->w * ch);
    for (c0 = 0; c0 < ch; c0 += 4) {
        dw_mask_group(&a, quant, bias, tte_min32(c0, ch - 4), out, mask); /* the last group ends at the end */
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
    if (part == NULL &&
        tte_depthwise_conv2d_mask_groups_s8(params, quant, in_dims, in, filter_dims, filter, bias, out_dims, out,
                                            mask)) {
        return;
    }
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

