/* Fused weight updates of conv2d and depthwise_conv2d (tte_train.h).
 *
 * For each written weight element, in row-major order of the written weights (conv: o, kh, kw, t; depthwise:
 * kh, kw, t * M + m), the gradient g = sum over the output positions p in raster order of
 * grad[p, oc] * (float)(x[tap of p, t] + input_offset) is formed from 0.0f, then the element is updated with
 * tte_qas_update_s8 (one PRNG draw each). Four adjacent elements are summed at a time in registers (one pass over
 * the positions), then updated in order; pointwise convolutions (1x1, stride 1, no padding) sum four output
 * channels by four input columns (sixteen sums) and update the four rows with one PRNG copy each, started where
 * the row's draws begin in row-major order. Taps outside the image are skipped: the reference adds their
 * zero-padded products (+-0.0), which cannot change a sum that starts at +0.0.
 */
#include "tte_train.h"
#include "tte_train_math.h"
#include "tte_train_util.h"

/* The output positions whose tap (ky, kx) lies inside the image: oy in [oy0, oy1), ox in [ox0, ox1). */
typedef struct {
    int32_t oy0, oy1, ox0, ox1;
} tap_range;

typedef struct {
    const tte_conv_geom *geom;
    const int8_t *in;
    const float *grad;
    int32_t h, w, t_count, ow, cout, x_off, ky, kx;
    tap_range r;
} sum_args;

/* Output indices o with 0 <= o * stride - pad + k < size (and o < out_size). */
static void axis_range(int32_t k, int32_t stride, int32_t pad, int32_t size, int32_t out_size, int32_t *lo,
                       int32_t *hi)
{
    const int32_t first = pad - k, last = size - 1 + pad - k;
    *lo = first <= 0 ? 0 : (first + stride - 1) / stride;
    *hi = last < 0 ? 0 : tte_min32(out_size, last / stride + 1);
    if (*hi < *lo) {
        *hi = *lo;
    }
}

static sum_args sum_setup(const tte_conv_geom *geom, const tte_dims *in_dims, const int8_t *in,
                          const tte_dims *grad_dims, const float *grad, int32_t x_off)
{
    sum_args s;
    s.geom = geom;
    s.in = in;
    s.grad = grad;
    s.h = in_dims->h;
    s.w = in_dims->w;
    s.t_count = in_dims->c;
    s.ow = grad_dims->w;
    s.cout = grad_dims->c;
    s.x_off = x_off;
    s.ky = s.kx = 0;
    s.r.oy0 = s.r.oy1 = s.r.ox0 = s.r.ox1 = 0;
    return s;
}

static void sum_tap(sum_args *s, const tte_dims *grad_dims, int32_t ky, int32_t kx)
{
    s->ky = ky;
    s->kx = kx;
    axis_range(ky, s->geom->stride_h, s->geom->pad_top, s->h, grad_dims->h, &s->r.oy0, &s->r.oy1);
    axis_range(kx, s->geom->stride_w, s->geom->pad_left, s->w, grad_dims->w, &s->r.ox0, &s->r.ox1);
}

/* The saved input pixel read by output position (oy, ox0) at the current tap; the next positions of the row
 * follow every x_step values. */
static const int8_t *tap_row(const sum_args *s, int32_t oy)
{
    const int32_t iy = oy * s->geom->stride_h - s->geom->pad_top + s->ky;
    const int32_t ix = s->r.ox0 * s->geom->stride_w - s->geom->pad_left + s->kx;
    return s->in + (iy * s->w + ix) * s->t_count;
}

