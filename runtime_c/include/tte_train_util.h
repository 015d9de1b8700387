/* tte runtime: small helpers shared by the train kernels (internal). */
#ifndef TTE_TRAIN_UTIL_H
#define TTE_TRAIN_UTIL_H

#include <stdint.h>

#include "tte_fixedpoint.h"
#include "tte_types.h"

/* Writes a packed mask bit by bit in element order (element i: bit i & 7 of byte i >> 3), a byte at a time,
 * so the mask needs no clearing first; tte_bits_flush stores a last partial byte (its high bits 0). */
typedef struct {
    uint8_t *dst;
    uint32_t byte;
    int32_t n;
} tte_bit_writer;

static inline tte_bit_writer tte_bits_start(uint8_t *dst)
{
    tte_bit_writer b;
    b.dst = dst;
    b.byte = 0;
    b.n = 0;
    return b;
}

static inline void tte_bits_put(tte_bit_writer *b, int32_t bit)
{
    b->byte |= (uint32_t)bit << b->n;
    if (++b->n == 8) {
        *b->dst++ = (uint8_t)b->byte;
        b->byte = 0;
        b->n = 0;
    }
}

static inline void tte_bits_flush(tte_bit_writer *b)
{
    if (b->n != 0) {
        *b->dst = (uint8_t)b->byte;
    }
}

/* The output stage of a mask kernel: y = clamp(v + zp) as the forward kernels compute it, and the mask bit
 * [act_min <= v + zp <= act_max], compared without overflow as v against [act_min - zp, act_max - zp]. */
static inline int8_t tte_out_mask_s8(int32_t v, const tte_out_stage *o, tte_bit_writer *bits)
{
    tte_bits_put(bits, (v >= o->act_min - o->offset) & (v <= o->act_max - o->offset));
    return tte_out_s8(v, o->offset, o->act_min, o->act_max);
}

/* tte_out_mask_s8 for element i written out of order: the mask must have been cleared (tte_mask_clear). */
static inline void tte_out_mask_at(int8_t *out, uint8_t *mask, int32_t i, int32_t v, const tte_out_stage *o)
{
    const uint32_t bit = (uint32_t)((v >= o->act_min - o->offset) & (v <= o->act_max - o->offset));
    mask[i >> 3] = (uint8_t)(mask[i >> 3] | (bit << (i & 7)));
    out[i] = tte_out_s8(v, o->offset, o->act_min, o->act_max);
}

static inline void tte_mask_clear(uint8_t *mask, int32_t elements)
{
    int32_t i;
    for (i = 0; i < (elements + 7) / 8; i++) {
        mask[i] = 0;
    }
}

static inline int32_t tte_max32(int32_t a, int32_t b)
{
    return a > b ? a : b;
}

static inline int32_t tte_min32(int32_t a, int32_t b)
{
    return a < b ? a : b;
}

/* The requantization of output channel oc (per-tensor: entry 0). */
static inline tte_channel_rq tte_rq_of(const tte_requant *q, int32_t oc)
{
    const int32_t i = q->per_channel ? oc : 0;
    return tte_channel_rq_make(q->multiplier[i], q->shift[i]);
}

/* --- the fast output stage of the mask kernels (tte_mbqm_right2 requantization) ---------------------------- */

/* The output stage of the fast path, every value in a local (int8 stores may alias anything, so values read
 * through pointers would be read again after each store). */
typedef struct {
    int32_t lo, hi, zp, amin, amax; /* mask range of the requantized value; zero point and clamp of the output */
} tte_fast_stage;

/* One output of a channel with tte_mbqm_right2 requantization (k: bias + offset term): writes y, returns the
 * mask bit. Equals tte_out_mask_at. */
static TTE_ALWAYS_INLINE uint32_t tte_fast_out(int32_t acc, int32_t k, int32_t m, int32_t fk, int32_t sh,
                                               tte_fast_stage f, int8_t *y)
{
    const int32_t v = tte_mbqm_right2(tte_wrap_add(k, acc), m, fk, sh);
    *y = (int8_t)tte_clamp(tte_sat9(v) + f.zp, f.amin, f.amax);
    return (uint32_t)((v >= f.lo) & (v <= f.hi));
}

/* ORs two mask bits (element i and i + 1) into a cleared mask. */
static TTE_ALWAYS_INLINE void tte_put_bits2(uint8_t *mask, int32_t i, uint32_t bits)
{
    if ((i & 7) != 7) {
        mask[i >> 3] = (uint8_t)(mask[i >> 3] | (bits << (i & 7)));
    } else {
        mask[i >> 3] = (uint8_t)(mask[i >> 3] | ((bits & 1u) << 7));
        mask[(i >> 3) + 1] = (uint8_t)(mask[(i >> 3) + 1] | (bits >> 1));
    }
}

