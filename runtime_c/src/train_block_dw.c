/* The depthwise part of the fused block backward (tte_block_grad.h, train_block_grad.c): the input gradient of
 * a group of four expanded channels through the depthwise layer, in the unfused kernel's order of additions. */
#include "tte_block_grad.h"
#include "tte_train_util.h"

/* The taps of input coordinate v along one axis (t = v + pad): the first valid kernel offset k0, its output
 * index o0 and the count n; the next taps are k0 + j stride at output o0 - j. */
void tte_block_dw_taps(int32_t t, int32_t k_size, int32_t stride, int32_t out_size, int32_t *k0, int32_t *o0,
                       int32_t *n)
{
    const int32_t lo = tte_max32(0, t - stride * (out_size - 1)), hi = tte_min32(k_size - 1, t);
    const int32_t k = lo + (t - lo) % stride;
    *n = k > hi ? 0 : (hi - k) / stride + 1;
    *k0 = k;
    *o0 = (t - k) / stride;
}

/* The partial sums of one pixel and lane k: the running sum g[k], or 0.0f for the first kernel row. */
#define DW_START(g)                                                                                              \
    float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;                                                            \
    if (!first) {                                                                                                \
        a0 = (g)[0], a1 = (g)[1], a2 = (g)[2], a3 = (g)[3];                                                      \
    }

/* One tap of the four lanes: das pixel r, the weights of lane k in w<j>0..3. */
#define DW_TAP3(r, j)                                                                                            \
    a0 = a0 + (r)[0] * w##j##0, a1 = a1 + (r)[1] * w##j##1, a2 = a2 + (r)[2] * w##j##2, a3 = a3 + (r)[3] * w##j##3

#define DW_STORE(g) (g)[0] = a0, (g)[1] = a1, (g)[2] = a2, (g)[3] = a3

/* One kernel row (three taps along x, stride_w 1) added to the partial depthwise input gradients of `count`
 * neighbouring pixels g[x][4] with all three taps, in tap order: g = ((g + r[0] w[0]) + r[-1] w[1]) + r[-2] w[2]
 * per lane, where r is the das pixel of the first pixel's first tap (kw 0) and w the kernel row [3][4]; first:
 * the sums start at 0.0f. `left`: also the pixel before, whose taps are kw 0 and 1 (its kw 2 output is outside);
 * `right`: also the pixel after, taps kw 1 and 2. The twelve weights stay in registers. */
static void dw_row3(float *g, const float *r, const float *w, int32_t count, int32_t first, int32_t left,
                    int32_t right)
{
    const float w00 = w[0], w01 = w[1], w02 = w[2], w03 = w[3], w10 = w[4], w11 = w[5], w12 = w[6], w13 = w[7];
    const float w20 = w[8], w21 = w[9], w22 = w[10], w23 = w[11];
    int32_t x;
    if (left) {
        DW_START(g - 4);
        DW_TAP3(r - 4, 0);
        DW_TAP3(r - 8, 1);
        DW_STORE(g - 4);
    }
    for (x = 0; x < count; x++, g += 4, r += 4) {
        DW_START(g);
        DW_TAP3(r, 0);
        DW_TAP3(r - 4, 1);
        DW_TAP3(r - 8, 2);
        DW_STORE(g);
    }
    if (right) {
        DW_START(g);
        DW_TAP3(r - 4, 1);
        DW_TAP3(r - 8, 2);
        DW_STORE(g);
    }
}

/* One kernel row added to the partial sums g[4] of one pixel, any taps along x (t: the column's (k0, o0, n)). */
static void dw_row_taps(float *g, const float *rrow, const float *wrow, const int16_t *t, int32_t sw, int32_t first)
{
    const float *r = rrow + 4 * t[1], *w = wrow + 4 * t[0];
    int32_t j;
    DW_START(g);
    for (j = 0; j < t[2]; j++, r -= 4, w += 4 * sw) {
        a0 = a0 + r[0] * w[0], a1 = a1 + r[1] * w[1], a2 = a2 + r[2] * w[2], a3 = a3 + r[3] * w[3];
    }
    DW_STORE(g);
}

