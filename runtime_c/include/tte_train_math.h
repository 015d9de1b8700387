/* tte runtime: the float32 building blocks of the train step, bit-exact with tte/train/fp32.py.
 *
 * Rules (the same as the numpy reference's, so that host and Cortex-M builds give identical bits):
 * - every value is an IEEE single and every + - * / is rounded on its own: build with -ffp-contract=off (GCC's
 *   default only in ISO C modes such as -std=c99) and without -ffast-math; no double, no long double, no libm;
 * - float literals carry the f suffix (a double constant would promote the whole expression); the polynomial
 *   constants are written as hexadecimal literals of the exact float32 values the reference uses;
 * - FLT_EVAL_METHOD must be 0 (x86-64 SSE, ARM VFP, soft float): x87 extended precision is rejected below.
 * The functions are static inline so that each kernel file (and tests) gets them without a call.
 */
#ifndef TTE_TRAIN_MATH_H
#define TTE_TRAIN_MATH_H

#include <float.h>
#include <stdint.h>

#if defined(FLT_EVAL_METHOD) && FLT_EVAL_METHOD != 0
#error "tte train kernels need FLT_EVAL_METHOD == 0 (float arithmetic in float precision)"
#endif

typedef union {
    float f;
    uint32_t u;
} tte_f32_bits;

/* floor(x) as int32 for |x| < 2^31 (tte.train.fp32.floor_f32): truncate, then step down if that rounded up. */
static inline int32_t tte_floor_i32(float x)
{
    int32_t t = (int32_t)x;
    if ((float)t > x) {
        t -= 1;
    }
    return t;
}

/* 2^k for k in [-126, 127], built from the exponent bits (exact). */
static inline float tte_pow2_f32(int32_t k)
{
    tte_f32_bits b;
    b.u = (uint32_t)(k + 127) << 23;
    return b.f;
}

/* e^x in single precision (tte.train.fp32.exp_f32, Cephes expf): 0 below -87, x clamped at 88;
 * n = floor(x log2(e) + 1/2), r = (x - n C1) - n C2, y = (p(r) r^2 + r) + 1, times 2^n. Relative error
 * below 3e-7 over [-87, 88]. NaN gives 0 (the reference gives NaN; a NaN here means training has diverged). */
static inline float tte_exp_f32(float x)
{
    float n, r, p, y;
    if (!(x >= -87.0f)) {
        return 0.0f;
    }
    if (x > 88.0f) {
        x = 88.0f;
    }
    n = (float)tte_floor_i32(x * 0x1.715476p+0f + 0.5f); /* log2(e) */
    r = (x - n * 0x1.63p-1f) - n * -0x1.bd0106p-13f;    /* ln(2) = C1 + C2 */
    p = 0x1.a0d2cep-13f;                                 /* 1.9875691500e-4 */
    p = p * r + 0x1.6e879cp-10f;                         /* 1.3981999507e-3 */
    p = p * r + 0x1.111210p-7f;                          /* 8.3334519073e-3 */
    p = p * r + 0x1.555382p-5f;                          /* 4.1665795894e-2 */
    p = p * r + 0x1.555554p-3f;                          /* 1.6666665459e-1 */
    p = p * r + 0.5f;                                    /* 5.0000001201e-1 */
    y = (p * (r * r) + r) + 1.0f;
    return y * tte_pow2_f32((int32_t)n); /* n in [-125, 127] */
}

/* Natural log of a positive normal single (tte.train.fp32.log_f32, Cephes logf): x = m 2^e with m in
 * [sqrt(1/2), sqrt(2)), a polynomial in m - 1. Zero, negative, subnormal, infinite or NaN input: unspecified. */
