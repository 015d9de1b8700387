/* tte runtime: every kernel declaration (one header to include from generated code).
 *
 * Kernels are named tte_<op>[_variant]_<dtype> and take (params, quantization, dims/data pairs, output last),
 * as CMSIS-NN does. They are C99 without malloc, libm or printf; the caller owns all memory.
 */
#ifndef TTE_RUNTIME_H
#define TTE_RUNTIME_H

#include "tte_types.h"

#include "tte_block_grad.h"
#include "tte_broadcast.h"
#include "tte_concat.h"
#include "tte_conv.h"
#include "tte_depthwise_inplace.h"
#include "tte_eltwise.h"
#include "tte_fc.h"
#include "tte_grad_ext.h"
#include "tte_max_pool.h"
#include "tte_pool.h"
#include "tte_shape.h"
#include "tte_softmax.h"
#include "tte_train.h"

#endif /* TTE_RUNTIME_H */
