/* The fused backward of an inverted-residual block (tte_block_grad.h), channel by channel in groups of four.
 *
 * Per group of n <= 4 expanded channels c0..c0+n-1 (lane k = channel c0 + k; a group of fewer channels repeats
 * the last one in the spare lanes and discards them), with the scratch holding the group's pw2 input gradients
 * [H2 W2][4], pw1 output gradients [H1 W1][4], pw1 weight rows [I][4], weight gradients [4][S], pw2 weight
 * columns [O][4] and depthwise taps [KH KW][4], all float:
 * 1. the pw2 input gradient: blocks of four pixels by the four lanes, sixteen sums in registers over o (each das
 *    once per pixel, each weight converted once per group): the unfused 1x1 kernel's loop;
 * 2. per channel the depthwise mask and bias; the depthwise input gradient of the four lanes at once (gather form,
 *    taps kh then kw); per channel the pw1 mask and bias;
 * 3. in_grad[q, i] += das_k * w1f[i][k] for k = 0..3 in order, four pixels at a time (spare lanes add 0 * w,
 *    which leaves a sum started at +0.0f unchanged);
 * 4. the pw1 weight gradients of the four lanes, four columns at a time (each saved value converted once), then
 *    the updates row by row (the PRNG order).
 * Every sum runs in the unfused kernels' order, so results are bit-exact with tte/train/block_grad.py.
 */
#include "tte_block_grad.h"
#include "tte_train_math.h"
#include "tte_train_util.h"

typedef struct {
    const tte_block_grad_params *p;
    const tte_block_grad_consts *k;
    const tte_block_grad_state *s;
    float lr;
    uint32_t rng[3]; /* the streams of the dw bias, pw1 bias and pw1 weight updates */
    int stochastic;
} block_ctx;

static uint32_t jump_state(const uint32_t *jump, uint32_t x)
{
    uint32_t out = 0u;
    int32_t b;
    if (jump == NULL) {
        return x;
    }
    for (b = 0; b < 32; b++) {
        if ((x >> b) & 1u) {
            out ^= jump[b];
        }
    }
    return out;
}

/* g[p][k] (k < 4) for every pixel p: the pw2 input gradient of the group's channels, as the unfused pointwise
 * input gradient (sum over o ascending of (grad[p, o] * w2_scale[o]) * w2f[o][k]); w2f: the group's columns of
 * w2 as floats, interleaved [O][4]. Four pixels at a time, sixteen sums in registers. */
static TTE_NOINLINE void pw2_grads(const block_ctx *b, const float *grad, const float *w2f, float *g)
{
    const int32_t pixels = b->p->out_h * b->p->out_w, cout = b->p->out_ch;
    const float *w_scale = b->k->w2_scale;
    int32_t p, o, r;
    for (p = 0; p < pixels; p += 4) {
        const int32_t rows = tte_min32(4, pixels - p);
        const float *g0 = grad + p * cout, *g1 = grad + (p + tte_min32(1, rows - 1)) * cout;
        const float *g2 = grad + (p + tte_min32(2, rows - 1)) * cout, *g3 = grad + (p + rows - 1) * cout;
        const float *w = w2f;
        TTE_F32_BLOCK4X4_DECL;
        float acc[16];
        for (o = 0; o < cout; o++, w += 4) {
            const float s = w_scale[o], w0 = w[0], w1 = w[1], wv2 = w[2], w3 = w[3];
            float d = g0[o] * s;
            TTE_F32_ROW4(0, d, w0, w1, wv2, w3);
            d = g1[o] * s;
            TTE_F32_ROW4(1, d, w0, w1, wv2, w3);
            d = g2[o] * s;
            TTE_F32_ROW4(2, d, w0, w1, wv2, w3);
            d = g3[o] * s;
            TTE_F32_ROW4(3, d, w0, w1, wv2, w3);
        }
        TTE_F32_BLOCK4X4_STORE(acc);
        for (r = 0; r < 4 * rows; r++) {
            g[4 * p + r] = acc[r];
        }
    }
}

/* g[p * stride] (p < pixels) = 0 where the clamp cut it (mask over [pixels, C], channel c), then the bias
 * update of c: its gradient is the sum over the pixels in order. */
