/* tte runtime: element-wise int8 kernels. `size` is the element count (>= 0); out may be the same buffer as
 * an input (each element is read before it is written). */
#ifndef TTE_ELTWISE_H
#define TTE_ELTWISE_H

#include "tte_types.h"

/* TFLite Micro's int8 ADD of two tensors of equal shape:
 * y = clamp(MBQM(MBQM((a + off1) << left_shift, M1, S1) + MBQM((b + off2) << left_shift, M2, S2), Mo, So)
 *           + output_offset, act_min, act_max). */
void tte_add_s8(const tte_add_params *params, int32_t size, const int8_t *in1, const int8_t *in2, int8_t *out);

/* tte_add_s8 with each input's stage precomputed for all 256 int8 values (at compile time):
 * table1[q + 128] = MBQM((q + off1) << left_shift, M1, S1), likewise table2, each in [-2^29, 2^29];
 * y = clamp(MBQM(table1[a + 128] + table2[b + 128], Mo, So) + output_offset, act_min, act_max). */
void tte_add_lut_s8(const tte_add_lut_params *params, const int32_t *table1, const int32_t *table2, int32_t size,
                    const int8_t *in1, const int8_t *in2, int8_t *out);

/* y = table[x + 128]: any unary int8 -> int8 function with fixed quantization. */
void tte_lut_s8(const int8_t *table, int32_t size, const int8_t *in, int8_t *out);

/* y = clamp(MBQM(x + input_offset, multiplier, shift) + output_offset, -128, 127). */
void tte_requantize_s8(const tte_requantize_params *params, int32_t size, const int8_t *in, int8_t *out);

#endif /* TTE_ELTWISE_H */
