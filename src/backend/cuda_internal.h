// Private to the CUDA backend (the .cu files, compiled as CUDA C++17): its state, error
// handling, dtype helpers and the op implementations, gathered into the table by cuda.cu.
//
// Conventions every op follows:
//   - All work is queued on the backend's one stream (cu(be)->stream); ops never synchronise
//     (only download/sync do).
//   - An op starts with `if (cuda_failed(be)) return;`: after the first CUDA error the backend
//     is poisoned, later ops do nothing, and sync/download report the kept message.
//   - After each launch: cuda_check(be, cudaGetLastError(), "op name").
//   - Dtypes are checked with cuda_need(p, mask, "op", "arg"); a combination the op does not
//     implement aborts with a message (a bug in the caller, never in the input).
//   - Kernels take raw typed pointers; float inputs are read through ldf() and written through
//     stf() so one template serves F32 and BF16. Arithmetic is fp32.
#ifndef AE_BACKEND_CUDA_INTERNAL_H
#define AE_BACKEND_CUDA_INTERNAL_H

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "backend/cuda.h"
#include "backend/ops.h"

typedef __nv_bfloat16 bf16;

struct ae_cuda {
    int device;
    cudaStream_t stream;
    cublasLtHandle_t lt;
    void *lt_workspace;        // cuBLASLt workspace (device)
    size_t lt_workspace_bytes;
    int sm_count;              // multiprocessors
    size_t smem_optin;         // max dynamic shared memory per block after opt-in
    int cc_major, cc_minor;    // compute capability
    int poison;                // AE_CUDA_POISON=1: new allocations are filled with NaN (tests)
    size_t mem_limit;          // ATTNEDIT_MEM_LIMIT: the pool's used bytes allowed (0: none)
    ae_graph *rec;             // the graph recording in progress (cuda_graph.cu), or NULL
    int graphs;                // AE_CUDA_GRAPHS: 1 (default) records, 0: graph_begin declines
    int graph_seg_max;         // AE_CUDA_GRAPH_SEGMENT: cut points per segment at most (0: none)
    int graph_fail_next;       // ae_cuda_graph_fail_next (tests): 1 + the segment of the next
                               // recording that fails (0: none)
    int failed;                // an error is kept in `message`
    char message[512];
    char name[32];             // "cuda:0"
    char desc[160];            // "NVIDIA H200 (139.8 GiB, sm_90)"
};

static inline ae_cuda *cu(const ae_backend *be) { return (ae_cuda *)be->ctx; }
static inline cudaStream_t stream_of(const ae_backend *be) { return cu(be)->stream; }

// 1 when an earlier error is kept (the op must return without queueing work).
int cuda_failed(const ae_backend *be);
// Keeps the first error: "CUDA error in <op>: <cudaGetErrorString>".
void cuda_check(const ae_backend *be, cudaError_t e, const char *op);
// Same for a cuBLAS(Lt) status.
void cuda_check_blas(const ae_backend *be, int status, const char *op);

// Dtype masks for cuda_need.
enum { AE_M_F32 = 1, AE_M_BF16 = 2, AE_M_I32 = 4, AE_M_FLOAT = 3 };
// Aborts naming op and arg unless p's dtype is in `mask` (null pointers pass).
void cuda_need(ae_ptr p, int mask, const char *op, const char *arg);

// Element access shared by all kernels.
__device__ __forceinline__ float ldf(const float *p) { return *p; }
__device__ __forceinline__ float ldf(const bf16 *p) { return __bfloat162float(*p); }
__device__ __forceinline__ void stf(float *p, float v) { *p = v; }
__device__ __forceinline__ void stf(bf16 *p, float v) { *p = __float2bfloat16_rn(v); }
// Element i of an F32 (bf == 0) or BF16 (bf != 0) array whose dtype is known only at run time.
__device__ __forceinline__ float ld_any(const void *p, int bf, size_t i) {
    return bf ? __bfloat162float(((const bf16 *)p)[i]) : ((const float *)p)[i];
}
__device__ __forceinline__ void st_any(void *p, int bf, size_t i, float v) {
    if (bf)
        ((bf16 *)p)[i] = __float2bfloat16_rn(v);
    else
        ((float *)p)[i] = v;
}
// Sum over the 32 lanes of a warp, returned to every lane (butterfly: the same order in every
// lane, so every lane gets the same bits).
__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
// Largest of the 32 lanes' values, returned to every lane (max is exact: any order, the same bits).
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Whether p is 16-byte aligned (one 16-byte load or cp.async chunk per 8 bf16 / 4 fp32 values).
static inline int cuda_aligned16(const void *p) { return ((uintptr_t)p & 15u) == 0; }

