/* The int8 GEMM behind conv2d_1x1 and fully_connected: two input rows by two weight rows per pass.
 *
 * With symmetric weights (rhs_offset == 0) the input offset is folded into each column's bias once
 * (bias + lhs_offset * sum(w), wrapping), so the 2x2 inner loop multiplies raw int8 values. A lone last row
 * (and any rhs_offset) takes the 1x2 path, which adds both offsets while widening the bytes.
 */
#include "tte_gemm.h"

#include "tte_dot.h"
#include "tte_fixedpoint.h"

/* The largest depth whose weights the packed pass widens first (rows2_cols2_wide); its buffer takes
 * 4 * TTE_GEMM_WIDE_DEPTH bytes of stack (1.5 KB; the models' 1x1 layers go up to 336-576). */
#ifndef TTE_GEMM_WIDE_DEPTH
#define TTE_GEMM_WIDE_DEPTH 384
#endif

typedef struct {
    tte_channel_rq rq;
    int32_t bias;   /* bias[c], or 0 without bias */
    int32_t folded; /* bias + lhs_offset * sum_k rhs[c, k], wrapped */
} gemm_column;

/* Everything the loops read, as one by-value copy: int8 stores may alias any object, so fields read through
 * a pointer would be reloaded after every output byte. */
typedef struct {
    int32_t rows, lhs_stride, cols, depth, x_off, w_off;
    const int8_t *lhs, *rhs;
    const int32_t *bias;
    const tte_requant *quant;
    tte_out_stage out;
} gemm_args;

static gemm_column column_make(const gemm_args *a, const int8_t *w, int32_t c, int fold)
{
    gemm_column col;
    const int32_t qi = a->quant->per_channel ? c : 0;
    col.rq = tte_channel_rq_make(a->quant->multiplier[qi], a->quant->shift[qi]);
    col.bias = a->bias ? a->bias[c] : 0;
    col.folded = fold ? tte_wrap_add(col.bias, a->x_off * tte_sum_s8(w, a->depth)) : col.bias;
    return col;
}

/* The two columns of a pass in the fast instance (tte_fast_out_ok): folded biases, the requantization with the
 * zero point inside (tte_requant_fast_s8), their weight rows and where the lhs rows end. The field order is
 * the one the assembly loads in pairs (LDRD); pointers are 32-bit there. */
typedef struct {
    int32_t bias0, bias1, m0, k0, m1, k1, sh0, sh1;
    const int8_t *w0, *w_end, *x_end; /* w_end = w0 + depth: row 1 follows row 0; x_end: after the last pair */
} gemm_pair;

static gemm_pair pair_make(const gemm_column *c0, const gemm_column *c1, int32_t out_offset, const int8_t *w0,
                           int32_t depth, const int8_t *x_end)
{
    gemm_pair p;
    p.bias0 = c0->folded;
    p.bias1 = c1->folded;
    p.m0 = c0->rq.multiplier;
    p.k0 = tte_fast_k_out(&c0->rq, out_offset);
    p.m1 = c1->rq.multiplier;
    p.k1 = tte_fast_k_out(&c1->rq, out_offset);
    p.sh0 = c0->rq.fast_sh;
    p.sh1 = c1->rq.fast_sh;
    p.w0 = w0;
    p.w_end = w0 + depth;
    p.x_end = x_end;
    return p;
}

#if TTE_HAVE_DSP && defined(__ARM_FEATURE_DSP) && defined(__thumb2__) && defined(__OPTIMIZE__) && \
    !defined(TTE_DSP_EMULATE)
#define TTE_GEMM_ASM 1
#else
#define TTE_GEMM_ASM 0
#endif

#if TTE_GEMM_ASM
/* The whole pass in Thumb-2 assembly, for depth a multiple of 4: per pair of rows, the accumulators start at
 * the biases, each 4-byte step of the inner loop is 4 loads, 8 SXTB16 and 8 SMLAD (16 MACs), and each output
 * is requantized in 7 instructions (tte_requant_fast_s8: and, orr, add, smlal, asr, ssat, strb). Registers:
 * r0 lhs, r1 weights, r2 depth - 4, r3 pair, r4 dst, r5 cols, r7-r10 accumulators; r3-r5 are pushed during
 * the inner loop, which needs 14 registers. The macros are the assembly around the inner loop's weight loads,
 * which leave column 0's (k, k+2), (k+1, k+3) halfword pairs in r5, r4 and column 1's in r6, r3. */
