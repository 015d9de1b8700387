/* A byte copy, for a reshape whose output the memory plan did not alias to its input. */
#include "tte_shape.h"

void tte_copy_s8(int32_t size, const int8_t *in, int8_t *out)
{
    int32_t i;
    for (i = 0; i < size; i++) {
        out[i] = in[i];
    }
}

/* Rows kept by a rolling stripe stage move down to the start of their slot: buf[0, size) = buf[from, from +
 * size), from > 0 (the regions may overlap: the copy runs upwards, so every byte is read before it is written
 * over). Words when the offset keeps them aligned (slots and rows are multiples of 4 bytes in practice). */
void tte_rows_shift_s8(int32_t from, int32_t size, int8_t *buf)
{
    int32_t i = 0;
    if (((from | size) & 3) == 0 && ((uintptr_t)buf & 3u) == 0u) {
        int32_t *w = (int32_t *)(void *)buf;
        const int32_t n = size >> 2, f = from >> 2;
        for (; i < n; i++) {
            w[i] = w[i + f];
        }
        i <<= 2;
    }
    for (; i < size; i++) {
        buf[i] = buf[i + from];
    }
}