/* acc[j] = sum over positions of grad[p, gcol[j]] * (float)(x[tap, xcol[j]] + x_off), j < 4. */
static void sums4(const sum_args *s, const int32_t gcol[4], const int32_t xcol[4], float acc[4])
{
    const int32_t g0 = gcol[0], g1 = gcol[1], g2 = gcol[2], g3 = gcol[3];
    const int32_t x0 = xcol[0], x1 = xcol[1], x2 = xcol[2], x3 = xcol[3], off = s->x_off;
    const int32_t x_step = s->geom->stride_w * s->t_count;
    float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
    int32_t oy, ox;
    for (oy = s->r.oy0; oy < s->r.oy1; oy++) {
        const int8_t *x = tap_row(s, oy);
        const float *g = s->grad + (oy * s->ow + s->r.ox0) * s->cout;
        for (ox = s->r.ox0; ox < s->r.ox1; ox++, x += x_step, g += s->cout) {
            a0 = a0 + g[g0] * (float)(x[x0] + off);
            a1 = a1 + g[g1] * (float)(x[x1] + off);
            a2 = a2 + g[g2] * (float)(x[x2] + off);
            a3 = a3 + g[g3] * (float)(x[x3] + off);
        }
    }
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = a2;
    acc[3] = a3;
}

/* sums4 for conv: one gradient column o, input columns t0 .. t0+3 (adjacent bytes). */
static void conv_sums4(const sum_args *s, int32_t o, int32_t t0, float acc[4])
{
    const int32_t off = s->x_off, x_step = s->geom->stride_w * s->t_count;
    float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
    int32_t oy, ox;
    for (oy = s->r.oy0; oy < s->r.oy1; oy++) {
        const int8_t *x = tap_row(s, oy) + t0;
        const float *g = s->grad + (oy * s->ow + s->r.ox0) * s->cout + o;
        for (ox = s->r.ox0; ox < s->r.ox1; ox++, x += x_step, g += s->cout) {
            const float d = *g;
            a0 = a0 + d * (float)(x[0] + off);
            a1 = a1 + d * (float)(x[1] + off);
            a2 = a2 + d * (float)(x[2] + off);
            a3 = a3 + d * (float)(x[3] + off);
        }
    }
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = a2;
    acc[3] = a3;
}

/* The same for one column. */
static float sum1(const sum_args *s, int32_t gcol, int32_t xcol)
{
    const int32_t x_step = s->geom->stride_w * s->t_count;
    float a = 0.0f;
    int32_t oy, ox;
    for (oy = s->r.oy0; oy < s->r.oy1; oy++) {
        const int8_t *x = tap_row(s, oy) + xcol;
        const float *g = s->grad + (oy * s->ow + s->r.ox0) * s->cout + gcol;
        for (ox = s->r.ox0; ox < s->r.ox1; ox++, x += x_step, g += s->cout) {
            a = a + *g * (float)(*x + s->x_off);
        }
    }
    return a;
}

/* Sums and updates `n` written elements of one tap: gradient columns gcol, input columns xcol, the weights at
 * w[wcol[j]], in order j = 0 .. n-1. `conv`: every gcol is the same and xcol counts up by one. */
static void update_columns(const sum_args *s, int conv, int32_t n, const int32_t *gcol, const int32_t *xcol,
                           const int32_t *wcol, const float *factor, float lr, uint32_t *rng, int8_t *w)
{
    float acc[4];
    int32_t j0, j;
    for (j0 = 0; j0 < n; j0 += 4) {
        const int32_t len = tte_min32(4, n - j0);
        if (len == 4 && conv) {
            conv_sums4(s, gcol[j0], xcol[j0], acc);
        } else if (len == 4) {
            sums4(s, gcol + j0, xcol + j0, acc);
        } else {
            for (j = 0; j < len; j++) {
                acc[j] = sum1(s, gcol[j0 + j], xcol[j0 + j]);
            }
        }
        for (j = 0; j < len; j++) {
            int8_t *q = w + wcol[j0 + j];
            *q = tte_qas_update_s8(*q, acc[j], lr, factor[gcol[j0 + j]], rng);
        }
    }
}

#define COLUMNS 16 /* columns set up at a time (stack: three int32 arrays) */

