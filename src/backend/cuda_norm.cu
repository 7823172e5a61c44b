// RMSNorm on the GPU: y = x · r ⊙ w with r = 1 / sqrt(mean(x²) + eps), per row; and the fused
// residual form xo = x + dx; y = rmsnorm(xo) ⊙ w (xo may be x).
//
// One group of threads normalises one row, holding its values in registers (16 per thread, 8 on
// the scalar path), so x (and dx) are read once and y may alias x: a warp per row (4 rows per
// block) when the row fits 32 threads, else a block per row (up to 1024 threads: D <= 16384, or
// 8192 scalar). Rows longer than that take a two-pass kernel that re-reads x. Loads are 4-wide (float4, or 4 bf16 in 8
// bytes) when D, the strides and every pointer allow, else scalar. The sum of squares is fp32
// (per-thread partials, then a warp / block tree); r is formed from it in double as the CPU does,
// and y = w · (x · r) in fp32 in the CPU's order: results agree with the CPU to ~1e-7 relative
// before rounding to the output dtype.
#include "backend/cuda_internal.h"

namespace {

constexpr int kRowsPerBlock = 4; // warp-per-row kernels: warps (rows) per block

// Chunks of V values each thread keeps in registers: 16 values 4-wide, 8 scalar (more spills).
template <int V> constexpr int chunks_per_thread() { return V == 4 ? 4 : 8; }

// r = 1 / sqrt(mean + eps), in double from the fp32 sum of squares (as cpu_norm.c).
__device__ __forceinline__ float rms_inv(float ss, int D, float eps) {
    return (float)(1.0 / sqrt((double)ss / D + (double)eps));
}

// rms_inv of the sum of v over the block (a warp tree, then the warp totals in warp 0), formed
// once by thread 0 and returned to every thread: the double-precision chain once a row, not once
// a thread. Called once per kernel (its buffer is not reused).
__device__ float block_rms_inv(float v, int D, float eps) {
    __shared__ float part[32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = warp_sum(v);
    if (lane == 0) part[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = warp_sum(lane < nw ? part[lane] : 0.0f);
        if (lane == 0) part[0] = rms_inv(v, D, eps);
    }
    __syncthreads();
    return part[0];
}

// Rows in registers. ADD: x (F32) + dx first, written to xo (F32; may be x). Each thread owns
// chunks g, g + G, ... (V values each) of its row, G the group size (32, or the block).
//   y: (M, ldy)   x, xo: (M, ldx)   dx: (M, D) when ADD   w: (D)
template <int V, bool ADD, typename TY, typename TX, typename TD, typename TW>
__global__ void __launch_bounds__(1024)
k_rmsnorm(TY *y, int64_t ldy, const TX *x, float *xo, int64_t ldx, const TD *dx, const TW *w,
          int M, int D, float eps, int warp_rows) {
    constexpr int C = chunks_per_thread<V>();
    int G, g, row;
    if (warp_rows) {
        G = 32, g = threadIdx.x & 31;
        row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
        if (row >= M) return; // whole warps leave; warp mode has no block barrier
    } else {
        G = blockDim.x, g = threadIdx.x, row = blockIdx.x;
    }
    const TX *xr = x + (size_t)row * ldx;
    TY *yr = y + (size_t)row * ldy;
    int chunks = D / V;
    float v[C][V];
    float ss = 0.0f;
#pragma unroll
    for (int j = 0; j < C; j++) {
        int c = g + j * G;
#pragma unroll
        for (int k = 0; k < V; k++) v[j][k] = 0.0f;
        if (c < chunks) {
            ldv<V>(xr + (size_t)c * V, v[j]);
            if constexpr (ADD) {
                float d[V];
                ldv<V>(dx + (size_t)row * D + (size_t)c * V, d);
#pragma unroll
                for (int k = 0; k < V; k++) v[j][k] += d[k];
                stv<V>(xo + (size_t)row * ldx + (size_t)c * V, v[j]);
            }
#pragma unroll
            for (int k = 0; k < V; k++) ss += v[j][k] * v[j][k];
        }
    }
    // the weights' loads are in flight during the reduction (at decode the kernel is one row:
    // its time is the chain of dependent loads, not their bytes)
    float wv[C][V];
#pragma unroll
    for (int j = 0; j < C; j++) {
        int c = g + j * G;
        if (c < chunks) ldv<V>(w + (size_t)c * V, wv[j]);
    }
    const float inv = warp_rows ? rms_inv(warp_sum(ss), D, eps) : block_rms_inv(ss, D, eps);
#pragma unroll
    for (int j = 0; j < C; j++) {
        int c = g + j * G;
        if (c < chunks) {
            float o[V];
#pragma unroll
            for (int k = 0; k < V; k++) o[k] = wv[j][k] * (v[j][k] * inv);
            stv<V>(yr + (size_t)c * V, o);
        }
    }
}

// Rows too long for registers: a block per row, x (xo when ADD) re-read in the second pass (each
// thread re-reads only what it read, and wrote when ADD, itself).
template <bool ADD, typename TY, typename TX, typename TD, typename TW>
__global__ void __launch_bounds__(1024)
k_rmsnorm_long(TY *y, int64_t ldy, const TX *x, float *xo, int64_t ldx, const TD *dx,
               const TW *w, int D, float eps) {
    size_t row = blockIdx.x;
    const TX *xr = x + row * ldx;
    float *xor_ = ADD ? xo + row * ldx : nullptr;
    TY *yr = y + row * ldy;
    float ss = 0.0f;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float v = ldf(xr + d);
        if constexpr (ADD) {
            v += ldf(dx + row * D + d);
            stf(xor_ + d, v);
        }
        ss += v * v;
    }
    const float inv = block_rms_inv(ss, D, eps);
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        const float v = ADD ? ldf(xor_ + d) : ldf(xr + d);
        stf(yr + d, ldf(w + d) * (v * inv));
    }
}

