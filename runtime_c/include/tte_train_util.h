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

#endif /* TTE_TRAIN_UTIL_H */
