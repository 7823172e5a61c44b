// The CUDA backend's entry points (backend/cuda.cu), present when built with AE_HAVE_CUDA.
// Everything else about it is reached through the op table (backend/ops.h).
#ifndef AE_BACKEND_CUDA_H
#define AE_BACKEND_CUDA_H

#include "backend/ops.h"

#ifdef __cplusplus
extern "C" {
#endif

// Number of usable CUDA devices (0 when there is no driver or no device).
int ae_cuda_device_count(void);
// Opens device `dev`: AE_ERR_UNSUPPORTED naming the reason when it does not exist or cannot be
// used (no driver, compute capability below 8.0).
ae_status ae_backend_cuda_open(int dev, const ae_backend **out);
void ae_backend_cuda_close(const ae_backend *be);

#ifdef __cplusplus
}
#endif

#endif