static inline float tte_log_f32(float x)
{
    tte_f32_bits b;
    int32_t e;
    float m, z, p, y, fe;
    b.f = x;
    e = (int32_t)((b.u >> 23) & 0xFFu) - 126; /* frexp: x = m 2^e, m in [0.5, 1) */
    b.u = (b.u & 0x807FFFFFu) | (126u << 23);
    m = b.f;
    if (m < 0x1.6a09e6p-1f) { /* sqrt(1/2) */
        e -= 1;
        m = (m + m) - 1.0f;
    } else {
        m = m - 1.0f;
    }
    z = m * m;
    p = 0x1.204376p-4f;         /* 7.0376836292e-2 */
    p = p * m + -0x1.d7a370p-4f; /* -1.1514610310e-1 */
    p = p * m + 0x1.de4a34p-4f;  /* 1.1676998740e-1 */
    p = p * m + -0x1.fcba9ep-4f; /* -1.2420140846e-1 */
    p = p * m + 0x1.23d37ep-3f;  /* 1.4249322787e-1 */
    p = p * m + -0x1.555ca0p-3f; /* -1.6668057665e-1 */
    p = p * m + 0x1.999d58p-3f;  /* 2.0000714765e-1 */
    p = p * m + -0x1.fffff8p-3f; /* -2.4999993993e-1 */
    p = p * m + 0x1.555554p-2f;  /* 3.3333331174e-1 */
    y = (p * m) * z;
    fe = (float)e;
    y = y + fe * -0x1.bd0106p-13f;
    y = y - 0.5f * z;
    return (m + y) + fe * 0x1.63p-1f;
}

/* Marsaglia's xorshift32 (13, 17, 5): the next state, which is also the draw. state != 0. */
static inline uint32_t tte_xorshift32(uint32_t x)
{
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return x;
}

/* A draw as a single in [0, 1): (x >> 8) 2^-24, exact. */
static inline float tte_uniform_f32(uint32_t x)
{
    return (float)(x >> 8) * 0x1p-24f;
}

/* The integer step of an update delta (tte.train.fp32.round_update): delta clamped to +-2^24, then
 * stochastic floor(delta + u) with u the next draw of *rng (one draw per call), or, when rng is NULL,
 * nearest (half away from zero). Result in [-2^24, 2^24 + 1]. A NaN delta gives 0 (a draw is still consumed;
 * the reference's result is platform-dependent there). */
static inline int32_t tte_round_step_f32(float delta, uint32_t *rng)
{
    const float d = delta != delta ? 0.0f
                                   : (delta < -16777216.0f ? -16777216.0f
                                                           : (delta > 16777216.0f ? 16777216.0f : delta));
    if (rng != 0) {
        const uint32_t x = tte_xorshift32(*rng);
        *rng = x;
        return tte_floor_i32(d + tte_uniform_f32(x));
    }
    return (int32_t)(d + (d >= 0.0f ? 0.5f : -0.5f));
}

/* The QAS update of one int8 weight: q + step(-((lr g) f)) saturated to [-127, 127]. A delta beyond +-512
 * saturates the weight whether it is clamped there or at +-2^24 (tte_round_step_f32), so the common case needs
 * one comparison: |delta| <= 512 (false for NaN). */
static inline int8_t tte_qas_update_s8(int8_t q, float g, float lr, float factor, uint32_t *rng)
{
    tte_f32_bits d;
    int32_t v;
    d.f = -((lr * g) * factor);
    if ((d.u & 0x7FFFFFFFu) > 0x44000000u) { /* |d| > 512.0f or NaN, on the bits: fewer instructions */
        d.f = d.f != d.f ? 0.0f : (d.f < 0.0f ? -512.0f : 512.0f);
    }
    if (rng != 0) {
        const uint32_t x = tte_xorshift32(*rng);
        *rng = x;
        v = (int32_t)q + tte_floor_i32(d.f + tte_uniform_f32(x));
    } else {
        v = (int32_t)q + (int32_t)(d.f + (d.f >= 0.0f ? 0.5f : -0.5f));
    }
    v = v < -127 ? -127 : v;
    return (int8_t)(v > 127 ? 127 : v);
}

/* The QAS update of one int32 bias: b + step(-((lr g) f)) saturated to the int32 range. */
static inline int32_t tte_qas_update_s32(int32_t b, float g, float lr, float factor, uint32_t *rng)
{
    const int64_t v = (int64_t)b + tte_round_step_f32(-((lr * g) * factor), rng);
    return (int32_t)(v < INT32_MIN ? INT32_MIN : (v > INT32_MAX ? INT32_MAX : v));
}

#endif /* TTE_TRAIN_MATH_H */
