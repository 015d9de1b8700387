/* tte runtime: the Cortex-M DSP (SIMD32) instructions the kernels' fast paths use.
 *
 * TTE_HAVE_DSP is 1 when the target has the DSP extension (Cortex-M4, M7, M33, M55: __ARM_FEATURE_DSP) and
 * the build does not define TTE_NO_DSP. Defining TTE_DSP_EMULATE on any other target (the host) selects the
 * same code paths with portable C versions of the instructions, so the host tests check the DSP paths'
 * arithmetic bit for bit. The one piece of inline assembly (tte_dot_2x2_packed in tte_dot.h) and the ACLE
 * intrinsics only run on the target: tests/test_kernels.py checks them in QEMU (Cortex-M4 and M7).
 * Words are read little-endian, as Cortex-M and x86 store them.
 *
 * The int16 lanes never overflow in the kernels: an int8 value plus an offset in [-128, 128] stays in
 * [-256, 255], and products are accumulated in int32.
 */
#ifndef TTE_SIMD_H
#define TTE_SIMD_H

#include <stdint.h>
#include <string.h>

#if defined(__ARM_BIG_ENDIAN)
#error "tte runtime: big-endian targets are not supported"
#endif

/* Four int8 values as one word (a single, possibly unaligned, LDR on Cortex-M3 and up). With GCC and clang
 * through a may_alias type of alignment 1 (memcpy into a local is equivalent, but in large inlined kernels
 * GCC was seen to keep such locals in stack memory); elsewhere through memcpy. */
#if defined(__GNUC__)
typedef uint32_t __attribute__((aligned(1), may_alias)) tte_unaligned_u32;
typedef uint32_t __attribute__((may_alias)) tte_alias_u32;

static inline uint32_t tte_read_s8x4(const int8_t *p)
{
    return *(const tte_unaligned_u32 *)(const void *)p;
}

/* Word i of a word-aligned buffer written with another type (int16 lanes). */
static inline uint32_t tte_read_word(const void *p, int32_t i)
{
    return ((const tte_alias_u32 *)p)[i];
}

static inline void tte_write_word(void *p, int32_t i, uint32_t v)
{
    ((tte_alias_u32 *)p)[i] = v;
}

/* Four int8 values stored as one word (a single, possibly unaligned, STR). */
static inline void tte_write_s8x4(int8_t *p, uint32_t v)
{
    *(tte_unaligned_u32 *)(void *)p = v;
}
#else
static inline uint32_t tte_read_s8x4(const int8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static inline uint32_t tte_read_word(const void *p, int32_t i)
{
    uint32_t v;
    memcpy(&v, (const char *)p + 4 * i, 4);
    return v;
}

static inline void tte_write_word(void *p, int32_t i, uint32_t v)
{
    memcpy((char *)p + 4 * i, &v, 4);
}

static inline void tte_write_s8x4(int8_t *p, uint32_t v)
{
    memcpy(p, &v, 4);
}
#endif

static inline uint32_t tte_ror8(uint32_t x)
{
    return (x >> 8) | (x << 24);
}

#if defined(__ARM_FEATURE_DSP) && !defined(TTE_NO_DSP)
#include <arm_acle.h>
#define TTE_HAVE_DSP 1

/* Bytes 0 and 2, sign-extended to the two halfwords. */
static inline uint32_t tte_sxtb16(uint32_t x)
{
    return (uint32_t)__sxtb16((int8x4_t)x);
}

/* Halfwise a + sign-extended bytes 0 and 2 of x. */
static inline uint32_t tte_sxtab16(uint32_t a, uint32_t x)
{
    return (uint32_t)__sxtab16((int16x2_t)a, (int8x4_t)x);
}

/* Bytes 1 and 3 (x rotated right by 8), sign-extended: one instruction, which gcc does not fuse from
 * __sxtb16(__ror(x, 8)). */
static inline uint32_t tte_sxtb16_ror8(uint32_t x)
{
    uint32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
    return r;
}

static inline uint32_t tte_sxtab16_ror8(uint32_t a, uint32_t x)
{
    uint32_t r;
    __asm__("sxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(a), "r"(x));
    return r;
}

/* acc + a.lo * b.lo + a.hi * b.hi (signed halfwords). */
static inline int32_t tte_smlad(uint32_t a, uint32_t b, int32_t acc)
{
    return __smlad((int16x2_t)a, (int16x2_t)b, acc);
}

/* acc + a.lo * b.lo, acc + a.hi * b.hi. */
static inline int32_t tte_smlabb(uint32_t a, uint32_t b, int32_t acc)
{
    return __smlabb((int32_t)a, (int32_t)b, acc);
}

static inline int32_t tte_smlatt(uint32_t a, uint32_t b, int32_t acc)
{
    return __smlatt((int32_t)a, (int32_t)b, acc);
}

#elif defined(TTE_DSP_EMULATE)
#define TTE_HAVE_DSP 1

static inline int32_t tte_lo16(uint32_t x)
{
    return (int16_t)(x & 0xFFFFu);
}

static inline int32_t tte_hi16(uint32_t x)
{
    return (int16_t)(x >> 16);
}

static inline uint32_t tte_pack16(int32_t lo, int32_t hi)
{
    return ((uint32_t)lo & 0xFFFFu) | (((uint32_t)hi & 0xFFFFu) << 16);
}

static inline uint32_t tte_sxtb16(uint32_t x)
{
    return tte_pack16((int8_t)(x & 0xFFu), (int8_t)((x >> 16) & 0xFFu));
}

static inline uint32_t tte_sxtab16(uint32_t a, uint32_t x)
{
    return tte_pack16(tte_lo16(a) + (int8_t)(x & 0xFFu), tte_hi16(a) + (int8_t)((x >> 16) & 0xFFu));
}

static inline uint32_t tte_sxtb16_ror8(uint32_t x)
{
    return tte_sxtb16(tte_ror8(x));
}

static inline uint32_t tte_sxtab16_ror8(uint32_t a, uint32_t x)
{
    return tte_sxtab16(a, tte_ror8(x));
}

static inline int32_t tte_smlad(uint32_t a, uint32_t b, int32_t acc)
{
    const uint32_t p = (uint32_t)(tte_lo16(a) * tte_lo16(b)) + (uint32_t)(tte_hi16(a) * tte_hi16(b));
    return (int32_t)((uint32_t)acc + p);
}

static inline int32_t tte_smlabb(uint32_t a, uint32_t b, int32_t acc)
{
    return (int32_t)((uint32_t)acc + (uint32_t)(tte_lo16(a) * tte_lo16(b)));
}

static inline int32_t tte_smlatt(uint32_t a, uint32_t b, int32_t acc)
{
    return (int32_t)((uint32_t)acc + (uint32_t)(tte_hi16(a) * tte_hi16(b)));
}

#else
#define TTE_HAVE_DSP 0
#endif

#if TTE_HAVE_DSP
/* The same 16-bit value in both halfwords (an offset for tte_sxtab16). */
static inline uint32_t tte_dup16(int32_t v)
{
    return ((uint32_t)v & 0xFFFFu) * 0x00010001u;
}
#endif

#endif /* TTE_SIMD_H */
