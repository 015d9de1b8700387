/* tte runtime: TFLite's fixed-point building blocks, bit-exact with TFLite Micro (double rounding).
 *
 * The same functions as tte/quant.py (srdhm, rdbpot, mbqm, wrap_int32); see INT8_ARITHMETIC.md.
 * Every operation that can leave the int32 range is written through uint32 so that it wraps instead of
 * being undefined behaviour. Right shifts of negative values are assumed arithmetic (implementation-defined
 * in C99; true for gcc, clang and armcc, and checked below at compile time).
 */
#ifndef TTE_FIXEDPOINT_H
#define TTE_FIXEDPOINT_H

#include <stdint.h>

#include "tte_types.h"

#if defined(__ARM_FEATURE_SAT)
#include <arm_acle.h> /* __ssat: one SSAT instruction (ARMv6, ARMv7-M and up) */
#endif

/* Force-inlined helpers: kernels instantiate them with constant flags (the `fast` requantization), so each
 * instance compiles to its own branch-free loop. Hot loops are kept in small non-inlined functions: in one
 * large function GCC's register allocation spills the inner loops' values. */
#if defined(__GNUC__)
#define TTE_ALWAYS_INLINE inline __attribute__((always_inline))
#define TTE_NOINLINE __attribute__((noinline))
#else
#define TTE_ALWAYS_INLINE inline
#define TTE_NOINLINE
#endif

/* Fails to compile where >> of a negative value is not an arithmetic shift. */
typedef char tte_check_arithmetic_shift[((-1) >> 1) == -1 ? 1 : -1];

/* Two's-complement a + b (wraps like tte.quant.wrap_int32). */
static inline int32_t tte_wrap_add(int32_t a, int32_t b)
{
    return (int32_t)((uint32_t)a + (uint32_t)b);
}

/* SaturatingRoundingDoublingHighMul. TFLite writes it as (a * b + nudge) / 2^31 with a truncating division
 * and nudge = a * b >= 0 ? 2^30 : 1 - 2^30; for a * b < 0, trunc((p + 1 - 2^30) / 2^31) equals
 * floor((p + 2^30) / 2^31), so both signs reduce to one arithmetic shift. The only result outside int32
 * is a == b == INT32_MIN, which saturates. */
static inline int32_t tte_srdhm(int32_t a, int32_t b)
{
    if (a == INT32_MIN && b == INT32_MIN) {
        return INT32_MAX;
    }
    return (int32_t)(((int64_t)a * b + ((int64_t)1 << 30)) >> 31);
}

/* RoundingDivideByPOT: x / 2^exponent rounded half away from zero; exponent in [0, 31]. */
static inline int32_t tte_rdbpot(int32_t x, int32_t exponent)
{
    const int32_t mask = (int32_t)((1u << exponent) - 1u);
    const int32_t remainder = x & mask;
    const int32_t threshold = (mask >> 1) + (x < 0);
    return (x >> exponent) + (remainder > threshold);
}

/* MultiplyByQuantizedMultiplier: RDBPOT(SRDHM(x * 2^max(shift, 0), m), max(-shift, 0)); the left shift
 * wraps in int32 as TFLite's does in practice. shift in [-31, 31]. */
static inline int32_t tte_mbqm(int32_t x, int32_t m, int32_t shift)
{
    const int32_t left = shift > 0 ? shift : 0;
    const int32_t right = shift > 0 ? 0 : -shift;
    return tte_rdbpot(tte_srdhm((int32_t)((uint32_t)x << left), m), right);
}

/* MBQM(a, m, -e) for a right shift e >= 2 and m in (0, 2^31), with one 32x32->64 multiply-accumulate.
 * Let p = a * m + 2^30, so SRDHM gives h = floor(p / 2^31) (see tte_srdhm). RDBPOT(h, e) rounds half away from
 * zero: floor((h - [h < 0] + 2^(e-1)) / 2^e) = ceil(t / 2) = floor((t + 1) / 2) with
 * t = floor((h - [h < 0]) / 2^(e-1)) = floor((p - [a < 0] * 2^31) / 2^(30+e)) ([h < 0] equals [a < 0] except
 * for a * m = -2^30, where both give 0). Folding the + 1 in: result = floor((a * m + R) / 2^(31+e)) with
 * R = 2^30 - [a < 0] * 2^31 + 2^(30+e), i.e. the high word of a * m + R shifted right by e - 1. As 32-bit
 * halves, R = {hi: 2^(e-2) - [a < 0], lo: 2^30 | (a & 2^31)}. Nothing overflows, and |result| < 2^30.
 * On Cortex-M: and, orr, add, smlal, asr. `k` = 2^(e-2), `sh` = e - 1. */
static inline int32_t tte_mbqm_right2(int32_t a, int32_t m, int32_t k, int32_t sh)
{
    const uint32_t lo = ((uint32_t)a & 0x80000000u) | 0x40000000u;
    const uint32_t hi = (uint32_t)(k + (a >> 31));
    const int64_t r = (int64_t)(((uint64_t)hi << 32) | lo);
    return (int32_t)((r + (int64_t)a * m) >> 32) >> sh;
}

/* One output channel's requantization, prepared once per channel. */
typedef struct {
    int32_t multiplier; /* [0, 2^31) */
    int32_t shift;      /* [-31, 31] */
    int32_t fast_k;     /* 2^(-shift - 2) when -shift >= 2 and multiplier > 0 (tte_mbqm_right2), else 0 */
    int32_t fast_sh;    /* -shift - 1 */
} tte_channel_rq;

