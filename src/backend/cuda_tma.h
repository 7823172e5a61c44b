// Tensor maps for the Hopper TMA unit (cp.async.bulk.tensor), made on the host: the driver's
// encoder reached through the runtime (no -lcuda link), and bf16 maps in the 128-byte swizzle
// layout every wgmma kernel here reads (cuda_wgmma.h).
#ifndef AE_BACKEND_CUDA_TMA_H
#define AE_BACKEND_CUDA_TMA_H

#include <cuda.h> // CUtensorMap and its enums only: the encoder comes through the runtime
#include <stdint.h>

// Whether this driver offers cuTensorMapEncodeTiled (else no TMA kernel can run).
int cuda_tma_available(void);

// A bf16 tensor map of `rank` (2 .. 5) dimensions over `base` (16-byte aligned): dims[0] the
// contiguous one, strides[i] the byte stride of dimension i + 1 (multiples of 16), box[i] the
// box extent in dimension i (box[0] = 64: one 128-byte swizzle row). Boxes land in shared memory
// 128-byte swizzled; what lies outside the tensor is read as zeros. 0 when the driver has no
// encoder or refuses the map.
int cuda_tmap_bf16(CUtensorMap *m, const void *base, int rank, const uint64_t *dims,
                   const uint64_t *strides, const uint32_t *box);

// The tensor map of attention keys or values stored as [keys][heads][cols] bf16 (heads `cols`
// apart, key rows `stride` elements apart: a K or V buffer of a sequence), boxes of 64 columns x
// 1 head x box_keys keys. 0 when the storage does not suit TMA (base or row stride not 16-byte
// aligned) or as cuda_tmap_bf16.
int cuda_tmap_keys(CUtensorMap *m, const void *x, int keys, int heads, int cols, int stride,
                   int box_keys);

#endif
