/* fake_model.c: see fake_model.h. */
#include "fake_model.h"

#include <string.h>

static int8_t fake_arena[FAKE_ARENA_BYTES];
static int8_t fake_bias[4] = {0, 0, 0, 0};
static uint32_t fake_chain = 0u;

static int8_t saturate(int32_t v) { return (int8_t)(v > 127 ? 127 : (v < -128 ? -128 : v)); }

int8_t *fake_input_buffer(int index) { return index == 0 ? fake_arena : (int8_t *)0; }

static void take_input(const int8_t *input)
{
    if (input != fake_arena) {
        memcpy(fake_arena, input, FAKE_INPUT_SIZE);
    }
}

int fake_infer(const int8_t *input, int8_t *output)
{
    take_input(input);
    for (int j = 0; j < FAKE_OUTPUT_SIZE; ++j) {
        output[j] = saturate((int32_t)fake_arena[j] + fake_bias[j]);
    }
    fake_arena[0] = 0; /* inference overwrites its input, as a real model does */
    return 0;
}

float fake_train_step(const int8_t *x, int32_t label, float lr)
{
    uint32_t sum = 0u;
    take_input(x);
    for (int i = 0; i < FAKE_INPUT_SIZE; ++i) {
        sum += (uint8_t)fake_arena[i];
    }
    fake_chain = fake_chain * 31u + sum + (uint32_t)label;
    if (label >= 0 && label < 4) {
        fake_bias[label] = saturate((int32_t)fake_bias[label] + (int32_t)(lr * 4.0f));
    }
    return (float)(fake_chain % 1000u) * 0.001f;
}

void fake_params_get(uint8_t *dst)
{
    memcpy(dst, fake_bias, 4);
    for (int i = 0; i < 4; ++i) {
        dst[4 + i] = (uint8_t)(fake_chain >> (8 * i));
    }
}

void fake_params_set(const uint8_t *src)
{
    memcpy(fake_bias, src, 4);
    fake_chain = (uint32_t)src[4] | (uint32_t)src[5] << 8 | (uint32_t)src[6] << 16 | (uint32_t)src[7] << 24;
}

void fake_seed(uint32_t seed) { fake_chain = seed; }