static void mask_and_bias(const block_ctx *b, float *g, int32_t stride, int32_t pixels, const uint8_t *mask,
                          int32_t c, const int32_t *bias, int32_t *bias_out, const float *factor, uint32_t *rng)
{
    const int32_t ch = b->p->ch;
    float sum = 0.0f;
    int32_t p;
    if (mask != NULL && (ch & 7) == 0) { /* the channel's bit sits at one position of every (C / 8)-th byte */
        const uint8_t *m = mask + (c >> 3);
        const uint32_t bit = 1u << (c & 7);
        float *gp = g;
        for (p = 0; p < pixels; p++, m += ch >> 3, gp += stride) {
            float v = *gp;
            if ((*m & bit) == 0u) {
                v = 0.0f;
                *gp = v;
            }
            sum = sum + v;
        }
    } else {
        for (p = 0; p < pixels; p++) {
            const int32_t i = p * ch + c;
            if (mask != NULL && ((mask[i >> 3] >> (i & 7)) & 1) == 0) {
                g[p * stride] = 0.0f;
            }
            sum = sum + g[p * stride];
        }
    }
    if (bias != NULL) {
        bias_out[c] = tte_qas_update_s32(bias[c], sum, b->lr, factor[c], b->stochastic ? rng : NULL);
    }
}

/* The taps of input coordinate v along one axis (t = v + pad): the first valid kernel offset k0, its output
 * index o0 and the count n; the next taps are k0 + j stride at output o0 - j. */
static void axis_taps(int32_t t, int32_t k_size, int32_t stride, int32_t out_size, int32_t *k0, int32_t *o0,
                      int32_t *n)
{
    const int32_t lo = tte_max32(0, t - stride * (out_size - 1)), hi = tte_min32(k_size - 1, t);
    const int32_t k = lo + (t - lo) % stride;
    *n = k > hi ? 0 : (hi - k) / stride + 1;
    *k0 = k;
    *o0 = (t - k) / stride;
}

/* The depthwise input gradient of the group's four channels (interleaved, lane k = channel col[k]):
 * g1[q][k] = sum over the taps (kh, then kw) of q of das[p][k] * w[tap][k], from 0.0f, with das = dacc * scale
 * computed here in place; xtaps holds (k0, o0, n) of every column (axis_taps), wt is 4 * KH * KW floats. */
static void dw_grads(const block_ctx *b, float *dacc, const int8_t *filter, const int32_t col[4],
                     const int16_t *xtaps, float *wt, float *g1)
{
    const tte_block_grad_params *p = b->p;
    const int32_t taps = p->kernel_h * p->kernel_w, pixels = p->out_h * p->out_w, sw4 = 4 * p->dw.stride_w;
    const float s0 = b->k->dw_scale[col[0]], s1 = b->k->dw_scale[col[1]], s2 = b->k->dw_scale[col[2]];
    const float s3 = b->k->dw_scale[col[3]];
    int32_t y, x, a, j, k;
    for (k = 0; k < pixels; k++) {
        float *d = dacc + 4 * k;
        d[0] = d[0] * s0, d[1] = d[1] * s1, d[2] = d[2] * s2, d[3] = d[3] * s3;
    }
    for (k = 0; k < taps; k++) {
        const int8_t *f = filter + k * p->ch;
        wt[4 * k] = (float)f[col[0]], wt[4 * k + 1] = (float)f[col[1]];
        wt[4 * k + 2] = (float)f[col[2]], wt[4 * k + 3] = (float)f[col[3]];
    }
    for (y = 0; y < p->in_h; y++) {
        int32_t ky0, oy0, ny;
        axis_taps(y + p->dw.pad_top, p->kernel_h, p->dw.stride_h, p->out_h, &ky0, &oy0, &ny);
        for (x = 0; x < p->in_w; x++, g1 += 4) {
            const int16_t *t = xtaps + 3 * x;
            float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
            for (a = 0; a < ny; a++) {
                const float *r = dacc + 4 * ((oy0 - a) * p->out_w + t[1]);
                const float *w = wt + 4 * ((ky0 + a * p->dw.stride_h) * p->kernel_w + t[0]);
                for (j = 0; j < t[2]; j++, r -= 4, w += sw4) {
                    a0 = a0 + r[0] * w[0];
                    a1 = a1 + r[1] * w[1];
                    a2 = a2 + r[2] * w[2];
                    a3 = a3 + r[3] * w[3];
                }
            }
            g1[0] = a0, g1[1] = a1, g1[2] = a2, g1[3] = a3;
        }
    }
}

/* in_grad[q, i] += das_k[q] * w1f[i][k] for k = 0..3 in order, das_k = g1[q][k] * w1_scale[c0 + k] (g1 and
 * the scale are 0 for k >= n); four pixels at a time share the weight loads. */