#define GEMM_PASS_HEAD \
        "1:\n\t" \
        "ldrd    r7, r8, [r3]\n\t"      /* biases */ \
        "ldrd    r1, r11, [r3, #32]\n\t" /* w0, w_end */ \
        "mov     r9, r7\n\t" \
        "mov     r10, r8\n\t" \
        "push    {r3, r4, r5}\n\t" \
        "2:\n\t"

#define GEMM_PASS_TAIL \
        "ldr     lr, [r0], #4\n\t" \
        "sxtb16  r12, lr\n\t" \
        "sxtb16  lr, lr, ror #8\n\t" \
        "smlad   r7, r12, r5, r7\n\t" \
        "smlad   r8, r12, r6, r8\n\t" \
        "smlad   r7, lr, r4, r7\n\t" \
        "smlad   r8, lr, r3, r8\n\t" \
        "ldr     lr, [r0, r2]\n\t" \
        "sxtb16  r12, lr\n\t" \
        "sxtb16  lr, lr, ror #8\n\t" \
        "smlad   r9, r12, r5, r9\n\t" \
        "smlad   r10, r12, r6, r10\n\t" \
        "smlad   r9, lr, r4, r9\n\t" \
        "smlad   r10, lr, r3, r10\n\t" \
        "cmp     r1, r11\n\t" \
        "bne     2b\n\t" \
        "pop     {r3, r4, r5}\n\t" \
        "add     r0, r0, r2\n\t" /* the next pair of rows: x + depth */ \
        "adds    r0, r0, #4\n\t" \
        "ldrd    r11, r12, [r3, #8]\n\t" /* column 0: m0, k0, sh0 */ \
        "ldr     lr, [r3, #24]\n\t" \
        "and     r1, r7, #0x80000000\n\t" \
        "orr     r1, r1, #0x40000000\n\t" \
        "add     r6, r12, r7, asr #31\n\t" \
        "smlal   r1, r6, r7, r11\n\t" \
        "asr     r6, r6, lr\n\t" \
        "ssat    r6, #8, r6\n\t" \
        "strb    r6, [r4]\n\t" \
        "and     r1, r9, #0x80000000\n\t" \
        "orr     r1, r1, #0x40000000\n\t" \
        "add     r6, r12, r9, asr #31\n\t" \
        "smlal   r1, r6, r9, r11\n\t" \
        "asr     r6, r6, lr\n\t" \
        "ssat    r6, #8, r6\n\t" \
        "strb    r6, [r4, r5]\n\t" \
        "ldrd    r11, r12, [r3, #16]\n\t" /* column 1: m1, k1, sh1 */ \
        "ldr     lr, [r3, #28]\n\t" \
        "and     r1, r8, #0x80000000\n\t" \
        "orr     r1, r1, #0x40000000\n\t" \
        "add     r6, r12, r8, asr #31\n\t" \
        "smlal   r1, r6, r8, r11\n\t" \
        "asr     r6, r6, lr\n\t" \
        "ssat    r6, #8, r6\n\t" \
        "strb    r6, [r4, #1]\n\t" \
        "and     r1, r10, #0x80000000\n\t" \
        "orr     r1, r1, #0x40000000\n\t" \
        "add     r6, r12, r10, asr #31\n\t" \
        "smlal   r1, r6, r10, r11\n\t" \
        "asr     r6, r6, lr\n\t" \
        "ssat    r6, #8, r6\n\t" \
        "add     r7, r4, r5\n\t" \
        "strb    r6, [r7, #1]\n\t" \
        "add     r4, r4, r5, lsl #1\n\t" \
        "ldr     r6, [r3, #40]\n\t" /* x_end */ \
        "cmp     r0, r6\n\t" \
        "bne     1b\n\t"

static TTE_NOINLINE void rows2_cols2_packed(const gemm_pair *pair, const int8_t *lhs, int32_t depth, int32_t cols,
                                            int8_t *out)
{
    register const int8_t *x __asm__("r0") = lhs;
    register int32_t d4 __asm__("r2") = depth - 4;
    register const gemm_pair *p __asm__("r3") = pair;
    register int8_t *dst __asm__("r4") = out;
    register int32_t n __asm__("r5") = cols;
    __asm__ volatile(GEMM_PASS_HEAD
        "ldr     r4, [r1], #4\n\t"
        "ldr     r3, [r1, r2]\n\t"
        "sxtb16  r5, r4\n\t"
        "sxtb16  r4, r4, ror #8\n\t"
        "sxtb16  r6, r3\n\t"
        "sxtb16  r3, r3, ror #8\n\t"
                     GEMM_PASS_TAIL
        : "+r"(x), "+r"(d4), "+r"(p), "+r"(dst), "+r"(n)
        :
        : "r1", "r6", "r7", "r8", "r9", "r10", "r11", "r12", "lr", "cc", "memory");
}