/* --- pointwise: a 1x1 kernel, stride 1, no padding, so g[o, t] = sum over pixels p of grad[p, o] * x[p, t] ----- */

/* acc[4 r + j] = sum over pixels p in raster order of grad[p, r] * (float)(x[p, j] + off): four output channels
 * (adjacent floats) times four input columns (adjacent bytes), sixteen sums in registers. */
static TTE_NOINLINE void pw_wsums(const float *grad, int32_t cout, const int8_t *x, int32_t t_count,
                                  int32_t pixels, int32_t off, float acc[16])
{
    TTE_F32_BLOCK4X4_DECL;
    int32_t p;
    for (p = 0; p < pixels; p++, grad += cout, x += t_count) {
        const float x0 = (float)(x[0] + off), x1 = (float)(x[1] + off), x2 = (float)(x[2] + off);
        const float x3 = (float)(x[3] + off);
        float d = grad[0];
        TTE_F32_ROW4(0, d, x0, x1, x2, x3);
        d = grad[1];
        TTE_F32_ROW4(1, d, x0, x1, x2, x3);
        d = grad[2];
        TTE_F32_ROW4(2, d, x0, x1, x2, x3);
        d = grad[3];
        TTE_F32_ROW4(3, d, x0, x1, x2, x3);
    }
    TTE_F32_BLOCK4X4_STORE(acc);
}

/* The state after n more draws. */
static uint32_t rng_skip(uint32_t x, int32_t n)
{
    for (; n > 0; n--) {
        x = tte_xorshift32(x);
    }
    return x;
}

typedef struct {
    const float *factor;
    const int16_t *channels; /* NULL: the written columns are 0 .. T-1 */
    float lr;
    int32_t t_count, pixels, x_off, wc;
} pw_update;

/* Updates columns t0 + j0 .. t0 + 3 of one row with their sums g[j]; the PRNG state is kept in a local. */
static void update_row(const pw_update *u, int8_t *row, int32_t t0, int32_t j0, const float *g, float f,
                       uint32_t *rng)
{
    int32_t j;
    if (rng != NULL) {
        uint32_t x = *rng;
        for (j = j0; j < 4; j++) {
            int8_t *q = row + (u->channels != NULL ? u->channels[t0 + j] : t0 + j);
            *q = tte_qas_update_s8(*q, g[j], u->lr, f, &x);
        }
        *rng = x;
        return;
    }
    for (j = j0; j < 4; j++) {
        int8_t *q = row + (u->channels != NULL ? u->channels[t0 + j] : t0 + j);
        *q = tte_qas_update_s8(*q, g[j], u->lr, f, NULL);
    }
}

/* Output channels o .. o+3, all T >= 4 columns: four columns at a time (the last group overlaps the previous one
 * and updates only its new columns). Each row draws from its own copy of the PRNG, started where the row's first
 * draw falls in the reference's row-major order, so the draws stay those of the reference. */
static void pw_update_rows4(const pw_update *u, const int8_t *in, const float *grad, int32_t cout, int32_t o,
                            uint32_t *rng, int8_t *filter)
{
    uint32_t st[4];
    float acc[16];
    int32_t t0, done = 0, r;
    st[0] = rng != NULL ? *rng : 0u;
    for (r = 1; r < 4; r++) {
        st[r] = rng != NULL ? rng_skip(st[r - 1], u->t_count) : 0u;
    }
    while (done < u->t_count) {
        t0 = tte_min32(done, u->t_count - 4);
        pw_wsums(grad + o, cout, in + t0, u->t_count, u->pixels, u->x_off, acc);
        for (r = 0; r < 4; r++) {
            update_row(u, filter + (o + r) * u->wc, t0, done - t0, acc + 4 * r, u->factor[o + r],
                       rng != NULL ? &st[r] : NULL);
        }
        done = t0 + 4;
    }
    if (rng != NULL) {
        *rng = st[3];
    }
}

