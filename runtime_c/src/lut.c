/* Table lookup: any unary int8 -> int8 op, its table computed at compile time from the reference. */
#include "tte_eltwise.h"

void tte_lut_s8(const int8_t *table, int32_t size, const int8_t *in, int8_t *out)
{
    int32_t i;
    for (i = 0; i < size; i++) {
        out[i] = table[in[i] + 128];
    }
}