static inline tte_channel_rq tte_channel_rq_make(int32_t multiplier, int32_t shift)
{
    tte_channel_rq rq;
    rq.multiplier = multiplier;
    rq.shift = shift;
    rq.fast_k = (shift <= -2 && multiplier > 0) ? (int32_t)(1u << (-shift - 2)) : 0;
    rq.fast_sh = -shift - 1;
    return rq;
}

/* tte_mbqm(acc, multiplier, shift). */
static inline int32_t tte_channel_rq_apply(const tte_channel_rq *rq, int32_t acc)
{
    if (rq->fast_k != 0) {
        return tte_mbqm_right2(acc, rq->multiplier, rq->fast_k, rq->fast_sh);
    }
    return tte_mbqm(acc, rq->multiplier, rq->shift);
}

static inline int32_t tte_clamp(int32_t x, int32_t lo, int32_t hi)
{
    return x < lo ? lo : (x > hi ? hi : x);
}

/* Saturation to [-256, 255] and [-128, 127]. */
static inline int32_t tte_sat9(int32_t x)
{
#if defined(__ARM_FEATURE_SAT)
    return __ssat(x, 9);
#else
    return tte_clamp(x, -256, 255);
#endif
}

static inline int32_t tte_sat8(int32_t x)
{
#if defined(__ARM_FEATURE_SAT)
    return __ssat(x, 8);
#else
    return tte_clamp(x, -128, 127);
#endif
}

/* clamp(v + out_offset, act_min, act_max) without overflow: v is first limited to [-256, 255], which cannot
 * change the result since |out_offset| <= 128. */
static inline int8_t tte_out_s8(int32_t v, int32_t out_offset, int32_t act_min, int32_t act_max)
{
    return (int8_t)tte_clamp(tte_sat9(v) + out_offset, act_min, act_max);
}

/* tte_out_s8 for the full range [-128, 127]: on Cortex-M two SSATs and an add. */
static inline int8_t tte_out_full_s8(int32_t v, int32_t out_offset)
{
    return (int8_t)tte_sat8(tte_sat9(v) + out_offset);
}

/* The output stage shared by the kernels: zero point and clamp. */
typedef struct {
    int32_t offset;  /* zp_out */
    int32_t act_min; /* [-128, act_max] */
    int32_t act_max; /* [act_min, 127] */
} tte_out_stage;

static inline tte_out_stage tte_out_stage_make(int32_t offset, int32_t act_min, int32_t act_max)
{
    tte_out_stage o;
    o.offset = offset;
    o.act_min = act_min;
    o.act_max = act_max;
    return o;
}

/* True when a kernel may use its `fast` instance: the clamp is [-128, 127] and every channel's right shift is
 * at least 2 with a non-zero multiplier (so tte_mbqm_right2 applies). Real models are like this throughout. */
static inline int tte_fast_ok(const tte_requant *q, int32_t channels, const tte_out_stage *o)
{
    int32_t c, n = q->per_channel ? channels : 1;
    if (o->act_min != -128 || o->act_max != 127) {
        return 0;
    }
    for (c = 0; c < n; c++) {
        if (q->shift[c] > -2 || q->multiplier[c] <= 0) {
            return 0;
        }
    }
    return 1;
}

/* The zero point folded into tte_mbqm_right2: (h >> sh) + z == (h + z * 2^sh) >> sh exactly, so with
 * k_out = 2^(e-2) + z * 2^(e-1) in place of k the sum needs no add. The high word stays inside int32 when
 * |h| < 2^30 and |z| * 2^(e-1) <= 2^30, i.e. for right shifts e <= TTE_FAST_OUT_MAX_SHIFT (z in [-128, 127]). */
#define TTE_FAST_OUT_MAX_SHIFT 24

static inline int32_t tte_fast_k_out(const tte_channel_rq *rq, int32_t out_offset)
{
    return (int32_t)((uint32_t)rq->fast_k + ((uint32_t)out_offset << rq->fast_sh));
}

/* tte_fast_ok, and every right shift at most TTE_FAST_OUT_MAX_SHIFT (tte_requant_fast_s8 applies). */
static inline int tte_fast_out_ok(const tte_requant *q, int32_t channels, const tte_out_stage *o)
{
    int32_t c, n = q->per_channel ? channels : 1;
    if (!tte_fast_ok(q, channels, o)) {
        return 0;
    }
    for (c = 0; c < n; c++) {
        if (q->shift[c] < -TTE_FAST_OUT_MAX_SHIFT) {
            return 0;
        }
    }
    return 1;
}

/* sat8(MBQM(acc, m, -e) + z) for a channel of tte_fast_out_ok, with k_out = tte_fast_k_out and sh = e - 1:
 * on Cortex-M and, orr, add, smlal, asr, ssat. */
static inline int8_t tte_requant_fast_s8(int32_t acc, int32_t m, int32_t k_out, int32_t sh)
{
    return (int8_t)tte_sat8(tte_mbqm_right2(acc, m, k_out, sh));
}

/* Requantizes an accumulator of one channel and applies the output stage. `fast` is a constant in each kernel
 * instance (see tte_fast_ok): that instance compiles to a branch-free sequence of about a dozen instructions. */
static TTE_ALWAYS_INLINE int8_t tte_requant_out(const tte_channel_rq *rq, int32_t acc, const tte_out_stage *o,
                                                int fast)
{
    if (fast) { /* |tte_mbqm_right2| < 2^30: adding the zero point cannot overflow */
        return (int8_t)tte_sat8(tte_mbqm_right2(acc, rq->multiplier, rq->fast_k, rq->fast_sh) + o->offset);
    }
    return tte_out_s8(tte_channel_rq_apply(rq, acc), o->offset, o->act_min, o->act_max);
}

#endif /* TTE_FIXEDPOINT_H */