static TTE_NOINLINE void input_grads(const block_ctx *b, const float *g1, const float *w1f, int32_t c0, int32_t n,
                                     float *in_grad)
{
    const int32_t pixels = b->p->in_h * b->p->in_w, cin = b->p->in_ch;
    const float *sc = b->k->w1_scale + c0;
    const float s0 = sc[0], s1 = n > 1 ? sc[1] : 0.0f, s2 = n > 2 ? sc[2] : 0.0f, s3 = n > 3 ? sc[3] : 0.0f;
    int32_t q, i;
    for (q = 0; q + 4 <= pixels; q += 4) {
        const float *g = g1 + 4 * q, *w = w1f;
        const float d00 = g[0] * s0, d01 = g[1] * s1, d02 = g[2] * s2, d03 = g[3] * s3;
        const float d10 = g[4] * s0, d11 = g[5] * s1, d12 = g[6] * s2, d13 = g[7] * s3;
        const float d20 = g[8] * s0, d21 = g[9] * s1, d22 = g[10] * s2, d23 = g[11] * s3;
        const float d30 = g[12] * s0, d31 = g[13] * s1, d32 = g[14] * s2, d33 = g[15] * s3;
        float *x0 = in_grad + q * cin, *x1 = x0 + cin, *x2 = x1 + cin, *x3 = x2 + cin;
        for (i = 0; i < cin; i++, w += 4) {
            const float w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3];
            x0[i] = (((x0[i] + d00 * w0) + d01 * w1) + d02 * w2) + d03 * w3;
            x1[i] = (((x1[i] + d10 * w0) + d11 * w1) + d12 * w2) + d13 * w3;
            x2[i] = (((x2[i] + d20 * w0) + d21 * w1) + d22 * w2) + d23 * w3;
            x3[i] = (((x3[i] + d30 * w0) + d31 * w1) + d32 * w2) + d33 * w3;
        }
    }
    for (; q < pixels; q++) {
        const float *g = g1 + 4 * q, *w = w1f;
        const float d0 = g[0] * s0, d1 = g[1] * s1, d2 = g[2] * s2, d3 = g[3] * s3;
        float *x0 = in_grad + q * cin;
        for (i = 0; i < cin; i++, w += 4) {
            x0[i] = (((x0[i] + d0 * w[0]) + d1 * w[1]) + d2 * w[2]) + d3 * w[3];
        }
    }
}

/* gw[k][t] = sum over q ascending of g1[q][k] * (float)(saved[q, t] + offset) for k < 4 (lanes past n are
 * unused); four columns t at a time share the gradient loads, each saved value converted once. */
static TTE_NOINLINE void weight_grads(const block_ctx *b, const float *g1, const int8_t *saved, float *gw)
{
    const int32_t pixels = b->p->in_h * b->p->in_w, t_count = b->p->trained, offset = b->p->input_offset;
    float acc[16];
    int32_t t, q, j, col[4];
    for (t = 0; t < t_count; t += 4) {
        const int8_t *x = saved;
        const float *g = g1;
        TTE_F32_BLOCK4X4_DECL;
        for (j = 0; j < 4; j++) {
            col[j] = tte_min32(t + j, t_count - 1);
        }
        for (q = 0; q < pixels; q++, x += t_count, g += 4) {
            const float x0 = (float)((int32_t)x[col[0]] + offset), x1 = (float)((int32_t)x[col[1]] + offset);
            const float x2 = (float)((int32_t)x[col[2]] + offset), x3 = (float)((int32_t)x[col[3]] + offset);
            const float g0 = g[0], gv1 = g[1], g2 = g[2], g3 = g[3];
            TTE_F32_ROW4(0, g0, x0, x1, x2, x3);
            TTE_F32_ROW4(1, gv1, x0, x1, x2, x3);
            TTE_F32_ROW4(2, g2, x0, x1, x2, x3);
            TTE_F32_ROW4(3, g3, x0, x1, x2, x3);
        }
        TTE_F32_BLOCK4X4_STORE(acc);
        for (j = 0; j < 4 && t + j < t_count; j++) {
            gw[t + j] = acc[j], gw[t_count + t + j] = acc[4 + j];
            gw[2 * t_count + t + j] = acc[8 + j], gw[3 * t_count + t + j] = acc[12 + j];
        }
    }
}

/* The group's columns col[k] of w2 [O, C] as floats, interleaved w2f[o][k]. */
static void w2_columns(const block_ctx *b, const int8_t *w2, const int32_t col[4], float *w2f)
{
    int32_t o;
    for (o = 0; o < b->p->out_ch; o++, w2 += b->p->ch, w2f += 4) {
        w2f[0] = (float)w2[col[0]], w2f[1] = (float)w2[col[1]], w2f[2] = (float)w2[col[2]];
        w2f[3] = (float)w2[col[3]];
    }
}

/* The float rows of w1 for channels c0..c0+n-1, interleaved w1f[i][k] (trained columns from SRAM, the others
 * from flash; lanes past n are 0). */
static void w1_rows(const block_ctx *b, const int8_t *w1, const tte_weight_part *part, int32_t c0, int32_t n,
                    float *w1f)
{
    const int32_t cin = b->p->in_ch;
    int32_t k, i;
    for (k = 0; k < 4; k++) {
        const int8_t *row = w1 + (c0 + k) * cin;
        for (i = 0; i < cin; i++) {
            const int32_t t = part != NULL ? part->slot[i] : -1;
            w1f[4 * i + k] = k >= n ? 0.0f : (float)(t >= 0 ? part->sram[(c0 + k) * part->count + t] : row[i]);
        }
    }
}