/* The same pass over weights widened beforehand (widen_pair), which the inner loop loads with two LDRD instead
 * of 2 LDR and 4 SXTB16: 18 instructions per 16 MACs instead of 22. pair->w0 and w_end bound the widened
 * buffer. */
static TTE_NOINLINE void rows2_cols2_wide(const gemm_pair *pair, const int8_t *lhs, int32_t depth, int32_t cols,
                                          int8_t *out)
{
    register const int8_t *x __asm__("r0") = lhs;
    register int32_t d4 __asm__("r2") = depth - 4;
    register const gemm_pair *p __asm__("r3") = pair;
    register int8_t *dst __asm__("r4") = out;
    register int32_t n __asm__("r5") = cols;
    __asm__ volatile(GEMM_PASS_HEAD
        "ldrd    r6, r3, [r1, #8]\n\t"
        "ldrd    r5, r4, [r1], #16\n\t"
                     GEMM_PASS_TAIL
        : "+r"(x), "+r"(d4), "+r"(p), "+r"(dst), "+r"(n)
        :
        : "r1", "r6", "r7", "r8", "r9", "r10", "r11", "r12", "lr", "cc", "memory");
}
#else
/* The portable version of the pass above (the host tests check its arithmetic, folded zero point included). */
static TTE_NOINLINE void rows2_cols2_packed(const gemm_pair *p, const int8_t *lhs, int32_t depth, int32_t cols,
                                            int8_t *out)
{
    const int8_t *x = lhs;
    int8_t *dst = out;
    for (; x != p->x_end; x += 2 * depth, dst += 2 * cols) {
        int32_t acc[4] = {0, 0, 0, 0}; /* the biases are added wrapping: int32 sums must not overflow in C */
        int8_t y00, y01, y10, y11;
        tte_dot_2x2(x, x + depth, p->w0, p->w_end, depth, acc);
        y00 = tte_requant_fast_s8(tte_wrap_add(acc[0], p->bias0), p->m0, p->k0, p->sh0);
        y10 = tte_requant_fast_s8(tte_wrap_add(acc[2], p->bias0), p->m0, p->k0, p->sh0);
        y01 = tte_requant_fast_s8(tte_wrap_add(acc[1], p->bias1), p->m1, p->k1, p->sh1);
        y11 = tte_requant_fast_s8(tte_wrap_add(acc[3], p->bias1), p->m1, p->k1, p->sh1);
        dst[0] = y00;
        dst[1] = y01;
        dst[cols] = y10;
        dst[cols + 1] = y11;
    }
}

#if TTE_HAVE_DSP
/* The portable version of the widened-weights pass (with emulated SIMD on the host: checks widen_pair's layout). */
static TTE_NOINLINE void rows2_cols2_wide(const gemm_pair *p, const int8_t *lhs, int32_t depth, int32_t cols,
                                          int8_t *out)
{
    const int8_t *x = lhs;
    int8_t *dst = out;
    for (; x != p->x_end; x += 2 * depth, dst += 2 * cols) {
        const uint32_t *w = (const uint32_t *)(const void *)p->w0;
        int32_t a00 = p->bias0, a01 = p->bias1, a10 = p->bias0, a11 = p->bias1, k; /* SMLAD sums wrap */
        for (k = 0; k < depth; k += 4, w += 4) {
            TTE_GEMM_STEP_2X2(x, depth, k, w, a00, a01, a10, a11);
        }
        dst[0] = tte_requant_fast_s8(a00, p->m0, p->k0, p->sh0);
        dst[1] = tte_requant_fast_s8(a01, p->m1, p->k1, p->sh1);
        dst[cols] = tte_requant_fast_s8(a10, p->m0, p->k0, p->sh0);
        dst[cols + 1] = tte_requant_fast_s8(a11, p->m1, p->k1, p->sh1);
    }
}
#endif
#endif

#if TTE_HAVE_DSP
/* Weight rows w0 and w0 + depth (depth a multiple of 4) widened for rows2_cols2_wide: per 4 taps k..k+3, row 0's
 * halfword pairs (k, k+2), (k+1, k+3), then row 1's. */
