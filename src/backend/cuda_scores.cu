// Scores of logit rows on the GPU: negative log-likelihood of a target, KL between two rows,
// argmax. One block per row reads the row once (4 values per load where aligned, two loads in
// flight per thread) and a block tree combines the per-thread states.
//
// Log-sum-exp without a separate max pass: each thread keeps a reference r (a value it has seen)
// and s = Σ exp(z - r) in double, each term from the exact difference z - r with exp in double
// (expf for the terms too small to matter: exp_term). r moves only when a value exceeds it by
// more than kSlack, which happens about once per thread. At the end every thread's s is moved to
// the block's largest r and the sums are added in a fixed tree; log Σ exp = r + log s. For KL
// each thread also keeps a = Σ exp(zt - rt) · (zt - zs) in double, and
//   KL = Σ p_t (log p_t - log p_s) = a / s_t - lse_t + lse_s,
// whose cancellation happens in double. So everything is double as in cpu_scores.c, in another
// summation order: nll agrees to ~1e-15 relative before the final rounding to float, KL to
// ~1e-13 absolute (small KL values stay accurate); argmax is exact (ties and NaN as the CPU loop:
// first index of the maximum, NaN never beats a value, 0 when z[0] is NaN). Deterministic: no
// atomics, fixed reduction order.
#include <float.h>
#include <limits.h>
#include <math.h>

#include "backend/cuda_internal.h"

