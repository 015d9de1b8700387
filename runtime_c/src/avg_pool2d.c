/* Average pooling: window sums over the part of the window inside the image, one rounded division per output
 * value (by the number of valid taps, so padding does not count). */
#include "tte_fixedpoint.h"
#include "tte_pool.h"

static int32_t max32(int32_t a, int32_t b)
{
    return a > b ? a : b;
}

static int32_t min32(int32_t a, int32_t b)
{
    return a < b ? a : b;
}

void tte_avg_pool2d_s8(const tte_pool_params *params, const tte_dims *in_dims, const int8_t *in,
                       const tte_dims *out_dims, int8_t *out)
{
    const int32_t h = in_dims->h, w = in_dims->w, c = in_dims->c;
    int32_t n, oy, ox, ch, ky, kx;
    for (n = 0; n < out_dims->n; n++) {
        for (oy = 0; oy < out_dims->h; oy++) {
            const int32_t iy0 = oy * params->stride_h - params->pad_top;
            const int32_t ky_start = max32(0, -iy0), ky_end = min32(params->kernel_h, h - iy0);
            for (ox = 0; ox < out_dims->w; ox++) {
                const int32_t ix0 = ox * params->stride_w - params->pad_left;
                const int32_t kx_start = max32(0, -ix0), kx_end = min32(params->kernel_w, w - ix0);
                const int32_t count = (ky_end - ky_start) * (kx_end - kx_start);
                int8_t *dst = out + ((n * out_dims->h + oy) * out_dims->w + ox) * c;
                for (ch = 0; ch < c; ch++) {
                    int32_t acc = 0, avg;
                    for (ky = ky_start; ky < ky_end; ky++) {
                        const int8_t *x = in + (((n * h + iy0 + ky) * w + ix0 + kx_start) * c + ch);
                        for (kx = kx_start; kx < kx_end; kx++) {
                            acc += *x;
                            x += c;
                        }
                    }
                    /* C division truncates: adding +-count/2 first rounds half away from zero. count >= 1
                     * because the pads are smaller than the kernel. */
                    avg = acc > 0 ? (acc + count / 2) / count : (acc - count / 2) / count;
                    dst[ch] = (int8_t)tte_clamp(avg, params->act_min, params->act_max);
                }
            }
        }
    }
}
