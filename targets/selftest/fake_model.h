/* fake_model.h: a stand-in for a compiled model with a train step, for testing the firmware harness
 * (tests/test_firmware_train.py). It has the generated model's interface and trivially checkable arithmetic:
 *   infer:      output[j] = saturate(input[j] + bias[j]), j < 4
 *   train_step: chain = chain * 31 + sum(x as uint8) + label (mod 2^32); bias[label] += (int)(lr * 4), saturated;
 *               returns (float)(chain % 1000) * 0.001f
 *   params:     bias[4] (int8), then chain (uint32, little-endian); seed(s) sets chain = s.
 */
#ifndef FAKE_MODEL_H
#define FAKE_MODEL_H

#include <stdint.h>

#define FAKE_ARENA_BYTES 16
#define FAKE_INPUT_SIZE 8
#define FAKE_OUTPUT_SIZE 4
#define FAKE_PARAMS_BYTES 8

int8_t *fake_input_buffer(int index);
int fake_infer(const int8_t *input, int8_t *output);
float fake_train_step(const int8_t *x, int32_t label, float lr);
void fake_params_get(uint8_t *dst);
void fake_params_set(const uint8_t *src);
void fake_seed(uint32_t seed);

#endif /* FAKE_MODEL_H */