static TTE_NOINLINE void widen_pair(const int8_t *w0, int32_t depth, uint32_t *dst)
{
    int32_t k;
    for (k = 0; k < depth; k += 4, dst += 4) {
        const uint32_t v0 = tte_read_s8x4(w0 + k), v1 = tte_read_s8x4(w0 + depth + k);
        dst[0] = tte_sxtb16(v0);
        dst[1] = tte_sxtb16_ror8(v0);
        dst[2] = tte_sxtb16(v1);
        dst[3] = tte_sxtb16_ror8(v1);
    }
}
#endif

/* Rows [0, rows & ~1) of columns c, c + 1 (folded biases). */
static TTE_ALWAYS_INLINE void rows2_cols2(const gemm_args *args, const int8_t *w0, const gemm_column *col0,
                                          const gemm_column *col1, int8_t *dst, int fast)
{
    const int32_t stride = args->lhs_stride, depth = args->depth, cols = args->cols;
    const gemm_column c0 = *col0, c1 = *col1;
    const tte_out_stage o = args->out;
    const int8_t *x = args->lhs, *w1 = w0 + depth;
    int32_t pairs = args->rows >> 1;
    for (; pairs > 0; pairs--) {
        int32_t acc[4] = {0, 0, 0, 0};
        if (stride == depth) {
            tte_dot_2x2_packed(x, w0, depth, acc);
        } else {
            tte_dot_2x2(x, x + stride, w0, w1, depth, acc);
        }
        dst[0] = tte_requant_out(&c0.rq, tte_wrap_add(acc[0], c0.folded), &o, fast);
        dst[1] = tte_requant_out(&c1.rq, tte_wrap_add(acc[1], c1.folded), &o, fast);
        dst[cols] = tte_requant_out(&c0.rq, tte_wrap_add(acc[2], c0.folded), &o, fast);
        dst[cols + 1] = tte_requant_out(&c1.rq, tte_wrap_add(acc[3], c1.folded), &o, fast);
        x += 2 * stride;
        dst += 2 * cols;
    }
}

/* Rows [r, rows) of columns c, c + 1, one row at a time with both offsets (unfolded biases). */
static TTE_ALWAYS_INLINE void rows1_cols2(const gemm_args *args, int32_t r, const int8_t *w0,
                                          const gemm_column *col0, const gemm_column *col1, int8_t *dst, int fast)
{
    const int32_t stride = args->lhs_stride, depth = args->depth, cols = args->cols;
    const int32_t x_off = args->x_off, w_off = args->w_off;
    const gemm_column c0 = *col0, c1 = *col1;
    const tte_out_stage o = args->out;
    const int8_t *x = args->lhs + r * stride, *w1 = w0 + depth;
    for (; r < args->rows; r++) {
        int32_t a0 = 0, a1 = 0;
        tte_dot_1x2_off(x, w0, w1, depth, x_off, w_off, &a0, &a1);
        dst[0] = tte_requant_out(&c0.rq, tte_wrap_add(a0, c0.bias), &o, fast);
        dst[1] = tte_requant_out(&c1.rq, tte_wrap_add(a1, c1.bias), &o, fast);
        x += stride;
        dst += cols;
    }
}

/* Every row of the last column when the column count is odd. */
static TTE_ALWAYS_INLINE void rows_col1(const gemm_args *args, const int8_t *w, const gemm_column *col,
                                        int fold, int8_t *dst, int fast)
{
    const int32_t stride = args->lhs_stride, depth = args->depth, cols = args->cols;
    const gemm_column c0 = *col;
    const tte_out_stage o = args->out;
    const int8_t *x = args->lhs;
    int32_t r = 0;
    if (fold) {
        for (; r + 2 <= args->rows; r += 2) {
            int32_t a0 = 0, a1 = 0;
            tte_dot_2x1(x, x + stride, w, depth, &a0, &a1);
            dst[0] = tte_requant_out(&c0.rq, tte_wrap_add(a0, c0.folded), &o, fast);
            dst[cols] = tte_requant_out(&c0.rq, tte_wrap_add(a1, c0.folded), &o, fast);
            x += 2 * stride;
            dst += 2 * cols;
        }
    }
    for (; r < args->rows; r++) {
        const int32_t acc = tte_dot_1x1_off(x, w, depth, args->x_off, args->w_off);
        dst[0] = tte_requant_out(&c0.rq, tte_wrap_add(acc, c0.bias), &o, fast);
        x += stride;
        dst += cols;
    }
}