namespace {

constexpr int kThreads = 1024;
constexpr float kSlack = 64.0f; // exp(64) ~ 6e27: a term stays far below FLT_MAX

// Calls f(i, v) for the values of a row this thread owns, v an array of the values at i, i + 1,
// ...: chunks of V at threadIdx.x, + blockDim.x, ... (two loads issued before use), then the
// V-remainder one by one.
template <int V, typename T, typename F>
__device__ __forceinline__ void for_my_values(const T *row, int n, F f) {
    int nch = n / V, B = blockDim.x, c = threadIdx.x;
    for (; c + B < nch; c += 2 * B) {
        float a[V], b[V];
        ldv<V>(row + (size_t)c * V, a);
        ldv<V>(row + (size_t)(c + B) * V, b);
        f(c * V, a);
        f((c + B) * V, b);
    }
    if (c < nch) {
        float a[V];
        ldv<V>(row + (size_t)c * V, a);
        f(c * V, a);
    }
    for (int i = nch * V + threadIdx.x; i < n; i += B) {
        float a[1] = {ldf(row + i)};
        f(i, a);
    }
}

// Same over two rows at once: f(zt values, zs values).
template <int V, typename TT, typename TS, typename F>
__device__ __forceinline__ void for_my_pairs(const TT *rt, const TS *rs, int n, F f) {
    int nch = n / V, B = blockDim.x, c = threadIdx.x;
    for (; c + B < nch; c += 2 * B) {
        float a[V], b[V], a2[V], b2[V];
        ldv<V>(rt + (size_t)c * V, a);
        ldv<V>(rs + (size_t)c * V, b);
        ldv<V>(rt + (size_t)(c + B) * V, a2);
        ldv<V>(rs + (size_t)(c + B) * V, b2);
        f(a, b);
        f(a2, b2);
    }
    if (c < nch) {
        float a[V], b[V];
        ldv<V>(rt + (size_t)c * V, a);
        ldv<V>(rs + (size_t)c * V, b);
        f(a, b);
    }
    for (int i = nch * V + threadIdx.x; i < n; i += B) {
        float a[1] = {ldf(rt + i)}, b[1] = {ldf(rs + i)};
        f(a, b);
    }
}

// exp(z - r) for a sum in double: the difference exact in double, exp in double where the term
// can matter (z - r > kFar), else expf (such a term is below e^kFar times the thread's reference
// term, so its fp32 error moves the sum by < 1e-15 relative).
constexpr double kFar = -20.0;
__device__ __forceinline__ double exp_term(float z, float r) {
    double d = (double)z - (double)r;
    return d > kFar ? exp(d) : (double)expf((float)d);
}

// The largest of N values (NaN ignored unless all are NaN).
template <int N> __device__ __forceinline__ float max_of(const float (&z)[N]) {
    float m = z[0];
#pragma unroll
    for (int k = 1; k < N; k++) m = fmaxf(m, z[k]);
    return m;
}

// Block-wide combination of per-thread states S (S::join(a, b), S::shfl(s, lane_mask));
// the result is valid in thread 0. One call per kernel.
template <typename S> __device__ S block_reduce(S v) {
    __shared__ S part[32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    for (int o = 16; o > 0; o >>= 1) v = S::join(v, S::shfl(v, o));
    if (lane == 0) part[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < nw ? part[lane] : S::empty();
        for (int o = 16; o > 0; o >>= 1) v = S::join(v, S::shfl(v, o));
    }
    return v;
}

// Block maxima of N floats, returned to every thread. One call per kernel.
template <int N> __device__ void block_max(float (&v)[N]) {
    __shared__ float part[N][32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
#pragma unroll
    for (int k = 0; k < N; k++) {
        for (int o = 16; o > 0; o >>= 1) v[k] = fmaxf(v[k], __shfl_xor_sync(0xffffffffu, v[k], o));
        if (lane == 0) part[k][warp] = v[k];
    }
    __syncthreads();
    if (warp == 0) {
#pragma unroll
        for (int k = 0; k < N; k++) {
            v[k] = lane < nw ? part[k][lane] : -FLT_MAX;
            for (int o = 16; o > 0; o >>= 1)
                v[k] = fmaxf(v[k], __shfl_xor_sync(0xffffffffu, v[k], o));
            if (lane == 0) part[k][0] = v[k];
        }
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < N; k++) v[k] = part[k][0];
}

// Block sums of N doubles (a fixed tree: deterministic), valid in thread 0. One call per kernel.
template <int N> __device__ void block_sum(double (&v)[N]) {
    __shared__ double part[N][32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
#pragma unroll
    for (int k = 0; k < N; k++) {
        for (int o = 16; o > 0; o >>= 1) v[k] += __shfl_xor_sync(0xffffffffu, v[k], o);
        if (lane == 0) part[k][warp] = v[k];
    }
    __syncthreads();
    if (warp == 0) {
#pragma unroll
        for (int k = 0; k < N; k++) {
            v[k] = lane < nw ? part[k][lane] : 0.0;
            for (int o = 16; o > 0; o >>= 1) v[k] += __shfl_xor_sync(0xffffffffu, v[k], o);
        }
    }
}

// s = Σ exp(z - r) over the values seen.
struct Lse {
    float r;
    double s;
    template <int N> __device__ void add(const float (&z)[N]) {
        float m = max_of(z);
        if (m > r + kSlack) { // rare: move the reference up to m
            s *= exp((double)r - (double)m);
            r = m;
        }
#pragma unroll
        for (int k = 0; k < N; k++) s += exp_term(z[k], r);
    }
    // log Σ exp over the block, valid in thread 0: the sums moved to the block's largest
    // reference, then added.
    __device__ double block_log_sum_exp() const {
        float R[1] = {r};
        block_max(R);
        double t[1] = {s * exp((double)r - (double)R[0])};
        block_sum(t);
        return (double)R[0] + log(t[0]);
    }
};

// Teacher lse state, a = Σ exp(zt - rt) · (zt - zs) on the teacher's reference, student lse.
struct KlAcc {
    float rt, rs;
    double st, a, ss;
    template <int N> __device__ void add(const float (&zt)[N], const float (&zs)[N]) {
        float mt = max_of(zt), ms = max_of(zs);
        if (mt > rt + kSlack) { // rare: move the references up
            double f = exp((double)rt - (double)mt);
            st *= f;
            a *= f;
            rt = mt;
        }
        if (ms > rs + kSlack) {
            ss *= exp((double)rs - (double)ms);
            rs = ms;
        }
#pragma unroll
        for (int k = 0; k < N; k++) {
            double et = exp_term(zt[k], rt);
            st += et;
            a += et * ((double)zt[k] - (double)zs[k]);
            ss += exp_term(zs[k], rs);
        }
    }
};

// Best (value, index): larger value, ties to the lower index; NaN never wins.
struct ArgMax {
    float v;
    int i;
    static __device__ ArgMax empty() { return {-INFINITY, INT_MAX}; }
    template <int N> __device__ void add(int j, const float (&z)[N]) {
#pragma unroll
        for (int k = 0; k < N; k++)
            if (z[k] > v || (z[k] == v && j + k < i)) v = z[k], i = j + k;
    }
    static __device__ ArgMax join(ArgMax a, ArgMax b) {
        return (b.v > a.v || (b.v == a.v && b.i < a.i)) ? b : a;
    }
    static __device__ ArgMax shfl(ArgMax x, int o) {
        return {__shfl_xor_sync(0xffffffffu, x.v, o), __shfl_xor_sync(0xffffffffu, x.i, o)};
    }
};

// out[t] = lse(z[t]) - z[t][target[t]]   (NaN for a target outside [0, V))
template <int V, typename T>
__global__ void __launch_bounds__(kThreads)
k_nll(float *out, const T *z, const int32_t *target, int n) {
    const T *row = z + (size_t)blockIdx.x * n;
    Lse st = {-FLT_MAX, 0.0};
    for_my_values<V>(row, n, [&](int, const auto &v) { st.add(v); });
    double lse = st.block_log_sum_exp();
    if (threadIdx.x == 0) {
        int y = target[blockIdx.x];
        out[blockIdx.x] = y >= 0 && y < n ? (float)(lse - (double)ldf(row + y)) : NAN;
    }
}

// out[t] = max(0, KL(softmax(zt[t]) ‖ softmax(zs[t])))
template <int V, typename TT, typename TS>
__global__ void __launch_bounds__(kThreads)
k_kl(float *out, const TT *zt, const TS *zs, int n) {
    size_t off = (size_t)blockIdx.x * n;
    KlAcc st = {-FLT_MAX, -FLT_MAX, 0.0, 0.0, 0.0};
    for_my_pairs<V>(zt + off, zs + off, n, [&](const auto &a, const auto &b) { st.add(a, b); });
    // Move every thread's sums to the block's largest references, then add them up.
    float R[2] = {st.rt, st.rs};
    block_max(R);
    double ft = exp((double)st.rt - (double)R[0]), fs = exp((double)st.rs - (double)R[1]);
    double sum[3] = {st.st * ft, st.a * ft, st.ss * fs};
    block_sum(sum);
    if (threadIdx.x == 0) {
        double lt = (double)R[0] + log(sum[0]), ls = (double)R[1] + log(sum[2]);
        double kl = sum[1] / sum[0] - lt + ls;
        out[blockIdx.x] = (float)(kl > 0 ? kl : 0); // as the CPU: NaN -> 0 too
    }
}

// out[t] = first index of the maximum of z[t] (0 when z[t][0] is NaN, as the CPU's loop)
template <int V, typename T>
__global__ void __launch_bounds__(kThreads)
k_argmax(int32_t *out, const T *z, int n) {
    const T *row = z + (size_t)blockIdx.x * n;
    ArgMax st = ArgMax::empty();
    for_my_values<V>(row, n, [&](int i, const auto &v) { st.add(i, v); });
    st = block_reduce(st);
    if (threadIdx.x == 0) {
        float z0 = ldf(row);
        out[blockIdx.x] = (z0 != z0 || st.i == INT_MAX) ? 0 : st.i;
    }
}

// 4-wide loads when every row start is aligned for them.
template <typename T> int rows_aligned4(const T *p, int n) {
    return n % 4 == 0 && (uintptr_t)p % (4 * sizeof(T)) == 0;
}

} // namespace

void ae_cuda_nll_rows(const ae_backend *be, ae_ptr out, ae_ptr z, ae_ptr target, int T, int V) {
    if (cuda_failed(be)) return;
    cuda_need(out, AE_M_F32, "nll_rows", "out");
    cuda_need(z, AE_M_FLOAT, "nll_rows", "z");
    cuda_need(target, AE_M_I32, "nll_rows", "target");
    if (T <= 0 || V <= 0) return;
    AE_CUDA_FLOAT_DISPATCH(z.dtype, TZ, {
        const TZ *zz = (const TZ *)z.data;
        if (rows_aligned4(zz, V))
            k_nll<4><<<(unsigned)T, kThreads, 0, stream_of(be)>>>(
                (float *)out.data, zz, (const int32_t *)target.data, V);
        else
            k_nll<1><<<(unsigned)T, kThreads, 0, stream_of(be)>>>(
                (float *)out.data, zz, (const int32_t *)target.data, V);
    });
    cuda_check(be, cudaGetLastError(), "nll_rows");
}

void ae_cuda_kl_rows(const ae_backend *be, ae_ptr out, ae_ptr zt, ae_ptr zs, int T, int V) {
    if (cuda_failed(be)) return;
    cuda_need(out, AE_M_F32, "kl_rows", "out");
    cuda_need(zt, AE_M_FLOAT, "kl_rows", "zt");
    cuda_need(zs, AE_M_FLOAT, "kl_rows", "zs");
    if (T <= 0 || V <= 0) return;
    AE_CUDA_FLOAT_DISPATCH(zt.dtype, TT, AE_CUDA_FLOAT_DISPATCH(zs.dtype, TS, {
        const TT *a = (const TT *)zt.data;
        const TS *b = (const TS *)zs.data;
        if (rows_aligned4(a, V) && rows_aligned4(b, V))
            k_kl<4><<<(unsigned)T, kThreads, 0, stream_of(be)>>>((float *)out.data, a, b, V);
        else
            k_kl<1><<<(unsigned)T, kThreads, 0, stream_of(be)>>>((float *)out.data, a, b, V);
    }));
    cuda_check(be, cudaGetLastError(), "kl_rows");
}

void ae_cuda_argmax_rows(const ae_backend *be, ae_ptr out, ae_ptr z, int T, int V) {
    if (cuda_failed(be)) return;
    cuda_need(out, AE_M_I32, "argmax_rows", "out");
    cuda_need(z, AE_M_FLOAT, "argmax_rows", "z");
    if (T <= 0 || V <= 0) return;
    AE_CUDA_FLOAT_DISPATCH(z.dtype, TZ, {
        const TZ *zz = (const TZ *)z.data;
        if (rows_aligned4(zz, V))
            k_argmax<4><<<(unsigned)T, kThreads, 0, stream_of(be)>>>((int32_t *)out.data, zz, V);
        else
            k_argmax<1><<<(unsigned)T, kThreads, 0, stream_of(be)>>>((int32_t *)out.data, zz, V);
    });
    cuda_check(be, cudaGetLastError(), "argmax_rows");
}