// 4-value vector access (float4, or 4 x bf16 in 8 bytes) and its V = 1 fallback: ldv/stv<V>
// read or write V consecutive values as fp32; V = 4 needs 16-byte (F32) / 8-byte (BF16) aligned
// addresses.
__device__ __forceinline__ uint32_t bf16_bits(float v) {
    return (uint32_t)__bfloat16_as_ushort(__float2bfloat16_rn(v));
}
__device__ __forceinline__ void ld4(const float *p, float (&v)[4]) {
    float4 q = *reinterpret_cast<const float4 *>(p);
    v[0] = q.x, v[1] = q.y, v[2] = q.z, v[3] = q.w;
}
__device__ __forceinline__ void ld4(const bf16 *p, float (&v)[4]) {
    uint2 q = *reinterpret_cast<const uint2 *>(p); // little-endian: element 0 in the low half
    v[0] = __uint_as_float(q.x << 16), v[1] = __uint_as_float(q.x & 0xffff0000u);
    v[2] = __uint_as_float(q.y << 16), v[3] = __uint_as_float(q.y & 0xffff0000u);
}
__device__ __forceinline__ void st4(float *p, const float (&v)[4]) {
    *reinterpret_cast<float4 *>(p) = make_float4(v[0], v[1], v[2], v[3]);
}
__device__ __forceinline__ void st4(bf16 *p, const float (&v)[4]) {
    *reinterpret_cast<uint2 *>(p) = make_uint2(bf16_bits(v[0]) | bf16_bits(v[1]) << 16,
                                               bf16_bits(v[2]) | bf16_bits(v[3]) << 16);
}
template <int V, typename T> __device__ __forceinline__ void ldv(const T *p, float (&v)[V]) {
    if constexpr (V == 4) ld4(p, v);
    else v[0] = ldf(p);
}
template <int V, typename T> __device__ __forceinline__ void stv(T *p, const float (&v)[V]) {
    if constexpr (V == 4) st4(p, v);
    else stf(p, v[0]);
}

// Calls body with T = float or bf16 according to dt (other dtypes abort via cuda_need first).
#define AE_CUDA_FLOAT_DISPATCH(dt, T, ...)            \
    do {                                              \
        if ((dt) == AE_DT_F32) {                      \
            typedef float T;                          \
            __VA_ARGS__;                              \
        } else {                                      \
            typedef bf16 T;                           \
            __VA_ARGS__;                              \
        }                                             \
    } while (0)

static inline unsigned cuda_blocks(size_t n, unsigned threads) {
    size_t b = (n + threads - 1) / threads;
    return (unsigned)(b < 1 ? 1 : (b > 2147483647u ? 2147483647u : b));
}

// ---- op implementations (signatures of the ae_backend slots) ----
// cuda.cu: memory
ae_ptr ae_cuda_alloc(const ae_backend *be, size_t n, ae_dtype dt);
void ae_cuda_free(const ae_backend *be, ae_ptr p);
ae_status ae_cuda_upload(const ae_backend *be, ae_ptr dst, const void *src, ae_dtype src_dt,
                         size_t n);
ae_status ae_cuda_download(const ae_backend *be, void *dst, ae_dtype dst_dt, ae_ptr src,
                           size_t n);
ae_status ae_cuda_sync(const ae_backend *be);
void ae_cuda_mem_info(const ae_backend *be, size_t *free_bytes, size_t *total_bytes);
void ae_cuda_fill_normal(const ae_backend *be, ae_ptr dst, size_t n, float std, uint64_t seed);
// cuda_copy.cu
void ae_cuda_copy_rows(const ae_backend *be, ae_ptr dst, int64_t ldd, ae_ptr src, int64_t lds,
                       int rows, int cols);
void ae_cuda_copy_rows_rep(const ae_backend *be, ae_ptr dst, int64_t ldd, ae_ptr src,
                           int64_t lds, int rows, int rep, int cols);
