/* Element-wise int8 addition with the two input stages read from 256-entry tables (built at compile time from
 * the same arithmetic as tte_add_s8), so each element costs two lookups and one requantization. */
#include "tte_eltwise.h"
#include "tte_fixedpoint.h"

static TTE_ALWAYS_INLINE void add_lut(const tte_add_lut_params *params, const int32_t *table1,
                                      const int32_t *table2, int32_t size, const int8_t *in1, const int8_t *in2,
                                      int8_t *out, int fast)
{
    const tte_channel_rq rq = tte_channel_rq_make(params->output_multiplier, params->output_shift);
    const tte_out_stage o = tte_out_stage_make(params->output_offset, params->act_min, params->act_max);
    const int32_t *t1 = table1 + 128, *t2 = table2 + 128;
    int32_t i;
    if (fast == 2) { /* tte_fast_out_ok: the zero point folded into the rounding constant */
        const int32_t m = rq.multiplier, k = tte_fast_k_out(&rq, o.offset), sh = rq.fast_sh;
#if defined(__GNUC__)
        /* Hide that the pointers are table + 128: GCC would index with (x + 128) * 4 (an SMLABB per lookup)
         * instead of a load with a shifted register offset. */
        __asm__("" : "+r"(t1), "+r"(t2));
#endif
        for (i = 0; i < size; i++) {
            out[i] = tte_requant_fast_s8(t1[in1[i]] + t2[in2[i]], m, k, sh);
        }
        return;
    }
    for (i = 0; i < size; i++) {
        out[i] = tte_requant_out(&rq, t1[in1[i]] + t2[in2[i]], &o, fast);
    }
}

static TTE_NOINLINE void add_lut_fast_out(const tte_add_lut_params *params, const int32_t *table1,
                                          const int32_t *table2, int32_t size, const int8_t *in1,
                                          const int8_t *in2, int8_t *out)
{
    add_lut(params, table1, table2, size, in1, in2, out, 2);
}

static TTE_NOINLINE void add_lut_fast(const tte_add_lut_params *params, const int32_t *table1,
                                      const int32_t *table2, int32_t size, const int8_t *in1, const int8_t *in2,
                                      int8_t *out)
{
    add_lut(params, table1, table2, size, in1, in2, out, 1);
}

static TTE_NOINLINE void add_lut_general(const tte_add_lut_params *params, const int32_t *table1,
                                         const int32_t *table2, int32_t size, const int8_t *in1,
                                         const int8_t *in2, int8_t *out)
{
    add_lut(params, table1, table2, size, in1, in2, out, 0);
}

void tte_add_lut_s8(const tte_add_lut_params *params, const int32_t *table1, const int32_t *table2, int32_t size,
                    const int8_t *in1, const int8_t *in2, int8_t *out)
{
    const tte_requant q = {&params->output_multiplier, &params->output_shift, 0};
    const tte_out_stage o = tte_out_stage_make(params->output_offset, params->act_min, params->act_max);
    if (tte_fast_out_ok(&q, 1, &o)) {
        add_lut_fast_out(params, table1, table2, size, in1, in2, out);
    } else if (tte_fast_ok(&q, 1, &o)) {
        add_lut_fast(params, table1, table2, size, in1, in2, out);
    } else {
        add_lut_general(params, table1, table2, size, in1, in2, out);
    }
}
