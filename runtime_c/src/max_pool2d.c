/* Max pooling, forward (plain and with arg-max codes for training) and the gradient routed to the arg-max. */
#include "tte_fixedpoint.h"
#include "tte_max_pool.h"

static int32_t max32(int32_t a, int32_t b)
{
    return a > b ? a : b;
}

static int32_t min32(int32_t a, int32_t b)
{
    return a < b ? a : b;
}

/* One output position: the window's clipped tap range. */
typedef struct {
    int32_t iy0, ix0, ky0, ky1, kx0, kx1;
} window;

static window window_at(const tte_pool_params *p, const tte_dims *in_dims, int32_t oy, int32_t ox)
{
    window win;
    win.iy0 = oy * p->stride_h - p->pad_top;
    win.ix0 = ox * p->stride_w - p->pad_left;
    win.ky0 = max32(0, -win.iy0);
    win.ky1 = min32(p->kernel_h, in_dims->h - win.iy0);
    win.kx0 = max32(0, -win.ix0);
    win.kx1 = min32(p->kernel_w, in_dims->w - win.ix0);
    return win;
}

/* Maximum of channel ch over the window (-128 when empty) and the code of its first occurrence. */
static int32_t window_max(const tte_pool_params *p, const tte_dims *d, const int8_t *in, const window *win,
                          int32_t ch, int32_t *code)
{
    const int32_t none = p->kernel_h * p->kernel_w;
    int32_t best = -128, ky, kx;
    *code = none;
    for (ky = win->ky0; ky < win->ky1; ky++) {
        const int8_t *x = in + ((win->iy0 + ky) * d->w + win->ix0 + win->kx0) * d->c + ch;
        for (kx = win->kx0; kx < win->kx1; kx++) {
            if (*code == none || *x > best) { /* strict: the first maximal tap wins */
                best = *x;
                *code = ky * p->kernel_w + kx;
            }
            x += d->c;
        }
    }
    return best;
}

static void pool(const tte_pool_params *p, int32_t bits, const tte_dims *in_dims, const int8_t *in,
                 const tte_dims *out_dims, int8_t *out, uint8_t *argmax)
{
    const int32_t c = in_dims->c, cut = p->kernel_h * p->kernel_w;
    int32_t n, oy, ox, ch, i = 0;
    for (n = 0; n < out_dims->n; n++) {
        const int8_t *img = in + n * in_dims->h * in_dims->w * c;
        for (oy = 0; oy < out_dims->h; oy++) {
            for (ox = 0; ox < out_dims->w; ox++) {
                const window win = window_at(p, in_dims, oy, ox);
                for (ch = 0; ch < c; ch++, i++) {
                    int32_t code;
                    const int32_t m = window_max(p, in_dims, img, &win, ch, &code);
                    out[i] = (int8_t)tte_clamp(m, p->act_min, p->act_max);
                    if (argmax != NULL) {
                        const int32_t bit = i * bits;
                        if (m < p->act_min || m > p->act_max) {
                            code = cut;
                        }
                        if ((bit & 7) == 0) {
                            argmax[bit >> 3] = 0;
                        }
                        argmax[bit >> 3] = (uint8_t)(argmax[bit >> 3] | (code << (bit & 7)));
                    }
                }
            }
        }
    }
}

void tte_max_pool2d_s8(const tte_pool_params *params, const tte_dims *in_dims, const int8_t *in,
                       const tte_dims *out_dims, int8_t *out)
{
    pool(params, 0, in_dims, in, out_dims, out, NULL);
}

void tte_max_pool2d_mask_s8(const tte_pool_params *params, int32_t index_bits, const tte_dims *in_dims,
                            const int8_t *in, const tte_dims *out_dims, int8_t *out, uint8_t *argmax)
{
    pool(params, index_bits, in_dims, in, out_dims, out, argmax);
}

void tte_max_pool2d_grad_f32(const tte_pool_params *params, int32_t index_bits, const tte_dims *grad_dims,
                             const float *grad, const uint8_t *argmax, const tte_dims *in_dims, float *in_grad)
{
    const int32_t c = in_dims->c, cut = params->kernel_h * params->kernel_w;
    const int32_t mask = (1 << index_bits) - 1;
    const int32_t total = in_dims->n * in_dims->h * in_dims->w * c;
    int32_t n, oy, ox, ch, i = 0;
    for (n = 0; n < total; n++) {
        in_grad[n] = 0.0f;
    }
    for (n = 0; n < grad_dims->n; n++) {
        float *img = in_grad + n * in_dims->h * in_dims->w * c;
        for (oy = 0; oy < grad_dims->h; oy++) {
            for (ox = 0; ox < grad_dims->w; ox++) {
                const int32_t iy0 = oy * params->stride_h - params->pad_top;
                const int32_t ix0 = ox * params->stride_w - params->pad_left;
                for (ch = 0; ch < c; ch++, i++) {
                    const int32_t bit = i * index_bits;
                    const int32_t code = (argmax[bit >> 3] >> (bit & 7)) & mask;
                    if (code < cut) {
                        const int32_t ky = code / params->kernel_w, kx = code - ky * params->kernel_w;
                        img[((iy0 + ky) * in_dims->w + ix0 + kx) * c + ch] += grad[i];
                    }
                }
            }
        }
    }
}
