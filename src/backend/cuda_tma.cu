// Tensor maps for the TMA unit (cuda_tma.h).
#include <cuda_runtime.h>

#include "backend/cuda_tma.h"

typedef CUresult (*encode_tiled_fn)(CUtensorMap *, CUtensorMapDataType, cuuint32_t, void *,
                                    const cuuint64_t *, const cuuint64_t *, const cuuint32_t *,
                                    const cuuint32_t *, CUtensorMapInterleave, CUtensorMapSwizzle,
                                    CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

// cuTensorMapEncodeTiled from the driver through the runtime; null when the driver lacks it.
static encode_tiled_fn load_encode_tiled() {
    void *fn = nullptr;
    cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
#if CUDART_VERSION >= 12050
    const cudaError_t err = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000,
                                                             cudaEnableDefault, &q);
#else
    const cudaError_t err = cudaGetDriverEntryPoint("cuTensorMapEncodeTiled", &fn,
                                                    cudaEnableDefault, &q);
#endif
    if (err != cudaSuccess || q != cudaDriverEntryPointSuccess || !fn) {
        cudaGetLastError();
        return nullptr;
    }
    return (encode_tiled_fn)fn;
}
static encode_tiled_fn encode_tiled() {
    static const encode_tiled_fn fn = load_encode_tiled(); // thread-safe one-time lookup
    return fn;
}

int cuda_tma_available(void) { return encode_tiled() != nullptr; }

int cuda_tmap_bf16(CUtensorMap *m, const void *base, int rank, const uint64_t *dims,
                   const uint64_t *strides, const uint32_t *box) {
    const encode_tiled_fn enc = encode_tiled();
    if (!enc || rank < 2 || rank > 5) return 0;
    cuuint64_t d[5], st[4];
    cuuint32_t b[5], estr[5];
    for (int i = 0; i < rank; i++) {
        d[i] = dims[i];
        b[i] = box[i];
        estr[i] = 1;
        if (i > 0) st[i - 1] = strides[i - 1];
    }
    return enc(m, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, (cuuint32_t)rank, (void *)base, d, st, b, estr,
               CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
               CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) ==
           CUDA_SUCCESS;
}

int cuda_tmap_keys(CUtensorMap *m, const void *x, int keys, int heads, int cols, int stride,
                   int box_keys) {
    if (((uintptr_t)x & 15) || stride % 8) return 0;
    const uint64_t dims[3] = {(uint64_t)cols, (uint64_t)heads, (uint64_t)keys};
    const uint64_t strides[2] = {(uint64_t)cols * 2, (uint64_t)stride * 2}; // bf16
    const uint32_t box[3] = {64, 1, (uint32_t)box_keys};
    return cuda_tmap_bf16(m, x, 3, dims, strides, box);
}