void ae_cuda_sum_rows_rep(const ae_backend *be, ae_ptr dst, int64_t ldd, ae_ptr src, int64_t lds,
                          int rows, int rep, int cols);
void ae_cuda_fill(const ae_backend *be, ae_ptr dst, size_t n, float value);
void ae_cuda_embed(const ae_backend *be, ae_ptr y, ae_ptr table, ae_ptr ids, int T, int D);
// cuda_gemm.cu
void ae_cuda_gemm(const ae_backend *be, const ae_gemm_args *g, ae_ptr y, ae_ptr a, ae_ptr b);
void ae_cuda_matmul_group(const ae_backend *be, int n, const ae_ptr *y, ae_ptr x, const ae_ptr *w,
                          const int *N, int M, int K);
void ae_cuda_gate_up_silu(const ae_backend *be, ae_ptr act, ae_ptr g, ae_ptr u, ae_ptr x,
                          ae_ptr wg, ae_ptr wu, int M, int K, int N);
// cuda_norm.cu
void ae_cuda_rmsnorm(const ae_backend *be, ae_ptr y, ae_ptr x, ae_ptr w, int M, int D, int64_t ld,
                     float eps);
void ae_cuda_add_rmsnorm(const ae_backend *be, ae_ptr xo, ae_ptr x, ae_ptr dx, ae_ptr y,
                         ae_ptr w, int M, int D, float eps);
// cuda_rope.cu
void ae_cuda_rope(const ae_backend *be, ae_ptr x, ae_ptr pos, int T, int H, int stride, int rd,
                  double theta, ae_rope_mode mode);
// cuda_qk_norm_rope.cu
void ae_cuda_qk_norm_rope(const ae_backend *be, const ae_qk_norm_rope_args *a, ae_ptr q, ae_ptr k,
                          ae_ptr wq, ae_ptr wk, ae_ptr pos);
// cuda_elementwise.cu
void ae_cuda_gate_mul(const ae_backend *be, ae_ptr y, ae_ptr x, ae_ptr g, int T, int H, int hd,
                      int per_head);
void ae_cuda_silu_mul(const ae_backend *be, ae_ptr y, ae_ptr g, ae_ptr u, size_t n);
void ae_cuda_add(const ae_backend *be, ae_ptr y, ae_ptr a, ae_ptr b, size_t n);
// cuda_attention.cu
void ae_cuda_attention(const ae_backend *be, const ae_attn_args *a, ae_ptr out, ae_ptr q,
                       ae_ptr k, ae_ptr v);
// cuda_paged.cu
void ae_cuda_attention_paged(const ae_backend *be, const ae_paged_attn_args *a, ae_ptr out,
                             ae_ptr q, ae_ptr k, ae_ptr v);
void ae_cuda_paged_store(const ae_backend *be, ae_ptr dst, int64_t page_stride, int page_size,
                         int64_t ldd, ae_ptr src, int64_t lds, ae_ptr slot, int N, int cols);
void ae_cuda_paged_gather(const ae_backend *be, ae_ptr dst, int64_t ldd, ae_ptr src,
                          int64_t page_stride, int page_size, int64_t lds, ae_ptr table, int n,
                          int cols);
// cuda_moe.cu
void ae_cuda_moe_route(const ae_backend *be, ae_ptr idx, ae_ptr wts, ae_ptr probs, ae_ptr logits,
                       int T, int E, int K, int renorm);
void ae_cuda_moe_ffn(const ae_backend *be, ae_ptr y, ae_ptr x, ae_ptr idx, ae_ptr wts,
                     ae_ptr w_gate, ae_ptr w_up, ae_ptr w_down, int T, int D, int Im, int E, int K);
void ae_cuda_expert_matmul(const ae_backend *be, int n, const ae_ptr *y, ae_ptr x, const ae_ptr *w,
                           ae_ptr off, int S, int E, int N, int Kd);
void ae_cuda_expert_matmul_bwd(const ae_backend *be, int n, ae_ptr dx, const ae_ptr *dw,
                               const ae_ptr *dy, ae_ptr x, const ae_ptr *w, ae_ptr off, int S, int E,
                               int N, int Kd, int accumulate);
// cuda_moe_train.cu (MoE training: slot plan, combine and its backward, router backward)
void ae_cuda_moe_plan(const ae_backend *be, ae_ptr off, ae_ptr pos, ae_ptr tok, ae_ptr idx, int T,
                      int K, int E);
