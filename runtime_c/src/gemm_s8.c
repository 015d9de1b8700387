/* The int8 GEMM behind conv2d_1x1 and fully_connected: two input rows by two weight rows per pass.
 *
 * With symmetric weights (rhs_offset == 0) the input offset is folded into each column's bias once
 * (bias + lhs_offset * sum(w), wrapping), so the 2x2 inner loop multiplies raw int8 values. A lone last row
 * (and any rhs_offset) takes the 1x2 path, which adds both offsets while widening the bytes.
 *
 * This file picks the instance per column pair and holds the general C loops; the packed passes of the fast
 * instance (assembly on DSP targets) are in gemm_s8_packed.c (tte_gemm_packed.h).
 */
#include "tte_gemm.h"

#include "tte_dot.h"
#include "tte_fixedpoint.h"
#include "tte_gemm_packed.h"

/* The largest depth whose weights the packed pass widens first (tte_gemm_rows2_cols2_wide); its buffer takes
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

/* The pair of columns c0, c1 as the packed passes read it (tte_gemm_packed.h). */
static tte_gemm_pair pair_make(const gemm_column *c0, const gemm_column *c1, int32_t out_offset, const int8_t *w0,
                               int32_t depth, const int8_t *x_end)
{
    tte_gemm_pair p;
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
    uint32_t widened[TTE_GEMM_WIDE_DEPTH]; /* a column pair's weights as int16 (tte_gemm_widen_pair) */
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
            tte_gemm_pair p;
            tte_gemm_widen_pair(w0, depth, widened);
            p = pair_make(&c0, &c1, a.out.offset, (const int8_t *)widened, depth, lhs + (rows & ~1) * depth);
            p.w_end = (const int8_t *)(widened + depth); /* 4 depth bytes: both rows */
            tte_gemm_rows2_cols2_wide(&p, lhs, depth, cols, out + c);
#endif
        } else if (fold && packed) {
            const tte_gemm_pair p = pair_make(&c0, &c1, a.out.offset, w0, depth, lhs + (rows & ~1) * depth);
            tte_gemm_rows2_cols2_packed(&p, lhs, depth, cols, out + c);
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
