/* tte runtime: int8 softmax, bit-exact with TFLite Micro (see tte_softmax.h and tte/ops/softmax.py).
 *
 * The fixed-point functions below are gemmlowp's (fixedpoint.h) specialised to the formats the kernel uses:
 * Q5.26 exp input, Q0.31 exp output and reciprocal, Q2.29 Newton-Raphson iterate, Q12.19 sum.
 */
#include "tte_softmax.h"

#include <stddef.h>

#include "tte_fixedpoint.h"

enum {
    SCALED_DIFF_INTEGER_BITS = 5,   /* exp input Q5.26 */
    ACCUMULATION_INTEGER_BITS = 12, /* sum of exps Q12.19 */
    OUTPUT_BITS = 8
};

/* gemmlowp's raw constants: exp(-1/8) and 1/3 in Q0.31; 48/17 and -32/17 in Q2.29. */
#define EXP_MINUS_ONE_EIGHTH 1895147668
#define ONE_THIRD 715827883
#define FORTY_EIGHT_OVER_17 1515870810
#define NEG_THIRTY_TWO_OVER_17 (-1010580540)

/* exp(-2^k) in Q0.31 for k = -2 .. 4: multiplied in for each set bit of the (multiple of 1/4) remainder. */
static const int32_t exp_barrel[7] = {1672461947, 1302514674, 790015084, 290630308, 39332535, 720401, 242};

static int32_t wrap_sub(int32_t a, int32_t b)
{
    return (int32_t)((uint32_t)a - (uint32_t)b);
}

/* SaturatingRoundingMultiplyByPOT<e> for e in [1, 30]: x * 2^e saturated to int32. */
static int32_t saturating_shift_left(int32_t x, int32_t e)
{
    const int32_t threshold = (int32_t)((1u << (31 - e)) - 1u);
    if (x > threshold) {
        return INT32_MAX;
    }
    if (x < -threshold) {
        return INT32_MIN;
    }
    return (int32_t)((uint32_t)x << e);
}

/* exp(a) for a in [-1/4, 0), Q0.31: Taylor expansion around -1/8 in x = a + 1/8. */
static int32_t exp_on_interval_between_negative_one_quarter_and_0_excl(int32_t a)
{
    const int32_t x = tte_wrap_add(a, 1 << 28);
    const int32_t x2 = tte_srdhm(x, x);
    const int32_t x3 = tte_srdhm(x2, x);
    const int32_t x4 = tte_srdhm(x2, x2);
    const int32_t x4_over_4 = tte_rdbpot(x4, 2);
    const int32_t poly = tte_rdbpot(tte_wrap_add(tte_srdhm(tte_wrap_add(x4_over_4, x3), ONE_THIRD), x2), 1);
    return tte_wrap_add(EXP_MINUS_ONE_EIGHTH, tte_srdhm(EXP_MINUS_ONE_EIGHTH, tte_wrap_add(x, poly)));
}

/* exp(a) for a <= 0 in Q5.26 (a > -32), result Q0.31; exp(0) = INT32_MAX. */
static int32_t exp_on_negative_values_q5(int32_t a)
{
    const int32_t fractional_bits = 31 - SCALED_DIFF_INTEGER_BITS;
    const int32_t quarter = (int32_t)1 << (fractional_bits - 2);
    const int32_t a_mod_quarter_minus_quarter = wrap_sub(a & (quarter - 1), quarter);
    const int32_t remainder = wrap_sub(a_mod_quarter_minus_quarter, a);
    int32_t result = exp_on_interval_between_negative_one_quarter_and_0_excl(
        saturating_shift_left(a_mod_quarter_minus_quarter, SCALED_DIFF_INTEGER_BITS));
    int32_t k;
    /* With 5 integer bits all seven multipliers apply (k = -2 .. 4) and gemmlowp's clamp below -32 does not. */
    for (k = 0; k < 7; k++) {
        if (remainder & ((int32_t)1 << (fractional_bits - 2 + k))) {
            result = tte_srdhm(result, exp_barrel[k]);
        }
    }
    return a == 0 ? INT32_MAX : result;
}

