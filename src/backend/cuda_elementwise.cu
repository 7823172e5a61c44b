// Elementwise ops on the GPU: sigmoid gate (y = x ⊙ σ(g)), SwiGLU product (y = silu(g) ⊙ u),
// residual add (y = a + b). Every operand is F32 or BF16 independently; math is fp32 with the CPU's
// formulas (σ(g) = 1 / (1 + expf(-g)), silu(g) · u = g / (1 + expf(-g)) · u), so results agree
// with cpu_elementwise.c to the few ulp by which CUDA's expf differs from the host's (add: bit for
// bit). Each thread reads an element's inputs before writing its output, so y may alias an input.
//
// silu_mul and add are flat: grid-stride over chunks of 4 values (float4, or 4 bf16 in 8 bytes)
// when every pointer is aligned for it, the last n % 4 values by single threads; else 1 value per
// chunk. gate_mul works on rows of hd values (a per-head gate is one value per row): `tpr`
// threads per row, `rpb` rows per block, like the row copy.
#include "backend/cuda_internal.h"

namespace {

constexpr int kThreads = 256;


__device__ __forceinline__ float sigmoid(float g) { return 1.0f / (1.0f + expf(-g)); }
__device__ __forceinline__ float silu_mul(float g, float u) { return g / (1.0f + expf(-g)) * u; }

template <typename T> int aligned4(const T *p) { return (uintptr_t)p % (4 * sizeof(T)) == 0; }

unsigned grid_for(const ae_backend *be, size_t work, unsigned threads) {
    size_t b = cuda_blocks(work, threads), cap = (size_t)(cu(be)->sm_count > 0 ? cu(be)->sm_count : 1) * 64;
    return (unsigned)(b < cap ? b : cap); // grid-stride beyond
}

// ---- silu_mul, add: flat -------------------------------------------------------------------------

// y = silu(g) ⊙ u    (n) each
template <int V, typename TY, typename TG, typename TU>
__global__ void __launch_bounds__(kThreads) k_silu_mul(TY *y, const TG *g, const TU *u, size_t n) {
    size_t i0 = blockIdx.x * (size_t)blockDim.x + threadIdx.x, stride = (size_t)gridDim.x * blockDim.x;
    size_t nv = n / V;
    for (size_t i = i0; i < nv; i += stride) {
        float a[V], b[V], o[V];
        ldv<V>(g + i * V, a);
        ldv<V>(u + i * V, b);
#pragma unroll
        for (int k = 0; k < V; k++) o[k] = silu_mul(a[k], b[k]);
        stv<V>(y + i * V, o);
    }
    if (V > 1 && i0 < n - nv * V) {
        size_t i = nv * V + i0;
        stf(y + i, silu_mul(ldf(g + i), ldf(u + i)));
    }
}

// y = a + b    (n) each; y may be a or b (each element is read before it is written)
template <int V, typename TY, typename TA, typename TB>
__global__ void __launch_bounds__(kThreads) k_add(TY *y, const TA *a, const TB *b, size_t n) {
    size_t i0 = blockIdx.x * (size_t)blockDim.x + threadIdx.x, stride = (size_t)gridDim.x * blockDim.x;
    size_t nv = n / V;
    for (size_t i = i0; i < nv; i += stride) {
        float va[V], vb[V];
        ldv<V>(a + i * V, va);
        ldv<V>(b + i * V, vb);
#pragma unroll
        for (int k = 0; k < V; k++) va[k] += vb[k];
        stv<V>(y + i * V, va);
    }
    if (V > 1 && i0 < n - nv * V) {
        size_t i = nv * V + i0;
        stf(y + i, ldf(a + i) + ldf(b + i));
    }
}

// ---- gate_mul: rows of hd ------------------------------------------------------------------------

// y = x ⊙ σ(g)   x, y: (rows, hd);  g: (rows, hd), or (rows) when per_head.
// 2^tpr_log2 threads per row; each handles chunks of V values.
template <int V, typename TY, typename TX, typename TG>
__global__ void __launch_bounds__(kThreads)
k_gate_mul(TY *y, const TX *x, const TG *g, size_t rows, int hd, int per_head, int tpr_log2) {
    int tpr = 1 << tpr_log2, lane = threadIdx.x & (tpr - 1), chunks = hd / V;
    size_t rpb = (size_t)(kThreads >> tpr_log2);
    for (size_t r = blockIdx.x * rpb + (threadIdx.x >> tpr_log2); r < rows; r += gridDim.x * rpb) {
        float sh = per_head ? sigmoid(ldf(g + r)) : 0.0f;
        size_t base = r * hd;
        for (int c = lane; c < chunks; c += tpr) {
            float a[V], s[V];
            ldv<V>(x + base + (size_t)c * V, a);
            if (per_head) {
#pragma unroll
                for (int k = 0; k < V; k++) s[k] = sh;
            } else {
                ldv<V>(g + base + (size_t)c * V, s);
#pragma unroll
                for (int k = 0; k < V; k++) s[k] = sigmoid(s[k]);
            }
#pragma unroll
            for (int k = 0; k < V; k++) a[k] = a[k] * s[k];
            stv<V>(y + base + (size_t)c * V, a);
        }
    }
}

} // namespace

