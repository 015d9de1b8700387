/* Constant padding of a 4-D int8 tensor: rows of the innermost axis are copied, everything else is filled. */
#include "tte_shape.h"

static void fill(int8_t *dst, int32_t count, int8_t value)
{
    int32_t i;
    for (i = 0; i < count; i++) {
        dst[i] = value;
    }
}

void tte_pad_s8(const tte_pad_params *params, const tte_dims *in_dims, const int8_t *in, const tte_dims *out_dims,
                int8_t *out)
{
    const int8_t value = (int8_t)params->value;
    const int32_t *b = params->before;
    const int32_t oc = out_dims->c, row = out_dims->w * oc, plane = out_dims->h * row;
    int32_t n, y, x, i;
    for (n = 0; n < out_dims->n; n++) {
        int8_t *dn = out + n * plane;
        const int32_t in_n = n - b[0];
        if (in_n < 0 || in_n >= in_dims->n) {
            fill(dn, plane, value);
            continue;
        }
        for (y = 0; y < out_dims->h; y++) {
            int8_t *dy = dn + y * row;
            const int32_t in_y = y - b[1];
            if (in_y < 0 || in_y >= in_dims->h) {
                fill(dy, row, value);
                continue;
            }
            for (x = 0; x < out_dims->w; x++) {
                int8_t *dx = dy + x * oc;
                const int32_t in_x = x - b[2];
                const int8_t *src;
                if (in_x < 0 || in_x >= in_dims->w) {
                    fill(dx, oc, value);
                    continue;
                }
                src = in + ((in_n * in_dims->h + in_y) * in_dims->w + in_x) * in_dims->c;
                fill(dx, b[3], value);
                for (i = 0; i < in_dims->c; i++) {
                    dx[b[3] + i] = src[i];
                }
                fill(dx + b[3] + in_dims->c, oc - b[3] - in_dims->c, value);
            }
        }
    }
}