template <typename T> int aligned4(const T *p) { return (uintptr_t)p % (4 * sizeof(T)) == 0; }

template <bool ADD, typename TY, typename TX, typename TD, typename TW>
void launch_norm(const ae_backend *be, TY *y, int64_t ldy, const TX *x, float *xo, int64_t ldx,
                 const TD *dx, const TW *w, int M, int D, float eps, const char *name) {
    cudaStream_t s = stream_of(be);
    int v4 = D % 4 == 0 && ldx % 4 == 0 && ldy % 4 == 0 && aligned4(y) && aligned4(x) &&
             aligned4(w) && (!ADD || (aligned4(dx) && aligned4(xo)));
    int C = v4 ? chunks_per_thread<4>() : chunks_per_thread<1>(), chunks = v4 ? D / 4 : D;
    if (chunks <= 32 * C) { // a warp per row
        unsigned blocks = (unsigned)((M + kRowsPerBlock - 1) / kRowsPerBlock);
        if (v4)
            k_rmsnorm<4, ADD><<<blocks, 32 * kRowsPerBlock, 0, s>>>(y, ldy, x, xo, ldx, dx, w, M,
                                                                  D, eps, 1);
        else
            k_rmsnorm<1, ADD><<<blocks, 32 * kRowsPerBlock, 0, s>>>(y, ldy, x, xo, ldx, dx, w, M,
                                                                  D, eps, 1);
    } else if (chunks <= 1024 * C) { // a block per row, about 2 chunks per thread
        int nt = (chunks + 1) / 2;
        nt = nt > 1024 ? 1024 : (nt + 31) / 32 * 32;
        if (v4)
            k_rmsnorm<4, ADD><<<(unsigned)M, nt, 0, s>>>(y, ldy, x, xo, ldx, dx, w, M, D, eps, 0);
        else
            k_rmsnorm<1, ADD><<<(unsigned)M, nt, 0, s>>>(y, ldy, x, xo, ldx, dx, w, M, D, eps, 0);
    } else {
        k_rmsnorm_long<ADD><<<(unsigned)M, 1024, 0, s>>>(y, ldy, x, xo, ldx, dx, w, D, eps);
    }
    cuda_check(be, cudaGetLastError(), name);
}

} // namespace

void ae_cuda_rmsnorm(const ae_backend *be, ae_ptr y, ae_ptr x, ae_ptr w, int M, int D, int64_t ld,
                     float eps) {
    if (cuda_failed(be)) return;
    cuda_need(y, AE_M_FLOAT, "rmsnorm", "y");
    cuda_need(x, AE_M_FLOAT, "rmsnorm", "x");
    cuda_need(w, AE_M_FLOAT, "rmsnorm", "w");
    if (M <= 0 || D <= 0) return;
    AE_CUDA_FLOAT_DISPATCH(y.dtype, TY, AE_CUDA_FLOAT_DISPATCH(x.dtype, TX,
        AE_CUDA_FLOAT_DISPATCH(w.dtype, TW,
            launch_norm<false>(be, (TY *)y.data, ld, (const TX *)x.data, (float *)NULL, ld,
                               (const float *)NULL, (const TW *)w.data, M, D, eps, "rmsnorm"))));
}

void ae_cuda_add_rmsnorm(const ae_backend *be, ae_ptr xo, ae_ptr x, ae_ptr dx, ae_ptr y,
                         ae_ptr w, int M, int D, float eps) {
    if (cuda_failed(be)) return;
    cuda_need(xo, AE_M_F32, "add_rmsnorm", "xo");
    cuda_need(x, AE_M_F32, "add_rmsnorm", "x");
    cuda_need(dx, AE_M_FLOAT, "add_rmsnorm", "dx");
    cuda_need(y, AE_M_FLOAT, "add_rmsnorm", "y");
    cuda_need(w, AE_M_FLOAT, "add_rmsnorm", "w");
    if (M <= 0 || D <= 0) return;
    AE_CUDA_FLOAT_DISPATCH(y.dtype, TY, AE_CUDA_FLOAT_DISPATCH(dx.dtype, TD,
        AE_CUDA_FLOAT_DISPATCH(w.dtype, TW,
            launch_norm<true>(be, (TY *)y.data, D, (const float *)x.data, (float *)xo.data, D,
                              (const TD *)dx.data, (const TW *)w.data, M, D, eps,
                              "add_rmsnorm"))));
}
