/* A byte copy, for a reshape whose output the memory plan did not alias to its input. */
#include "tte_shape.h"

void tte_copy_s8(int32_t size, const int8_t *in, int8_t *out)
{
    int32_t i;
    for (i = 0; i < size; i++) {
        out[i] = in[i];
    }
}