/* ORs four mask bits (elements i .. i+3) into a cleared mask. */
static TTE_ALWAYS_INLINE void tte_put_bits4(uint8_t *mask, int32_t i, uint32_t bits)
{
    const uint32_t v = bits << (i & 7); /* up to 11 bits: this byte and maybe the next */
    mask[i >> 3] = (uint8_t)(mask[i >> 3] | (v & 0xFFu));
    if ((i & 7) > 4) {
        mask[(i >> 3) + 1] = (uint8_t)(mask[(i >> 3) + 1] | (v >> 8));
    }
}

/* The 4x4 float register block of the blocked fp32 kernels (train_conv_grad.c, train_conv_update.c,
 * train_block_grad.c): a<r><c> accumulates row r times column c, every product and sum rounded on its own, in the
 * order the numpy reference sums. One set of macros, so the kernels share the unrolled body. */
#define TTE_F32_BLOCK4X4_DECL                                                                                    \
    float a00 = 0.0f, a01 = 0.0f, a02 = 0.0f, a03 = 0.0f, a10 = 0.0f, a11 = 0.0f, a12 = 0.0f, a13 = 0.0f;      \
    float a20 = 0.0f, a21 = 0.0f, a22 = 0.0f, a23 = 0.0f, a30 = 0.0f, a31 = 0.0f, a32 = 0.0f, a33 = 0.0f

/* Row r of the block += d * (v0, v1, v2, v3). */
#define TTE_F32_ROW4(r, d, v0, v1, v2, v3)                                                                       \
    do {                                                                                                         \
        a##r##0 = a##r##0 + (d) * (v0);                                                                          \
        a##r##1 = a##r##1 + (d) * (v1);                                                                          \
        a##r##2 = a##r##2 + (d) * (v2);                                                                          \
        a##r##3 = a##r##3 + (d) * (v3);                                                                          \
    } while (0)

/* Rows 0..3 of the block += (g_r[o] * s) * (v0, v1, v2, v3): four scaled gradient rows against one weight
 * row (the blocked input-gradient loops). */
#define TTE_F32_SCALED_ROWS4(s, o, g0, g1, g2, g3, v0, v1, v2, v3)                                             \
    do {                                                                                                         \
        float d_ = (g0)[o] * (s);                                                                                \
        TTE_F32_ROW4(0, d_, v0, v1, v2, v3);                                                                     \
        d_ = (g1)[o] * (s);                                                                                      \
        TTE_F32_ROW4(1, d_, v0, v1, v2, v3);                                                                     \
        d_ = (g2)[o] * (s);                                                                                      \
        TTE_F32_ROW4(2, d_, v0, v1, v2, v3);                                                                     \
        d_ = (g3)[o] * (s);                                                                                      \
        TTE_F32_ROW4(3, d_, v0, v1, v2, v3);                                                                     \
    } while (0)

/* The block to acc[16], row-major. */
#define TTE_F32_BLOCK4X4_STORE(acc)                                                                              \
    do {                                                                                                         \
        (acc)[0] = a00, (acc)[1] = a01, (acc)[2] = a02, (acc)[3] = a03, (acc)[4] = a10, (acc)[5] = a11;          \
        (acc)[6] = a12, (acc)[7] = a13, (acc)[8] = a20, (acc)[9] = a21, (acc)[10] = a22, (acc)[11] = a23;        \
        (acc)[12] = a30, (acc)[13] = a31, (acc)[14] = a32, (acc)[15] = a33;                                      \
    } while (0)

/* The clamp mask bits of channels c0..c0+3 at pixel p (bit k: channel c0 + k; the caller keeps the bits below n).
 * With C a multiple of 8 the four bits sit in one byte (c0 is a multiple of 4), C / 8 bytes apart per pixel. */
static TTE_ALWAYS_INLINE uint32_t tte_mask_bits4(const uint8_t *mask, int32_t ch, int32_t p, int32_t c0, int32_t n)
{
    uint32_t bits = 0u;
    int32_t k;
    if ((ch & 7) == 0) {
        return (uint32_t)(mask[p * (ch >> 3) + (c0 >> 3)] >> (c0 & 7)) & 15u;
    }
    for (k = 0; k < n; k++) {
        const int32_t i = p * ch + c0 + k;
        bits |= (uint32_t)((mask[i >> 3] >> (i & 7)) & 1) << k;
    }
    return bits;
}

#endif /* TTE_TRAIN_UTIL_H */