/* The depthwise input gradient of the group's four lanes (gather form): g1[q][k] = sum over the taps (kh, then kw)
 * of q of das[p][k] * w[tap][k], from 0.0f. Row by row of the input, the kernel rows in order, each adding its
 * taps to the row's partial sums (which keeps every pixel's order of additions); the columns with all three taps
 * of a 3-wide stride-1 kernel in one run (dw_row3). xtaps holds (k0, o0, n) of every column (axis_taps); wt is
 * 4 KH KW floats. Then, pixel by pixel (ascending), the pw1 mask (spare lanes: 0) and the pw1 bias gradient
 * sums sum[4]. */
void tte_block_dw_grads(const tte_block_grad_params *p, const float *das, const int8_t *filter, const int32_t col[4],
                        const int16_t *xtaps, float *wt, const uint8_t *mask, int32_t c0, int32_t n, float *g1,
                        float sum[4])
{
    const int32_t in_w = p->in_w, ch = p->ch, sw = p->dw.stride_w, kw4 = 4 * p->kernel_w;
    const uint32_t all = (1u << n) - 1u;
    float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
    int32_t y, x, a, k, xa = in_w, xb = in_w, left = 0, right = 0;
    for (k = 0; k < p->kernel_h * p->kernel_w; k++) {
        const int8_t *f = filter + k * ch;
        wt[4 * k] = (float)f[col[0]], wt[4 * k + 1] = (float)f[col[1]];
        wt[4 * k + 2] = (float)f[col[2]], wt[4 * k + 3] = (float)f[col[3]];
    }
    if (sw == 1 && p->kernel_w == 3) { /* the columns [xa, xb) have all three taps; left, right: see dw_row3 */
        for (xa = 0; xa < in_w && xtaps[3 * xa + 2] != 3; xa++) {
        }
        for (xb = xa; xb < in_w && xtaps[3 * xb + 2] == 3; xb++) {
        }
        left = xb > xa && xa > 0 && xtaps[3 * xa - 3] == 0 && xtaps[3 * xa - 1] == 2;
        right = xb > xa && xb < in_w && xtaps[3 * xb] == 1 && xtaps[3 * xb + 2] == 2;
    }
    for (y = 0; y < p->in_h; y++, g1 += 4 * in_w) {
        int32_t ky0, oy0, ny;
        tte_block_dw_taps(y + p->dw.pad_top, p->kernel_h, p->dw.stride_h, p->out_h, &ky0, &oy0, &ny);
        for (x = 0; ny == 0 && x < 4 * in_w; x++) {
            g1[x] = 0.0f;
        }
        for (a = 0; a < ny; a++) {
            const float *rrow = das + 4 * (oy0 - a) * p->out_w, *wrow = wt + (ky0 + a * p->dw.stride_h) * kw4;
            for (x = 0; x < xa - left; x++) {
                dw_row_taps(g1 + 4 * x, rrow, wrow, xtaps + 3 * x, sw, a == 0);
            }
            if (xb > xa) {
                dw_row3(g1 + 4 * xa, rrow + 4 * xtaps[3 * xa + 1], wrow, xb - xa, a == 0, left, right);
            }
            for (x = xb + right; x < in_w; x++) {
                dw_row_taps(g1 + 4 * x, rrow, wrow, xtaps + 3 * x, sw, a == 0);
            }
        }
        for (x = 0; x < in_w; x++) {
            const uint32_t bits = mask != NULL ? tte_mask_bits4(mask, ch, y * in_w + x, c0, n) & all : all;
            float *g = g1 + 4 * x;
            const float a0 = (bits & 1u) ? g[0] : 0.0f, a1 = (bits & 2u) ? g[1] : 0.0f;
            const float a2 = (bits & 4u) ? g[2] : 0.0f, a3 = (bits & 8u) ? g[3] : 0.0f;
            g[0] = a0, g[1] = a1, g[2] = a2, g[3] = a3;
            s0 = s0 + a0, s1 = s1 + a1, s2 = s2 + a2, s3 = s3 + a3;
        }
    }
    sum[0] = s0, sum[1] = s1, sum[2] = s2, sum[3] = s3;
}
