/* tte runtime: int8 fully connected (TFLite Micro's FULLY_CONNECTED, per-tensor or per-channel weights).
 *
 * For each batch row b and output o: acc = sum_i (w[o, i] + filter_offset) * (x[b, i] + input_offset) + bias[o]
 * (wrapping int32 addition); y = clamp(MBQM(acc, multiplier[o], shift[o]) + output_offset, act_min, act_max).
 * Dims: in_dims {batches, 1, 1, I}; filter_dims {O, 1, 1, I}; out_dims {batches, 1, 1, O}. bias may be NULL.
 * Limits: I < 32768.
 */
#ifndef TTE_FC_H
#define TTE_FC_H

#include "tte_types.h"

void tte_fully_connected_s8(const tte_fc_params *params, const tte_requant *quant, const tte_dims *in_dims,
                            const int8_t *in, const tte_dims *filter_dims, const int8_t *filter,
                            const int32_t *bias, const tte_dims *out_dims, int8_t *out);

#endif /* TTE_FC_H */
