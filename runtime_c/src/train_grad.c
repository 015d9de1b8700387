/* Element-wise and shape gradients of the train step (tte/train/grad_ops.py): mask application, gradient sums,
 * mean, average pool and pad. Each output element is computed on its own, in the reference's order. */
#include "tte_train.h"
#include "tte_train_util.h"

/* A mask byte at a time: all set (the common case under ReLU6) copies eight values, none set writes eight zeros,
 * a mixed byte selects value by value. */
void tte_apply_mask_f32(int32_t size, const float *grad, const uint8_t *mask, float *out)
{
    int32_t i, k;
    for (i = 0; i + 8 <= size; i += 8, grad += 8, out += 8) {
        const uint32_t m = mask[i >> 3];
        if (m == 0xFFu) {
            if (out != grad) {
                out[0] = grad[0], out[1] = grad[1], out[2] = grad[2], out[3] = grad[3];
                out[4] = grad[4], out[5] = grad[5], out[6] = grad[6], out[7] = grad[7];
            }
        } else if (m == 0u) {
            out[0] = out[1] = out[2] = out[3] = out[4] = out[5] = out[6] = out[7] = 0.0f;
        } else {
            out[0] = (m & 0x01u) ? grad[0] : 0.0f, out[1] = (m & 0x02u) ? grad[1] : 0.0f;
            out[2] = (m & 0x04u) ? grad[2] : 0.0f, out[3] = (m & 0x08u) ? grad[3] : 0.0f;
            out[4] = (m & 0x10u) ? grad[4] : 0.0f, out[5] = (m & 0x20u) ? grad[5] : 0.0f;
            out[6] = (m & 0x40u) ? grad[6] : 0.0f, out[7] = (m & 0x80u) ? grad[7] : 0.0f;
        }
    }
    for (k = 0; i < size; i++, k++) {
        out[k] = ((mask[i >> 3] >> (i & 7)) & 1u) ? grad[k] : 0.0f;
    }
}

void tte_grad_add_f32(int32_t size, const float *a, const float *b, float *out)
{
    int32_t i;
    for (i = 0; i < size; i++) {
        out[i] = a[i] + b[i];
    }
}

void tte_mean_grad_f32(const tte_dims *in_dims, const float *grad, float *in_grad)
{
    const int32_t count = in_dims->h * in_dims->w, inner = in_dims->c;
    const float inv = 1.0f / (float)count;
    int32_t o, r, i;
    for (o = 0; o < in_dims->n; o++) {
        const float *g = grad + o * inner;
        for (r = 0; r < count; r++) {
            for (i = 0; i < inner; i++) {
                *in_grad++ = g[i] * inv;
            }
        }
    }
}

/* The number of window taps inside the image along one axis for the window starting at `start`. */
static int32_t taps_inside(int32_t start, int32_t kernel, int32_t size)
{
    return tte_min32(kernel, size - start) - tte_max32(0, -start);
}

/* The output position a tap at padded coordinate `p` (input + pad) and kernel offset k belongs to, or -1. */
static int32_t tap_output(int32_t p, int32_t k, int32_t stride, int32_t out_size)
{
    const int32_t t = p - k;
    if (t < 0 || t % stride != 0 || t / stride >= out_size) {
        return -1;
    }
    return t / stride;
}

void tte_avg_pool2d_grad_f32(const tte_pool_params *params, const tte_dims *grad_dims, const float *grad,
                             const tte_dims *in_dims, float *in_grad)
{
    const int32_t h = in_dims->h, w = in_dims->w, c = in_dims->c, oh = grad_dims->h, ow = grad_dims->w;
    int32_t y, x, ky, kx, ch;
    for (y = 0; y < h; y++) {
        for (x = 0; x < w; x++) {
            float *d = in_grad + (y * w + x) * c;
            for (ch = 0; ch < c; ch++) {
                d[ch] = 0.0f;
            }
            for (ky = 0; ky < params->kernel_h; ky++) {
                const int32_t py = tap_output(y + params->pad_top, ky, params->stride_h, oh);
                if (py < 0) {
                    continue;
                }
                for (kx = 0; kx < params->kernel_w; kx++) {
                    const int32_t px = tap_output(x + params->pad_left, kx, params->stride_w, ow);
                    int32_t count;
                    float inv;
                    const float *g;
                    if (px < 0) {
                        continue;
                    }
                    count = taps_inside(py * params->stride_h - params->pad_top, params->kernel_h, h) *
                            taps_inside(px * params->stride_w - params->pad_left, params->kernel_w, w);
                    inv = 1.0f / (float)count;
                    g = grad + (py * ow + px) * c;
                    for (ch = 0; ch < c; ch++) {
                        d[ch] = d[ch] + g[ch] * inv;
                    }
                }
            }
        }
    }
}

void tte_pad_grad_f32(const tte_pad_params *params, const tte_dims *grad_dims, const float *grad,
                      const tte_dims *in_dims, float *in_grad)
{
    int32_t n, y, x, c;
    for (n = 0; n < in_dims->n; n++) {
        for (y = 0; y < in_dims->h; y++) {
            for (x = 0; x < in_dims->w; x++) {
                const float *g = grad + (((n + params->before[0]) * grad_dims->h + y + params->before[1]) *
                                             grad_dims->w + x + params->before[2]) * grad_dims->c +
                                 params->before[3];
                for (c = 0; c < in_dims->c; c++) {
                    *in_grad++ = g[c];
                }
            }
        }
    }
}
