/* The fused backward of an inverted-residual block (tte_block_grad.h), channel by channel in groups of four.
 *
 * Per group of n <= 4 expanded channels c0..c0+n-1 (lane k = channel c0 + k; a group of fewer channels repeats
 * the last one in the spare lanes and discards them), with the scratch holding the group's pw2 input gradients
 * [H2 W2][4], pw1 output gradients [H1 W1][4], pw1 weight rows [I][4], weight gradients [4][S], pw2 weight
 * columns [O][4] and depthwise taps [KH KW][4], all float:
 * 1. the pw2 input gradient: blocks of four pixels by the four lanes, sixteen sums in registers over o (each das
 *    once per pixel, each weight converted once per group): the unfused 1x1 kernel's loop;
 * 2. the depthwise mask, bias gradient sums and das = dacc * scale of the four lanes in one pass; the depthwise
 *    input gradient of the four lanes at once (gather form, taps kh then kw), input row by input row: each kernel
 *    row adds its taps to the row's partial sums (a 3-wide stride-1 kernel row with its twelve weights in
 *    registers), then the pw1 mask and bias gradient sums over the row; the bias updates channel by channel.
 *    Spare lanes are masked to 0 from the start, so they contribute 0 * w everywhere;
 * 3. in_grad[q, i] += das_k * w1f[i][k] for k = 0..3 in order, four pixels at a time (spare lanes add 0 * w,
 *    which leaves a sum started at +0.0f unchanged);
 * 4. the pw1 weight gradients of the four lanes, four columns at a time (each saved value converted once per
 *    group: a float copy of the whole saved input would cost H1 W1 S floats of arena), then the updates row by
 *    row (the PRNG order).
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
            TTE_F32_SCALED_ROWS4(w_scale[o], o, g0, g1, g2, g3, w[0], w[1], w[2], w[3]);
        }
        if (rows == 4) {
            TTE_F32_BLOCK4X4_STORE(g + 4 * p);
        } else {
            TTE_F32_BLOCK4X4_STORE(acc);
            for (r = 0; r < 4 * rows; r++) {
                g[4 * p + r] = acc[r];
            }
        }
    }
}

/* The bias updates of channels c0..c0+n-1 (in channel order: the PRNG order) from their gradient sums. */
static void bias_updates(const block_ctx *b, const float sum[4], int32_t c0, int32_t n, const int32_t *bias,
                         int32_t *bias_out, const float *factor, uint32_t *rng)
{
    int32_t k;
    for (k = 0; bias != NULL && k < n; k++) {
        bias_out[c0 + k] = tte_qas_update_s32(bias[c0 + k], sum[k], b->lr, factor[c0 + k],
                                              b->stochastic ? rng : NULL);
    }
}

/* The depthwise mask and bias of the group on g2 [H2 W2][4], then das = dacc * dw_scale in place (what the
 * depthwise input gradient multiplies; spare lanes are 0). */
static void dw_mask_bias(block_ctx *b, float *g2, const uint8_t *mask, int32_t c0, int32_t n)
{
    const int32_t pixels = b->p->out_h * b->p->out_w;
    const uint32_t all = (1u << n) - 1u;
    const float *sc = b->k->dw_scale + c0;
    const float s0 = sc[0], s1 = n > 1 ? sc[1] : 0.0f, s2 = n > 2 ? sc[2] : 0.0f, s3 = n > 3 ? sc[3] : 0.0f;
    const int32_t ch = b->p->ch;
    float sum[4], u0 = 0.0f, u1 = 0.0f, u2 = 0.0f, u3 = 0.0f;
    int32_t p;
    for (p = 0; p < pixels; p++, g2 += 4) {
        const uint32_t bits = mask != NULL ? tte_mask_bits4(mask, ch, p, c0, n) & all : all;
        const float v0 = (bits & 1u) ? g2[0] : 0.0f, v1 = (bits & 2u) ? g2[1] : 0.0f;
        const float v2 = (bits & 4u) ? g2[2] : 0.0f, v3 = (bits & 8u) ? g2[3] : 0.0f;
        u0 = u0 + v0, u1 = u1 + v1, u2 = u2 + v2, u3 = u3 + v3;
        g2[0] = v0 * s0, g2[1] = v1 * s1, g2[2] = v2 * s2, g2[3] = v3 * s3;
    }
    sum[0] = u0, sum[1] = u1, sum[2] = u2, sum[3] = u3;
    bias_updates(b, sum, c0, n, b->s->dw_bias, b->s->dw_bias_out, b->k->dw_bias_factor, &b->rng[0]);
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
    if (n == 4 && part == NULL) { /* the common case: four whole rows, a pixel of w1f per input channel */
        const int8_t *r0 = w1 + c0 * cin, *r1 = r0 + cin, *r2 = r1 + cin, *r3 = r2 + cin;
        for (i = 0; i < cin; i++, w1f += 4) {
            w1f[0] = (float)r0[i], w1f[1] = (float)r1[i], w1f[2] = (float)r2[i], w1f[3] = (float)r3[i];
        }
        return;
    }
    for (k = 0; k < 4; k++) {
        const int8_t *row = w1 + (c0 + k) * cin;
        float *out = w1f + k;
        if (k >= n) {
            for (i = 0; i < cin; i++) {
                out[4 * i] = 0.0f;
            }
        } else if (part == NULL) {
            for (i = 0; i < cin; i++) {
                out[4 * i] = (float)row[i];
            }
        } else {
            const int8_t *sram = part->sram + (c0 + k) * part->count;
            for (i = 0; i < cin; i++) {
                const int32_t t = part->slot[i];
                out[4 * i] = (float)(t >= 0 ? sram[t] : row[i]);
            }
        }
    }
}

/* The QAS updates of rows c0..c0+n-1 of the trained pw1 weight (row by row: the PRNG order). The stream state
 * lives in a local and the rounding mode is decided once, so the loop keeps both in registers. */
static void update_rows(block_ctx *b, const float *gw, int32_t c0, int32_t n)
{
    const int32_t t_count = b->p->trained;
    const float lr = b->lr;
    uint32_t state = b->rng[2];
    int32_t k, t;
    for (k = 0; k < n; k++, gw += t_count) {
        int8_t *row = b->s->w1_train + (c0 + k) * t_count;
        const float f = b->k->w1_factor[c0 + k];
        if (b->stochastic) {
            for (t = 0; t < t_count; t++) {
                row[t] = tte_qas_update_s8(row[t], gw[t], lr, f, &state);
            }
        } else {
            for (t = 0; t < t_count; t++) {
                row[t] = tte_qas_update_s8(row[t], gw[t], lr, f, NULL);
            }
        }
    }
    b->rng[2] = state;
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
    float sum[4];
    int32_t c0, k, i;
    b.p = params, b.k = consts, b.s = state, b.lr = *lr, b.stochastic = state->rng_in != NULL;
    for (k = 0; k < 3; k++) {
        b.rng[k] = b.stochastic ? jump_state(consts->jump[k], *state->rng_in) : 0u;
    }
    for (i = 0; i < params->in_w; i++) {
        int32_t k0, o0, n;
        tte_block_dw_taps(i + params->dw.pad_left, params->kernel_w, params->dw.stride_w, params->out_w, &k0, &o0,
                          &n);
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
        dw_mask_bias(&b, g2, dw_mask, c0, n);
        tte_block_dw_grads(params, g2, dw_filter, col, xtaps, wt, pw1_mask, c0, n, g1, sum);
        bias_updates(&b, sum, c0, n, state->b1, state->b1_out, consts->b1_factor, &b.rng[1]);
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
