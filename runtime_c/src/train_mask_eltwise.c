/* Forward kernels of the train step without weights: add, requantize, average pool and mean that also write
 * their clamp mask, and the channel gather that saves a weight update's input (tte_train.h). The arithmetic is
 * the forward kernels' (add.c, add_lut.c, requantize.c, avg_pool2d.c, mean.c), element by element. */
#include "tte_train.h"
#include "tte_train_util.h"

void tte_add_mask_s8(const tte_add_params *params, int32_t size, const int8_t *in1, const int8_t *in2,
                     int8_t *out, uint8_t *mask)
{
    const tte_channel_rq rq1 = tte_channel_rq_make(params->input1_multiplier, params->input1_shift);
    const tte_channel_rq rq2 = tte_channel_rq_make(params->input2_multiplier, params->input2_shift);
    const tte_channel_rq rqo = tte_channel_rq_make(params->output_multiplier, params->output_shift);
    const tte_out_stage o = tte_out_stage_make(params->output_offset, params->act_min, params->act_max);
    const int32_t off1 = params->input1_offset, off2 = params->input2_offset, ls = params->left_shift;
    tte_bit_writer bits = tte_bits_start(mask);
    int32_t i;
    for (i = 0; i < size; i++) {
        const int32_t a = tte_channel_rq_apply(&rq1, (in1[i] + off1) * (1 << ls));
        const int32_t b = tte_channel_rq_apply(&rq2, (in2[i] + off2) * (1 << ls));
        out[i] = tte_out_mask_s8(tte_channel_rq_apply(&rqo, a + b), &o, &bits);
    }
    tte_bits_flush(&bits);
}

void tte_add_lut_mask_s8(const tte_add_lut_params *params, const int32_t *table1, const int32_t *table2,
                         int32_t size, const int8_t *in1, const int8_t *in2, int8_t *out, uint8_t *mask)
{
    const tte_channel_rq rq = tte_channel_rq_make(params->output_multiplier, params->output_shift);
    const tte_out_stage o = tte_out_stage_make(params->output_offset, params->act_min, params->act_max);
    const int32_t *t1 = table1 + 128, *t2 = table2 + 128;
    tte_bit_writer bits = tte_bits_start(mask);
    int32_t i;
    for (i = 0; i < size; i++) {
        out[i] = tte_out_mask_s8(tte_channel_rq_apply(&rq, t1[in1[i]] + t2[in2[i]]), &o, &bits);
    }
    tte_bits_flush(&bits);
}

void tte_requantize_mask_s8(const tte_requantize_params *params, int32_t size, const int8_t *in, int8_t *out,
                            uint8_t *mask)
{
    const tte_channel_rq rq = tte_channel_rq_make(params->multiplier, params->shift);
    const tte_out_stage o = tte_out_stage_make(params->output_offset, -128, 127);
    const int32_t x_off = params->input_offset;
    tte_bit_writer bits = tte_bits_start(mask);
    int32_t i;
    for (i = 0; i < size; i++) {
        out[i] = tte_out_mask_s8(tte_channel_rq_apply(&rq, in[i] + x_off), &o, &bits);
    }
    tte_bits_flush(&bits);
}

void tte_avg_pool2d_mask_s8(const tte_pool_params *params, const tte_dims *in_dims, const int8_t *in,
                            const tte_dims *out_dims, int8_t *out, uint8_t *mask)
{
    const int32_t h = in_dims->h, w = in_dims->w, c = in_dims->c;
    const tte_out_stage o = tte_out_stage_make(0, params->act_min, params->act_max);
    tte_bit_writer bits = tte_bits_start(mask);
    int32_t n, oy, ox, ch, ky, kx;
    for (n = 0; n < out_dims->n; n++) {
        for (oy = 0; oy < out_dims->h; oy++) {
            const int32_t iy0 = oy * params->stride_h - params->pad_top;
            const int32_t ky0 = tte_max32(0, -iy0), ky1 = tte_min32(params->kernel_h, h - iy0);
            for (ox = 0; ox < out_dims->w; ox++) {
                const int32_t ix0 = ox * params->stride_w - params->pad_left;
                const int32_t kx0 = tte_max32(0, -ix0), kx1 = tte_min32(params->kernel_w, w - ix0);
                const int32_t count = (ky1 - ky0) * (kx1 - kx0);
                for (ch = 0; ch < c; ch++) {
                    int32_t acc = 0;
                    for (ky = ky0; ky < ky1; ky++) {
                        const int8_t *x = in + (((n * h + iy0 + ky) * w + ix0) * c + ch);
                        for (kx = kx0; kx < kx1; kx++) {
                            acc += x[kx * c];
                        }
                    }
                    /* rounded half away from zero, as tte_avg_pool2d_s8 */
                    acc = acc > 0 ? (acc + count / 2) / count : (acc - count / 2) / count;
                    *out++ = tte_out_mask_s8(acc, &o, &bits);
                }
            }
        }
    }
    tte_bits_flush(&bits);
}

void tte_mean_mask_s8(const tte_mean_params *params, const tte_dims *in_dims, const int8_t *in, int8_t *out,
                      uint8_t *mask)
{
    const int32_t count = in_dims->h * in_dims->w, inner = in_dims->c;
    const int32_t bias = params->input_offset * count;
    const tte_channel_rq rq = tte_channel_rq_make(params->multiplier, params->shift);
    const tte_out_stage o = tte_out_stage_make(params->output_offset, -128, 127);
    tte_bit_writer bits = tte_bits_start(mask);
    int32_t b, c, i;
    for (b = 0; b < in_dims->n; b++) {
        const int8_t *src = in + b * count * inner;
        for (c = 0; c < inner; c++) {
            int32_t sum = bias;
            for (i = 0; i < count; i++) {
                sum += src[i * inner + c];
            }
            *out++ = tte_out_mask_s8(tte_channel_rq_apply(&rq, sum), &o, &bits);
        }
    }
    tte_bits_flush(&bits);
}

void tte_gather_channels_s8(int32_t rows, int32_t in_channels, const int8_t *in, int32_t count,
                            const int16_t *channels, int8_t *out)
{
    int32_t r, t;
    for (r = 0; r < rows; r++) {
        const int8_t *x = in + r * in_channels;
        for (t = 0; t < count; t++) {
            *out++ = x[channels[t]];
        }
    }
}
