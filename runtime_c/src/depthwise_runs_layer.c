/* Whole 3x3 depthwise layers as runs (tte_dw_runs, tte_depthwise_fast.h): every output row is a run of whole
 * windows plus, at a cut left or right edge, a one-window run whose window is moved inside the image with its
 * taps shifted. Separate from depthwise_runs.c, which holds the runs themselves (assembly and portable C): this
 * file only plans them over a layer and calls them through the declarations of tte_depthwise_fast.h.
 */
#include "tte_depthwise_fast.h"
#include "tte_train_util.h"

/* True when every 3x3 window is cut by at most one row or column on each side and the image is at least 3x3:
 * then a cut window equals a whole window moved inside the image by one, with its taps shifted (and zero taps
 * where the cut ones were), so that every pixel takes a run (tte_dw_runs). Output images of fewer than
 * TTE_DW_RUNS_MIN_PIXELS pixels keep the per-pixel loop: the shifted taps and the calls cost more there. */
#ifndef TTE_DW_RUNS_MIN_PIXELS
#define TTE_DW_RUNS_MIN_PIXELS 64
#endif

int tte_dw_runs_ok(const tte_dw_args *a)
{
    const int32_t last_x = (a->ow - 1) * a->stride_w - a->pad_left, last_y = (a->oh - 1) * a->stride_h - a->pad_top;
    return a->h >= 3 && a->w >= 3 && a->pad_left <= 1 && a->pad_top <= 1 && last_x + 3 <= a->w + 1 &&
           last_y + 3 <= a->h + 1 && a->oh * a->ow >= TTE_DW_RUNS_MIN_PIXELS;
}

/* Window taps for a window moved by (sy, sx): tap (ky, kx) is the kernel's (ky + sy, kx + sx), zero outside. */
static void shift_taps(const tte_dw_tap *taps, int32_t sy, int32_t sx, tte_dw_tap *dst)
{
    static const tte_dw_tap zero; /* all zero */
    const int32_t y0 = sy < 0 ? 1 : 0, y1 = sy > 0 ? 2 : 3, x0 = sx < 0 ? 1 : 0, x1 = sx > 0 ? 2 : 3;
    int32_t t, ky, kx;
    for (t = 0; t < 9; t++) {
        dst[t] = zero;
    }
    for (ky = y0; ky < y1; ky++) {
        for (kx = x0; kx < x1; kx++) {
            dst[3 * ky + kx] = taps[3 * (ky + sy) + kx + sx];
        }
    }
}

/* One run of `count` windows of channels [c, c + 4) starting at input (iy, ix), outputs from element `at`. */
static void run_at(const tte_dw_args *a, tte_dw_run3 *r, int32_t c, int32_t n, int32_t iy, int32_t ix,
                   int32_t count, int8_t *out, int32_t at, int mask)
{
    const int8_t *x = a->in + ((n * a->h + iy) * a->w + ix) * a->c + c;
    if (mask) {
        tte_dw_run3_mask(r, x, out + at, count, at);
    } else {
        tte_dw_run3_plain(r, x, out + at, count);
    }
}

/* Channels [c, c + 4) of a 3x3 layer of tte_dw_runs_ok in the fast requantization: per output row, the left window (if
 * cut), the run of whole windows and the right window (if cut), each a run of tte_dw_run3 (shifted taps at the
 * edges). */
void tte_dw_runs(const tte_dw_args *a, int8_t *out, int32_t c, int mask)
{
    tte_dw_run3 r[3]; /* windows cut on the left, whole, cut on the right */
    tte_dw_tap taps[9];
    int32_t n, oy, j, sy_built = 2;
    tte_dw_widen_taps(a, c, taps);
    tte_dw_run3_make(a, c, taps, &r[1]);
    r[0] = r[1];
    r[2] = r[1];
    for (n = 0; n < a->n; n++) {
        for (oy = 0; oy < a->oh; oy++) {
            const int32_t iy0 = oy * a->stride_h - a->pad_top;
            const int32_t sy = iy0 < 0 ? 1 : (iy0 + 3 > a->h ? -1 : 0);
            const int32_t at_row = ((n * a->oh + oy) * a->ow) * a->c + c;
            int32_t ox = 0, ix0 = -a->pad_left;
            if (sy != sy_built) {
                for (j = 0; j < 3; j++) {
                    shift_taps(taps, sy, 1 - j, r[j].taps);
                }
                sy_built = sy;
            }
            if (ix0 < 0) {
                run_at(a, &r[0], c, n, iy0 + sy, 0, 1, out, at_row, mask);
                ox = 1;
                ix0 += a->stride_w;
            }
            if (ox < a->ow && ix0 + 3 <= a->w) {
                const int32_t count = tte_min32(a->ow - ox, (a->w - 3 - ix0) / a->stride_w + 1);
                run_at(a, &r[1], c, n, iy0 + sy, ix0, count, out, at_row + ox * a->c, mask);
                ox += count;
                ix0 += count * a->stride_w;
            }
            if (ox < a->ow) {
                run_at(a, &r[2], c, n, iy0 + sy, ix0 - 1, 1, out, at_row + ox * a->c, mask);
            }
        }
    }
}
