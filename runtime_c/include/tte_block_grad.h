/* tte runtime: the backward of an inverted-residual block in one pass over its expanded channels
 * (tte/train/block_grad.py, the op `block_grad`).
 *
 * The block is pw1 (1x1 conv, stride 1, C outputs from I inputs) -> depthwise (KH x KW, any stride and padding,
 * multiplier 1) -> pw2 (1x1 conv, stride 1, O outputs). Given the pw2 gradient after its mask, the kernel
 * computes, channel c by channel c (in groups of four), exactly what the unfused kernels compute:
 *   g2[p]  = sum over o ascending of (grad[p, o] * w2_scale[o]) * (float)w2[o, c]      (pw2 input gradient)
 *   dacc   = g2 where the depthwise mask bit is set, else 0; dw bias update of c (sum over p ascending)
 *   g1[q]  = sum over the taps (kh, then kw, ascending) whose output exists of (dacc[p] * dw_scale[c]) * w_dw
 *   dacc1  = g1 where the pw1 mask bit is set, else 0; pw1 bias update of c
 *   in_grad[q, i] += (dacc1[q] * w1_scale[c]) * (float)w1[c, i]     (c ascending: the unfused order)
 *   pw1 weight row c: gw[t] = sum over q ascending of dacc1[q] * (float)(saved[q, t] + input_offset), then the
 *   QAS update of w1_train[c, t] (t ascending)
 * so the two fp32 tensors of the expanded width never exist. Float rules: tte_train_math.h.
 *
 * PRNG: the unfused updates draw, in this order, C numbers (dw bias), C (pw1 bias), C * S (pw1 weight, row by
 * row), each present part only. The kernel runs one xorshift32 stream per part, started at the entry state
 * *rng_in advanced by the part's draw offset: the state n draws ahead of x is the XOR of the columns jump[b]
 * for the set bits b of x (a 32 x 32 matrix over GF(2), computed at compile time). It leaves *rng_out where the
 * unfused updates would (the last part's stream). rng_in == NULL: rounding to nearest.
 */
#ifndef TTE_BLOCK_GRAD_H
#define TTE_BLOCK_GRAD_H

#include "tte_train.h"
#include "tte_types.h"

#define TTE_BLOCK_GRAD_MAX_TAPS 64   /* depthwise kernel_h * kernel_w at most */
#define TTE_BLOCK_GRAD_MAX_WIDTH 128 /* block input width at most */

typedef struct {
    int32_t in_h, in_w, in_ch;    /* the block input (pw1 input = depthwise input): H1 >= 1,
                                     W1 in [1, TTE_BLOCK_GRAD_MAX_WIDTH], I in [1, 32767] */
    int32_t ch;                   /* C >= 1: the expanded channels */
    int32_t out_h, out_w, out_ch; /* H2, W2 >= 1: the depthwise output; O >= 1: pw2 output channels */
    int32_t kernel_h, kernel_w;   /* the depthwise kernel, >= 1, at most TTE_BLOCK_GRAD_MAX_TAPS taps */
    tte_conv_geom dw;             /* depthwise stride and top/left padding (ch_mult 1) */
    int32_t input_offset;         /* -zp of the saved pw1 input, [-127, 128] */
    int32_t trained;              /* S: input channels of w1 that train, [0, I] (0: the weight is frozen) */
} tte_block_grad_params;

typedef struct {
    const float *w2_scale;       /* [O] pw2 weight scales */
    const float *dw_scale;       /* [C] depthwise weight scales */
    const float *w1_scale;       /* [C] pw1 weight scales */
    const float *dw_bias_factor; /* [C] QAS factors, NULL when the depthwise bias is frozen */
    const float *b1_factor;      /* [C], NULL when the pw1 bias is frozen */
    const float *w1_factor;      /* [C], NULL when the pw1 weight is frozen */
    const uint32_t *jump[3];     /* stream starts (dw bias, pw1 bias, pw1 weight): 32 columns, NULL = entry */
} tte_block_grad_consts;

typedef struct {
    const int32_t *dw_bias; /* [C] current depthwise bias (NULL: frozen) */
    int32_t *dw_bias_out;   /* [C] its new value */
    const int32_t *b1;      /* [C] current pw1 bias (NULL: frozen) */
    int32_t *b1_out;        /* [C] its new value */
    int8_t *w1_train;       /* [C, S] the trained columns of w1 (part->sram, or the whole w1), in place */
    const uint32_t *rng_in; /* the xorshift32 state before the chain (nonzero), NULL: round to nearest */
    uint32_t *rng_out;      /* the state after it (may equal rng_in) */
} tte_block_grad_state;

/* Scratch floats the kernel needs: 4 (H2 W2 + H1 W1 + I + S + O + KH KW). */
int32_t tte_block_grad_scratch_floats(const tte_block_grad_params *params);

/* The fused block backward (file comment). grad [H2, W2, O]; w2 [O, C]; dw_mask / pw1_mask: the clamp masks of
 * the depthwise [H2, W2, C] and pw1 [H1, W1, C] outputs, NULL when the layer has none; dw_filter [KH, KW, C];
 * w1 [C, I] as compiled (flash) with `part` its trained channels in SRAM (NULL: w1 is whole and current);
 * saved [H1, W1, S] the trained input channels (NULL when S == 0); in_grad [H1, W1, I] (zeroed here) or NULL when
 * the block input needs no gradient. scratch: tte_block_grad_scratch_floats floats, all 0.0f on return. */
void tte_block_grad_s8_f32(const tte_block_grad_params *params, const tte_block_grad_consts *consts, const float *lr,
                           const float *grad, const int8_t *w2, const uint8_t *dw_mask, const int8_t *dw_filter,
                           const uint8_t *pw1_mask, const int8_t *w1, const tte_weight_part *part,
                           const int8_t *saved, const tte_block_grad_state *state, float *scratch, float *in_grad);

/* Internal to the kernel (train_block_dw.c). The taps of input coordinate t - pad along one axis: the first
 * valid kernel offset k0, its output index o0 and their count n (the next: k0 + j stride at output o0 - j). */
void tte_block_dw_taps(int32_t t, int32_t k_size, int32_t stride, int32_t out_size, int32_t *k0, int32_t *o0,
                       int32_t *n);

/* Internal to the kernel (train_block_dw.c). The depthwise input gradient of channels c0..c0+n-1 (n <= 4,
 * interleaved [H1 W1][4], lane k = channel col[k]) from das [H2 W2][4], with xtaps (k0, o0, n) of every input
 * column and wt 4 KH KW floats of scratch; then the pw1 mask (may be NULL) and the pw1 bias gradient sums. */
void tte_block_dw_grads(const tte_block_grad_params *p, const float *das, const int8_t *filter, const int32_t col[4],
                        const int16_t *xtaps, float *wt, const uint8_t *mask, int32_t c0, int32_t n, float *g1,
                        float sum[4]);

#endif /* TTE_BLOCK_GRAD_H */