/* The instances: the fast requantization (see tte_fast_ok) or the general one. */
static TTE_NOINLINE void rows2_cols2_fast(const gemm_args *a, const int8_t *w0, const gemm_column *c0,
                                          const gemm_column *c1, int8_t *dst)
{
    rows2_cols2(a, w0, c0, c1, dst, 1);
}

static TTE_NOINLINE void rows2_cols2_general(const gemm_args *a, const int8_t *w0, const gemm_column *c0,
                                             const gemm_column *c1, int8_t *dst)
{
    rows2_cols2(a, w0, c0, c1, dst, 0);
}

static TTE_NOINLINE void rows1_cols2_fast(const gemm_args *a, int32_t r, const int8_t *w0, const gemm_column *c0,
                                          const gemm_column *c1, int8_t *dst)
{
    rows1_cols2(a, r, w0, c0, c1, dst, 1);
}

static TTE_NOINLINE void rows1_cols2_general(const gemm_args *a, int32_t r, const int8_t *w0,
                                             const gemm_column *c0, const gemm_column *c1, int8_t *dst)
{
    rows1_cols2(a, r, w0, c0, c1, dst, 0);
}

static TTE_NOINLINE void rows_col1_fast(const gemm_args *a, const int8_t *w, const gemm_column *c, int fold,
                                        int8_t *dst)
{
    rows_col1(a, w, c, fold, dst, 1);
}

static TTE_NOINLINE void rows_col1_general(const gemm_args *a, const int8_t *w, const gemm_column *c, int fold,
                                           int8_t *dst)
{
    rows_col1(a, w, c, fold, dst, 0);
}

void tte_gemm_s8(const tte_gemm_params *params, const tte_requant *quant, int32_t rows, int32_t lhs_stride,
                 const int8_t *lhs, int32_t cols, int32_t depth, const int8_t *rhs, const int32_t *bias,
                 int8_t *out)
{
    gemm_args a;
    int fold, fast, packed, wide;
#if TTE_HAVE_DSP
    uint32_t widened[TTE_GEMM_WIDE_DEPTH]; /* a column pair's weights as int16 (widen_pair) */
#endif
    int32_t c = 0;
    a.rows = rows;
    a.lhs_stride = lhs_stride;
    a.cols = cols;
    a.depth = depth;
    a.x_off = params->lhs_offset;
    a.w_off = params->rhs_offset;
    a.lhs = lhs;
    a.rhs = rhs;
    a.bias = bias;
    a.quant = quant;
    a.out = tte_out_stage_make(params->out_offset, params->act_min, params->act_max);
    fold = a.w_off == 0 && rows >= 2;
    fast = tte_fast_ok(quant, cols, &a.out);
    packed = fast && lhs_stride == depth && (!TTE_GEMM_ASM || depth % 4 == 0) &&
             tte_fast_out_ok(quant, cols, &a.out);
    /* Widening a column pair's weights costs about 2.5 * depth instructions and saves depth per pair of rows. */
    wide = TTE_HAVE_DSP && packed && depth % 4 == 0 && depth <= TTE_GEMM_WIDE_DEPTH && rows >= 8;
    for (; c + 2 <= cols; c += 2) {
        const int8_t *w0 = rhs + c * depth;
        const gemm_column c0 = column_make(&a, w0, c, fold), c1 = column_make(&a, w0 + depth, c + 1, fold);
        const int32_t done = fold ? rows & ~1 : 0;
        if (fold && wide) {
#if TTE_HAVE_DSP
            gemm_pair p;
            widen_pair(w0, depth, widened);
            p = pair_make(&c0, &c1, a.out.offset, (const int8_t *)widened, depth, lhs + (rows & ~1) * depth);
            p.w_end = (const int8_t *)(widened + depth); /* 4 depth bytes: both rows */
            rows2_cols2_wide(&p, lhs, depth, cols, out + c);
#endif
        } else if (fold && packed) {
            const gemm_pair p = pair_make(&c0, &c1, a.out.offset, w0, depth, lhs + (rows & ~1) * depth);
            rows2_cols2_packed(&p, lhs, depth, cols, out + c);
        } else if (fold) {
            (fast ? rows2_cols2_fast : rows2_cols2_general)(&a, w0, &c0, &c1, out + c);
        }
        if (done < rows) {
            (fast ? rows1_cols2_fast : rows1_cols2_general)(&a, done, w0, &c0, &c1, out + done * cols + c);
        }
    }
    if (c < cols) {
        const gemm_column c0 = column_make(&a, rhs + c * depth, c, fold);
        (fast ? rows_col1_fast : rows_col1_general)(&a, rhs + c * depth, &c0, fold, out + c);
    }
}