static void update_rows(block_ctx *b, const float *gw, int32_t c0, int32_t n)
{
    const int32_t t_count = b->p->trained;
    uint32_t *rng = b->stochastic ? &b->rng[2] : NULL;
    int32_t k, t;
    for (k = 0; k < n; k++) {
        int8_t *row = b->s->w1_train + (c0 + k) * t_count;
        const float f = b->k->w1_factor[c0 + k];
        for (t = 0; t < t_count; t++) {
            row[t] = tte_qas_update_s8(row[t], gw[k * t_count + t], b->lr, f, rng);
        }
    }
}

int32_t tte_block_grad_scratch_floats(const tte_block_grad_params *params)
{
    return 4 * (params->out_h * params->out_w + params->in_h * params->in_w + params->in_ch + params->trained +
                params->out_ch + params->kernel_h * params->kernel_w);
}

void tte_block_grad_s8_f32(const tte_block_grad_params *params, const tte_block_grad_consts *consts, const float *lr,
                           const float *grad, const int8_t *w2, const uint8_t *dw_mask, const int8_t *dw_filter,
                           const uint8_t *pw1_mask, const int8_t *w1, const tte_weight_part *part,
                           const int8_t *saved, const tte_block_grad_state *state, float *scratch, float *in_grad)
{
    const int32_t p2 = params->out_h * params->out_w, p1 = params->in_h * params->in_w;
    float *g2 = scratch, *g1 = g2 + 4 * p2, *w1f = g1 + 4 * p1, *gw = w1f + 4 * params->in_ch;
    float *w2f = gw + 4 * params->trained, *wt = w2f + 4 * params->out_ch;
    int16_t xtaps[3 * TTE_BLOCK_GRAD_MAX_WIDTH];
    block_ctx b;
    int32_t c0, k, i;
    b.p = params, b.k = consts, b.s = state, b.lr = *lr, b.stochastic = state->rng_in != NULL;
    for (k = 0; k < 3; k++) {
        b.rng[k] = b.stochastic ? jump_state(consts->jump[k], *state->rng_in) : 0u;
    }
    for (i = 0; i < params->in_w; i++) {
        int32_t k0, o0, n;
        axis_taps(i + params->dw.pad_left, params->kernel_w, params->dw.stride_w, params->out_w, &k0, &o0, &n);
        xtaps[3 * i] = (int16_t)k0, xtaps[3 * i + 1] = (int16_t)o0, xtaps[3 * i + 2] = (int16_t)n;
    }
    if (in_grad != NULL) {
        for (i = 0; i < p1 * params->in_ch; i++) {
            in_grad[i] = 0.0f;
        }
    }
    for (c0 = 0; c0 < params->ch; c0 += 4) {
        const int32_t n = tte_min32(4, params->ch - c0);
        int32_t col[4];
        for (k = 0; k < 4; k++) {
            col[k] = c0 + tte_min32(k, n - 1);
        }
        w2_columns(&b, w2, col, w2f);
        pw2_grads(&b, grad, w2f, g2);
        for (k = 0; k < n; k++) {
            mask_and_bias(&b, g2 + k, 4, p2, dw_mask, c0 + k, state->dw_bias, state->dw_bias_out,
                          consts->dw_bias_factor, &b.rng[0]);
        }
        dw_grads(&b, g2, dw_filter, col, xtaps, wt, g1);
        for (k = 0; k < n; k++) {
            mask_and_bias(&b, g1 + k, 4, p1, pw1_mask, c0 + k, state->b1, state->b1_out, consts->b1_factor,
                          &b.rng[1]);
        }
        for (i = n; n < 4 && i < 4 * p1; i++) { /* the lanes of missing channels: 0 (input_grads adds 0 * w) */
            if ((i & 3) >= n) {
                g1[i] = 0.0f;
            }
        }
        if (in_grad != NULL) {
            w1_rows(&b, w1, part, c0, n, w1f);
            input_grads(&b, g1, w1f, c0, n, in_grad);
        }
        if (params->trained > 0) {
            weight_grads(&b, g1, saved, gw);
            update_rows(&b, gw, c0, n);
        }
    }
    if (b.stochastic) {
        /* the last part that draws leaves the state where the unfused updates would */
        *state->rng_out = params->trained > 0 ? b.rng[2] : (state->b1 != NULL ? b.rng[1] : b.rng[0]);
    }
    /* the scratch is an output tensor of the graph: leave it defined (zeros, as the reference does) */
    for (i = 0, k = tte_block_grad_scratch_floats(params); i < k; i++) {
        scratch[i] = 0.0f;
    }
}
