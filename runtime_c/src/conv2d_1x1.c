/* Pointwise convolution as a GEMM: output pixels x output channels, input channels as the depth. */
#include "tte_conv.h"
#include "tte_gemm.h"

void tte_conv2d_1x1_s8(const tte_conv_params *params, const tte_requant *quant, const tte_dims *in_dims,
                       const int8_t *in, const tte_dims *filter_dims, const int8_t *filter, const int32_t *bias,
                       const tte_dims *out_dims, int8_t *out)
{
    const int32_t cin = in_dims->c, cout = out_dims->c;
    tte_gemm_params g;
    int32_t n, oy;
    (void)filter_dims;
    g.lhs_offset = params->input_offset;
    g.rhs_offset = 0;
    g.out_offset = params->output_offset;
    g.act_min = params->act_min;
    g.act_max = params->act_max;
    if (params->stride_h == 1 && params->stride_w == 1) {
        const int32_t pixels = out_dims->n * out_dims->h * out_dims->w;
        tte_gemm_s8(&g, quant, pixels, cin, in, cout, cin, filter, bias, out);
        return;
    }
    /* Strided: each output row reads every stride_w-th pixel of every stride_h-th input row. */
    for (n = 0; n < out_dims->n; n++) {
        for (oy = 0; oy < out_dims->h; oy++) {
            const int8_t *row = in + ((n * in_dims->h + oy * params->stride_h) * in_dims->w) * cin;
            int8_t *dst = out + ((n * out_dims->h + oy) * out_dims->w) * cout;
            tte_gemm_s8(&g, quant, out_dims->w, params->stride_w * cin, row, cout, cin, filter, bias, dst);
        }
    }
}