void ae_cuda_gate_mul(const ae_backend *be, ae_ptr y, ae_ptr x, ae_ptr g, int T, int H, int hd,
                      int per_head) {
    if (cuda_failed(be)) return;
    cuda_need(y, AE_M_FLOAT, "gate_mul", "y");
    cuda_need(x, AE_M_FLOAT, "gate_mul", "x");
    cuda_need(g, AE_M_FLOAT, "gate_mul", "g");
    if (T <= 0 || H <= 0 || hd <= 0) return;
    size_t rows = (size_t)T * H;
    AE_CUDA_FLOAT_DISPATCH(y.dtype, TY, AE_CUDA_FLOAT_DISPATCH(x.dtype, TX,
        AE_CUDA_FLOAT_DISPATCH(g.dtype, TG, {
            TY *yy = (TY *)y.data;
            const TX *xx = (const TX *)x.data;
            const TG *gg = (const TG *)g.data;
            int v4 = hd % 4 == 0 && aligned4(yy) && aligned4(xx) && (per_head || aligned4(gg));
            int chunks = v4 ? hd / 4 : hd, l = 0;
            while ((1 << l) < chunks && (1 << l) < kThreads) l++;
            unsigned blocks = grid_for(be, (rows << l), kThreads);
            if (v4)
                k_gate_mul<4><<<blocks, kThreads, 0, stream_of(be)>>>(yy, xx, gg, rows, hd,
                                                                      per_head, l);
            else
                k_gate_mul<1><<<blocks, kThreads, 0, stream_of(be)>>>(yy, xx, gg, rows, hd,
                                                                      per_head, l);
        })));
    cuda_check(be, cudaGetLastError(), "gate_mul");
}

void ae_cuda_silu_mul(const ae_backend *be, ae_ptr y, ae_ptr g, ae_ptr u, size_t n) {
    if (cuda_failed(be)) return;
    cuda_need(y, AE_M_FLOAT, "silu_mul", "y");
    cuda_need(g, AE_M_FLOAT, "silu_mul", "g");
    cuda_need(u, AE_M_FLOAT, "silu_mul", "u");
    if (n == 0) return;
    AE_CUDA_FLOAT_DISPATCH(y.dtype, TY, AE_CUDA_FLOAT_DISPATCH(g.dtype, TG,
        AE_CUDA_FLOAT_DISPATCH(u.dtype, TU, {
            TY *yy = (TY *)y.data;
            const TG *gg = (const TG *)g.data;
            const TU *uu = (const TU *)u.data;
            if (aligned4(yy) && aligned4(gg) && aligned4(uu))
                k_silu_mul<4><<<grid_for(be, n / 4 + 1, kThreads), kThreads, 0, stream_of(be)>>>(
                    yy, gg, uu, n);
            else
                k_silu_mul<1><<<grid_for(be, n, kThreads), kThreads, 0, stream_of(be)>>>(yy, gg,
                                                                                      uu, n);
        })));
    cuda_check(be, cudaGetLastError(), "silu_mul");
}

void ae_cuda_add(const ae_backend *be, ae_ptr y, ae_ptr a, ae_ptr b, size_t n) {
    if (cuda_failed(be)) return;
    cuda_need(y, AE_M_FLOAT, "add", "y");
    cuda_need(a, AE_M_FLOAT, "add", "a");
    cuda_need(b, AE_M_FLOAT, "add", "b");
    if (n == 0) return;
    AE_CUDA_FLOAT_DISPATCH(y.dtype, TY, AE_CUDA_FLOAT_DISPATCH(a.dtype, TA,
        AE_CUDA_FLOAT_DISPATCH(b.dtype, TB, {
        TY *yy = (TY *)y.data;
        const TA *aa = (const TA *)a.data;
        const TB *bb = (const TB *)b.data;
        const unsigned nt = kThreads;
        if (aligned4(yy) && aligned4(aa) && aligned4(bb))
            k_add<4><<<grid_for(be, n / 4 + 1, nt), nt, 0, stream_of(be)>>>(yy, aa, bb, n);
        else
            k_add<1><<<grid_for(be, n, nt), nt, 0, stream_of(be)>>>(yy, aa, bb, n);
    })));
    cuda_check(be, cudaGetLastError(), "add");
}