/* gemmlowp RoundingHalfSum: (a + b) / 2 rounded half away from zero. */
static int32_t rounding_half_sum(int32_t a, int32_t b)
{
    const int64_t sum = (int64_t)a + b;
    return (int32_t)((sum + (sum >= 0 ? 1 : -1)) / 2);
}

/* 1 / (1 + a) for a in [0, 1), Q0.31 in and out: Newton-Raphson on the half denominator, in Q2.29. */
static int32_t one_over_one_plus_x_for_x_in_0_1(int32_t a)
{
    const int32_t half_denominator = rounding_half_sum(a, INT32_MAX);
    int32_t x = tte_wrap_add(FORTY_EIGHT_OVER_17, tte_srdhm(half_denominator, NEG_THIRTY_TWO_OVER_17));
    int32_t i;
    for (i = 0; i < 3; i++) {
        const int32_t one_minus_dx = wrap_sub((int32_t)1 << 29, tte_srdhm(half_denominator, x));
        x = tte_wrap_add(x, saturating_shift_left(tte_srdhm(x, one_minus_dx), 2));
    }
    return saturating_shift_left(x, 1);
}

static int32_t count_leading_zeros(uint32_t x)
{
    int32_t n = 0;
    if (x == 0) {
        return 32;
    }
    while (!(x & 0x80000000u)) {
        x <<= 1;
        n++;
    }
    return n;
}

/* exp(beta * s_in * (x - max)) in Q0.31 for one entry with diff = x - max >= diff_min. */
static int32_t exp_of_diff(const tte_softmax_params *params, int32_t diff)
{
    /* |diff| * 2^left_shift < 31 * 2^26 for diff >= diff_min: the shift does not overflow. */
    const int32_t scaled = tte_srdhm((int32_t)((uint32_t)diff << params->input_left_shift), params->input_multiplier);
    return exp_on_negative_values_q5(scaled);
}

static void softmax_row(const tte_softmax_params *params, int32_t depth, const int8_t *in, int8_t *out)
{
    int32_t max_in_row = -128;
    int32_t sum_of_exps = 0;
    int32_t headroom, num_bits_over_unit, shifted_scale, exponent, c;

    for (c = 0; c < depth; c++) {
        max_in_row = in[c] > max_in_row ? in[c] : max_in_row;
    }
    for (c = 0; c < depth; c++) {
        const int32_t diff = (int32_t)in[c] - max_in_row;
        if (diff >= params->diff_min) {
            sum_of_exps = tte_wrap_add(sum_of_exps, tte_rdbpot(exp_of_diff(params, diff), ACCUMULATION_INTEGER_BITS));
        }
    }
    /* GetReciprocal: normalise the sum to [1, 2), take 1 / sum there, keep the power of two apart. */
    headroom = count_leading_zeros((uint32_t)sum_of_exps);
    num_bits_over_unit = ACCUMULATION_INTEGER_BITS - headroom;
    shifted_scale = one_over_one_plus_x_for_x_in_0_1((int32_t)(((uint32_t)sum_of_exps << headroom) - 0x80000000u));
    exponent = num_bits_over_unit + 31 - OUTPUT_BITS;

    for (c = 0; c < depth; c++) {
        const int32_t diff = (int32_t)in[c] - max_in_row;
        int32_t y = -128;
        if (diff >= params->diff_min && exponent <= 31) {
            const int32_t unsat = tte_rdbpot(tte_srdhm(shifted_scale, exp_of_diff(params, diff)), exponent);
            y = tte_clamp(unsat - 128, -128, 127);
        }
        out[c] = (int8_t)y;
    }
}

void tte_softmax_s8(const tte_softmax_params *params, int32_t rows, int32_t depth, const int8_t *input,
                    int8_t *output)
{
    int32_t r;
    for (r = 0; r < rows; r++) {
        softmax_row(params, depth, input + (size_t)r * (size_t)depth, output + (size_t)r * (size_t)depth);
    }
}
