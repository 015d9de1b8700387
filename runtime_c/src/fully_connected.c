/* Fully connected layer: the GEMM with the batch rows as inputs and the weight rows as output channels. */
#include "tte_fc.h"
#include "tte_gemm.h"

void tte_fully_connected_s8(const tte_fc_params *params, const tte_requant *quant, const tte_dims *in_dims,
                            const int8_t *in, const tte_dims *filter_dims, const int8_t *filter,
                            const int32_t *bias, const tte_dims *out_dims, int8_t *out)
{
    tte_gemm_params g;
    (void)out_dims;
    g.lhs_offset = params->input_offset;
    g.rhs_offset = params->filter_offset;
    g.out_offset = params->output_offset;
    g.act_min = params->act_min;
    g.act_max = params->act_max;
    tte_gemm_s8(&g, quant, in_dims->n, in_dims->c, in, filter_dims->n, filter_dims->c, filter, bias, out);
}