void tte_conv2d_update_weight_s8_f32(const tte_update_params *params, const tte_conv_geom *geom,
                                     const float *factor, const float *lr, const tte_dims *in_dims,
                                     const int8_t *in, const tte_dims *grad_dims, const float *grad,
                                     const int16_t *channels, const tte_dims *filter_dims, uint32_t *rng,
                                     int8_t *filter)
{
    const int32_t t_count = in_dims->c, wc = filter_dims->c, kh = filter_dims->h, kw = filter_dims->w;
    const int dense = wc == t_count;
    sum_args s = sum_setup(geom, in_dims, in, grad_dims, grad, params->input_offset);
    int32_t gcol[COLUMNS], xcol[COLUMNS], wcol[COLUMNS];
    int32_t o = 0, ky, kx, t0, j;
    if (kh == 1 && kw == 1 && geom->stride_h == 1 && geom->stride_w == 1 && geom->pad_top == 0 &&
        geom->pad_left == 0 && grad_dims->h == in_dims->h && grad_dims->w == in_dims->w && t_count >= 4) {
        const pw_update u = {factor, dense ? NULL : channels, *lr, t_count, in_dims->h * in_dims->w,
                             params->input_offset, wc};
        for (; o + 4 <= grad_dims->c; o += 4) {
            pw_update_rows4(&u, in, grad, grad_dims->c, o, rng, filter);
        }
    }
    for (; o < grad_dims->c; o++) { /* rows left: the general path */
        for (ky = 0; ky < kh; ky++) {
            for (kx = 0; kx < kw; kx++) {
                int8_t *row = filter + ((o * kh + ky) * kw + kx) * wc;
                sum_tap(&s, grad_dims, ky, kx);
                for (t0 = 0; t0 < t_count; t0 += COLUMNS) {
                    const int32_t n = tte_min32(COLUMNS, t_count - t0);
                    for (j = 0; j < n; j++) {
                        gcol[j] = o;
                        xcol[j] = t0 + j;
                        wcol[j] = dense ? t0 + j : channels[t0 + j];
                    }
                    update_columns(&s, 1, n, gcol, xcol, wcol, factor, *lr, rng, row);
                }
            }
        }
    }
}

void tte_depthwise_conv2d_update_weight_s8_f32(const tte_update_params *params, const tte_conv_geom *geom,
                                               const float *factor, const float *lr, const tte_dims *in_dims,
                                               const int8_t *in, const tte_dims *grad_dims, const float *grad,
                                               const int16_t *channels, const tte_dims *filter_dims,
                                               uint32_t *rng, int8_t *filter)
{
    const int32_t mult = geom->ch_mult, written = in_dims->c * mult, wc = filter_dims->c;
    const int32_t kh = filter_dims->h, kw = filter_dims->w;
    const int dense = wc == written;
    sum_args s = sum_setup(geom, in_dims, in, grad_dims, grad, params->input_offset);
    int32_t gcol[COLUMNS], xcol[COLUMNS], wcol[COLUMNS];
    int32_t ky, kx, j0, j;
    for (ky = 0; ky < kh; ky++) {
        for (kx = 0; kx < kw; kx++) {
            int8_t *row = filter + (ky * kw + kx) * wc;
            sum_tap(&s, grad_dims, ky, kx);
            for (j0 = 0; j0 < written; j0 += COLUMNS) {
                const int32_t n = tte_min32(COLUMNS, written - j0);
                for (j = 0; j < n; j++) { /* column t M + m is output channel channels[t] M + m */
                    xcol[j] = (j0 + j) / mult;
                    gcol[j] = channels[xcol[j]] * mult + (j0 + j) % mult;
                    wcol[j] = dense ? j0 + j : gcol[j];
                }
                update_columns(&s, 0, n, gcol, xcol, wcol, factor, *lr, rng, row);
            }
        }
    }
}
