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
// High-water marks of the device's stream-ordered memory pool, in bytes, after the backend's
// stream has drained (every allocation of the backend comes from that pool): *used_high, the
// most memory handed out at once (what PyTorch's max_memory_allocated reports); *reserved_high,
// the most the pool held from the driver (max_memory_reserved). With reset != 0 both marks are
// then reset (the driver allows resetting them to zero only; reset before the allocations of
// what is measured). Not counted: the CUDA context and the cuBLASLt workspace. For benchmarks
// (peak memory of a run); be must be a cuda backend. AE_ERR_DEVICE when the pool cannot be
// queried.
ae_status ae_cuda_mem_peak(const ae_backend *be, int reset, size_t *used_high, size_t *reserved_high);
// The backend's stream (a cudaStream_t): every op of `be` runs on it in order. For benchmarks
// that time a sequence of ops with CUDA events recorded on that stream.
void *ae_cuda_stream(const ae_backend *be);
// The kernels attention_bwd runs for arguments `a` (shape, window, ring, strides) under the
// current AE_CUDA_ATTN_BWD, on this device and build: "wgmma" (Hopper), "split", "fused" (the
// tensor-core path), "ref" (CUDA cores), or a "none (...)" sentence when the call would fail
// (wgmma forced without its sm_90a code). The dispatcher's own decision (pick_kernels in
// cuda_attention_bwd.cu), for operands as the backend's allocator gives them: q, k, v 16-byte
// aligned, dk and dv different memory (absorbed MLA's dk == dv always runs "ref"). For tests and
// benchmarks that must know which kernels ran.
const char *ae_cuda_attn_bwd_kernels(const ae_backend *be, const ae_attn_args *a);
// How the last Hopper (wgmma) attention_bwd in this process computed dq: "ds" (from the dS tiles
// its dK/dV kernel stored), "ws" (the warp-specialised dQ kernel), "sync" (the synchronous one),
// "none" before any (static storage). For tests and benchmarks.
const char *ae_cuda_attn_bwd_dq_last(void);
// The kernel and split-KV plan of the last `attention` call in this process, e.g. "flash (B),
// splits 32 (blocks 8, per_sm 2, keys 4096, min_keys 128)" (static storage). For benchmarks.
const char *ae_cuda_attn_last(void);
// The absorbed-MLA kernel (D or E of cuda_attention_mla.cu) of the last such launch, with its
// pipeline stages, row tiles, key-range splits and keys per row tile (static storage; "none"
// before one). For benchmarks.
const char *ae_cuda_mla_last(void);
// The kernel and split bound that the last attention_paged call in this process ran for its
// rows outside the tensor-core runs, e.g. "fold (k_paged_decode), splits 66" or
// "k_paged_attn + k_paged_combine, splits 32" (static storage). For tests and benchmarks.
const char *ae_cuda_paged_last(void);
// The path the last moe_ffn call in this process took: "gemv" (cuda_moe_decode.cu), "grouped"
// (cuda_moe.cu) or "none" (static storage). For tests and benchmarks.
const char *ae_cuda_moe_last(void);
// For tests of the graph fallback (backend/cuda_graph.cu): the next graph recording on `be`
// fails in its segment `segment` (0: the first) as a recording does when an op there makes a
// call that cannot be captured; the segments before it have run.
void ae_cuda_graph_fail_next(const ae_backend *be, int segment);

#ifdef __cplusplus
}
#endif

#endif