void ae_cuda_moe_combine(const ae_backend *be, ae_ptr y, ae_ptr o, ae_ptr pos, ae_ptr wts, int T,
                         int K, int D, int accumulate);
void ae_cuda_moe_combine_bwd(const ae_backend *be, ae_ptr dye, ae_ptr dw, ae_ptr dy, ae_ptr o,
                             ae_ptr pos, ae_ptr wts, int T, int K, int D);
void ae_cuda_moe_route_bwd(const ae_backend *be, ae_ptr dz, ae_ptr dw, ae_ptr probs, ae_ptr idx,
                           int T, int E, int K, int renorm);
// cuda_scores.cu
void ae_cuda_nll_rows(const ae_backend *be, ae_ptr out, ae_ptr z, ae_ptr target, int T, int V);
void ae_cuda_kl_rows(const ae_backend *be, ae_ptr out, ae_ptr zt, ae_ptr zs, int T, int V);
void ae_cuda_argmax_rows(const ae_backend *be, ae_ptr out, ae_ptr z, int T, int V);
void ae_cuda_sample_rows(const ae_backend *be, ae_ptr ids, ae_ptr z, ae_ptr params, int N, int V); // cuda_sample.cu
// cuda_backward.cu (training: backward ops other than attention)
void ae_cuda_rmsnorm_bwd(const ae_backend *be, ae_ptr dx, ae_ptr dw, ae_ptr dy, ae_ptr x,
                         ae_ptr w, int M, int D, float eps);
void ae_cuda_rope_bwd(const ae_backend *be, ae_ptr dx, ae_ptr pos, int T, int H, int stride,
                      int rd, double theta, ae_rope_mode mode);
void ae_cuda_gate_mul_bwd(const ae_backend *be, ae_ptr dx, ae_ptr dg, ae_ptr dy, ae_ptr x,
                          ae_ptr g, int T, int H, int hd, int per_head);
void ae_cuda_silu_mul_bwd(const ae_backend *be, ae_ptr dg, ae_ptr du, ae_ptr dy, ae_ptr g,
                          ae_ptr u, size_t n);
// cuda_attention_bwd.cu
void ae_cuda_attention_bwd(const ae_backend *be, const ae_attn_args *a, ae_ptr dq, ae_ptr dk,
                           ae_ptr dv, ae_ptr dsinks, ae_ptr dout, ae_ptr out, ae_ptr q,
                           ae_ptr k, ae_ptr v);

// cuda_graph.cu: the graph_* slots, and the recording's hooks in cuda.cu's memory and error
// handling. While a recording is in progress (cu(be)->rec), allocations come from the handle's
// workspace (the same addresses every step), frees of those are no-ops, and errors fail the
// recording instead of the backend.
void cuda_graph_options(ae_cuda *c); // reads AE_CUDA_GRAPHS and AE_CUDA_GRAPH_SEGMENT
ae_graph *ae_cuda_graph_new(const ae_backend *be);
void ae_cuda_graph_free(const ae_backend *be, ae_graph *g);
int ae_cuda_graph_begin(const ae_backend *be, ae_graph *g);
void ae_cuda_graph_cut(const ae_backend *be, ae_graph *g);
int ae_cuda_graph_end(const ae_backend *be, ae_graph *g, int ok);
void ae_cuda_graph_stats(const ae_backend *be, const ae_graph *g, ae_graph_stats *out);
// The recording in progress fails with `msg` (kept for its one logged line).
void cuda_graph_fail(const ae_backend *be, const char *msg);
// `bytes` of the recording's workspace; NULL when it is too small (the recording then asks for
// a retry with a larger one).
void *cuda_graph_alloc(const ae_backend *be, size_t bytes);
// Frees p inside a recording: a no-op for workspace memory; other memory is not freed and the
// recording fails (a buffer from outside freed inside could not be replayed).
void cuda_graph_release(const ae_backend *be, void *p);

// Scratch device memory for an op's own temporaries (stream-ordered: valid for work queued on
// the backend stream after the call; freed with cuda_tmp_free, also stream-ordered). NULL (and
// the error kept) on failure.
void *cuda_tmp_alloc(const ae_backend *be, size_t bytes, const char *op);
void cuda_tmp_free(const ae_backend *be, void *p);

#endif
