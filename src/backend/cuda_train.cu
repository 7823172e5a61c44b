// Training ops on the GPU (backend/ops.h, "training losses and the optimizer", and embed_bwd;
// the fp32 references are in cpu_train.c): what GPU distillation runs besides the GEMMs and the
// backward kernels. "float" arguments are F32 or BF16, each independently; arithmetic is fp32,
// every reduction the contract names is accumulated in double.
//
// Determinism: no float atomics. Every reduction has an order fixed by the shapes (and, for the
// vectorised paths, by the pointers' alignment, which does not change between reruns):
//   - row ops (mse_rows, cosine_rows, softmax_stats, kd_chunk): one block of kThreads per row,
//     thread j takes columns j, j + kThreads, ...; block_sum_d adds the warps' butterfly sums in
//     warp order;
//   - sumsq: a number of blocks that depends on n alone writes one double partial each, a
//     one-block pass adds them (k_sumsq_partial, k_sumsq_final);
//   - embed_bwd: a stable radix sort of the token ids (CUB, integer keys: exact), then for each
//     table row one thread per column adds that row's tokens in token order, starting from the
//     table's value: the same float additions as the CPU loop, so F32 results are bit-identical
//     to the CPU's. A BF16 table (--grad-dtype bf16) gets the same fp32 sum, rounded to bf16 once.
// adamw does, value by value, the float operations of ae_cpu_adamw in the same order with
// explicitly rounded intrinsics (no FMA contraction), so w, m and v are bit-identical to the CPU.
//
// Precision of softmax_stats / kd_chunk: the scaled logits a = z·inv_tau are the fp32 product
// the CPU forms (__fmul_rn, so mx is bit-identical); exponentials are expf of arguments
// formed in double (log-sum-exp subtracted in double, then rounded to float: |arg| small where
// the probability matters), summed in double. Against the CPU's double exp: se and the KL to
// ~1e-6 relative, probabilities and dzs to a few fp32 ulp of pt + ps.
#include <cub/cub.cuh>
#include <limits.h>
#include <math.h>

#include "backend/adam8.h"
#include "backend/cuda_internal.h"
#include "backend/cuda_train.h"

namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

int is_bf(ae_ptr p) { return p.dtype == AE_DT_BF16; }

// Blocks for a grid-stride loop over `work` items, at most cap. sumsq passes a constant cap, so
// the partition of its reduction depends on n alone (the same on every GPU); the elementwise
// ops pass a multiple of the SM count (their results do not depend on the partition).
unsigned grid_cap(size_t work, unsigned threads, unsigned cap) {
    cap = cap ? cap : 1;
    size_t b = cuda_blocks(work, threads);
    return (unsigned)(b < cap ? b : cap);
}

// Address aligned for 4-value vector access (16 bytes F32, 8 bytes BF16); null passes.
int vec_ok(ae_ptr p) {
    return !p.data || ((uintptr_t)p.data % (p.dtype == AE_DT_BF16 ? 8u : 16u)) == 0;
}

__device__ __forceinline__ double warp_sum_d(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Sum over the block of kThreads, the same bits in every thread: butterfly within each warp,
// then the kWarps warp sums read in warp order by every thread. sh: kWarps doubles of shared
// memory, free again when this returns.
__device__ double block_sum_d(double v, double *sh) {
    v = warp_sum_d(v);
    if ((threadIdx.x & 31) == 0) sh[threadIdx.x >> 5] = v;
    __syncthreads();
    double s = 0.0;
    for (int i = 0; i < kWarps; i++) s += sh[i];
    __syncthreads();
    return s;
}

// ---- embed_bwd --------------------------------------------------------------------------------

constexpr int kSegRows = 8; // sorted positions scanned per block of k_embed_rows

__global__ void k_iota(int32_t *v, int T) {
    const int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t < T) v[t] = t;
}

// For each table row present in the sorted ids (its first sorted position k0 in this block's
// range): column d of the row += dy[tok, d] for its tokens tok in token order (the sort is
// stable). key, tok: (T) the ids sorted and the token of each; dtable (V, D) TD; dy (T, D). The
// row's sum starts from the table's value and is stored once (BF16: one rounding per call).
template <typename TD>
__global__ void __launch_bounds__(kThreads)
k_embed_rows(TD *dtable, const void *dy, int dy_bf, const int32_t *key, const int32_t *tok,
             int T, int D) {
    const int d = blockIdx.y * kThreads + threadIdx.x;
    if (d >= D) return;
    const int k0 = blockIdx.x * kSegRows, k1 = k0 + kSegRows < T ? k0 + kSegRows : T;
    for (int k = k0; k < k1; k++) {
        const int32_t row = key[k];
        if (k > 0 && key[k - 1] == row) continue; // not the row's first token
        int lo = k + 1, hi = T; // the row's tokens end at the first key > row (binary search)
        while (lo < hi) {
            const int mid = (lo + hi) >> 1;
            if (key[mid] == row) lo = mid + 1;
            else hi = mid;
        }
        TD *dst = dtable + (size_t)row * D + d;
        float acc = ldf(dst);
        int j = k;
        for (; j + 8 <= lo; j += 8) { // loads first (independent), then the adds in order
            float x[8];
#pragma unroll
            for (int u = 0; u < 8; u++) x[u] = ld_any(dy, dy_bf, (size_t)tok[j + u] * D + d);
#pragma unroll
            for (int u = 0; u < 8; u++) acc += x[u];
        }
        for (; j < lo; j++) acc += ld_any(dy, dy_bf, (size_t)tok[j] * D + d);
        stf(dst, acc);
    }
}

// ---- mse_rows, cosine_rows: a block per row ------------------------------------------------------

__global__ void __launch_bounds__(kThreads)
k_mse_rows(void *out, int out_f64, void *dy, int dy_bf, const void *y, int y_bf, const void *t,
           int t_bf, int D, int normalized, float scale) {
    __shared__ double sh[kWarps];
    const size_t o = (size_t)blockIdx.x * D;
    double se = 0.0, tt = 0.0;
    for (int d = threadIdx.x; d < D; d += kThreads) {
        const double tv = ld_any(t, t_bf, o + d), e = (double)ld_any(y, y_bf, o + d) - tv;
        se += e * e;
        tt += tv * tv;
    }
    se = block_sum_d(se, sh);
    tt = block_sum_d(tt, sh);
    const double den = normalized ? tt + 1e-6 : (double)D;
    if (threadIdx.x == 0) {
        if (out_f64) ((double *)out)[blockIdx.x] = se / den;
        else ((float *)out)[blockIdx.x] = (float)(se / den);
    }
    if (!dy) return;
    const double c = 2.0 * scale / den;
    for (int d = threadIdx.x; d < D; d += kThreads) {
        const double e = (double)ld_any(y, y_bf, o + d) - ld_any(t, t_bf, o + d);
        st_any(dy, dy_bf, o + d, (float)(c * e));
    }
}

__global__ void __launch_bounds__(kThreads)
k_cosine_rows(float *out, void *da, int da_bf, const void *a, int a_bf, const void *b, int b_bf,
              int D, float scale) {
    __shared__ double sh[kWarps];
    const size_t o = (size_t)blockIdx.x * D;
    double ab = 0.0, aa = 0.0, bb = 0.0;
    for (int d = threadIdx.x; d < D; d += kThreads) {
        const double av = ld_any(a, a_bf, o + d), bv = ld_any(b, b_bf, o + d);
        ab += av * bv;
        aa += av * av;
        bb += bv * bv;
    }
    ab = block_sum_d(ab, sh);
    aa = block_sum_d(aa, sh);
    bb = block_sum_d(bb, sh);
    const double na = sqrt(aa), nb = sqrt(bb);
    const int ok = na > 0.0 && nb > 0.0;
    const double cs = ok ? ab / (na * nb) : 0.0;
    if (threadIdx.x == 0) out[blockIdx.x] = (float)(1.0 - cs);
    if (!da) return;
    // ∂(1 − cos)/∂a = −(b/(|a||b|) − cos·a/|a|²), times scale; zero where a or b is zero
    const double c1 = ok ? -(double)scale / (na * nb) : 0.0, c2 = ok ? (double)scale * cs / aa : 0.0;
    for (int d = threadIdx.x; d < D; d += kThreads) {
        const double g = c1 * ld_any(b, b_bf, o + d) + c2 * ld_any(a, a_bf, o + d);
        st_any(da, da_bf, o + d, ok ? (float)g : 0.0f); // +0 exactly, as the cpu's memset
    }
}

// ---- softmax_stats, kd_chunk: a block per row ------------------------------------------------

// One pass over the chunk's columns of a row: each thread keeps an online (max, Σ exp) of
// a = z·inv_tau over its columns and the first of its largest z; the block then merges the
// threads' states in a fixed order, and thread 0 merges the chunk into the row's running state.
__global__ void __launch_bounds__(kThreads)
k_softmax_stats(float *stats, int32_t *arg, const float *z, int64_t ldz, int Vc, int v0,
                float inv_tau) {
    __shared__ double sh[kWarps];
    __shared__ float shm[kWarps], shz[kWarps];
    __shared__ int shi[kWarps];
    const float *zi = z + (size_t)blockIdx.x * ldz;
    float m = -INFINITY, bz = -INFINITY;
    double s = 0.0;
    int bi = INT_MAX;
    for (int v = threadIdx.x; v < Vc; v += kThreads) {
        const float zv = zi[v], av = __fmul_rn(zv, inv_tau);
        if (av > m) {
            s = s * (double)expf(m - av) + 1.0;
            m = av;
        } else {
            s += (double)expf(av - m);
        }
        if (zv > bz) bz = zv, bi = v; // columns visited in increasing order: the first largest
    }
    // block max of m, and the largest z with the lowest column (warp butterflies, then warps)
    float mm = m;
    for (int o = 16; o > 0; o >>= 1) {
        mm = fmaxf(mm, __shfl_xor_sync(0xffffffffu, mm, o));
        const float oz = __shfl_xor_sync(0xffffffffu, bz, o);
        const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (oz > bz || (oz == bz && oi < bi)) bz = oz, bi = oi;
    }
    const int w = threadIdx.x >> 5;
    if ((threadIdx.x & 31) == 0) shm[w] = mm, shz[w] = bz, shi[w] = bi;
    __syncthreads();
    float M = shm[0];
    for (int i = 1; i < kWarps; i++) M = fmaxf(M, shm[i]);
    // every thread's sum rescaled to the block max, summed in a fixed order
    const double S = block_sum_d(m == -INFINITY ? 0.0 : s * exp((double)m - M), sh);
    if (threadIdx.x != 0) return;
    for (int i = 1; i < kWarps; i++)
        if (shz[i] > bz || (shz[i] == bz && shi[i] < bi)) bz = shz[i], bi = shi[i];
    if (bi == INT_MAX) bi = 0; // no column compared larger than −Inf: the CPU's column 0
    float *st = stats + 2 * (size_t)blockIdx.x;
    if (v0 == 0) {
        st[0] = M;
        st[1] = (float)S;
        if (arg) arg[blockIdx.x] = v0 + bi;
        return;
    }
    const float mx = st[0];
    const double se = st[1];
    if (M > mx) {
        if (arg) arg[blockIdx.x] = v0 + bi;
        st[0] = M;
        st[1] = (float)(se * exp((double)mx - M) + S);
    } else {
        st[1] = (float)(se + S * exp((double)M - mx));
    }
}

__global__ void __launch_bounds__(kThreads)
k_kd_chunk(float *kl, void *dzs, int dz_bf, int64_t ldd, const float *zt, const float *zs,
           int64_t ldz, const float *st, const float *ss, int Vc, float inv_tau, float gscale) {
    __shared__ double sh[kWarps];
    const size_t i = blockIdx.x;
    const double lt = (double)st[2 * i] + log((double)st[2 * i + 1]); // log Σ exp(zt/τ)
    const double ls = (double)ss[2 * i] + log((double)ss[2 * i + 1]);
    const float *a = zt + i * ldz, *b = zs + i * ldz;
    double acc = 0.0;
    for (int v = threadIdx.x; v < Vc; v += kThreads) {
        const double lpt = (double)__fmul_rn(a[v], inv_tau) - lt;
        const double lps = (double)__fmul_rn(b[v], inv_tau) - ls;
        const float pt = expf((float)lpt), ps = expf((float)lps);
        acc += (double)pt * (lpt - lps);
        if (dzs) st_any(dzs, dz_bf, i * ldd + v, __fmul_rn(__fsub_rn(ps, pt), gscale));
    }
    acc = block_sum_d(acc, sh);
    if (threadIdx.x == 0) kl[i] = (float)((double)kl[i] + acc);
}

// ---- sumsq --------------------------------------------------------------------------------------

constexpr unsigned kSumsqBlocks = 1024; // most partial sums

// part[block] = Σ x² over the block's grid-stride share (V values per step), in double.
template <int V, typename T>
__global__ void __launch_bounds__(kThreads)
k_sumsq_partial(double *part, const T *x, size_t n) {
    __shared__ double sh[kWarps];
    const size_t nv = n / V, stride = (size_t)gridDim.x * kThreads;
    const size_t tid = blockIdx.x * (size_t)kThreads + threadIdx.x;
    double s = 0.0;
    for (size_t i = tid; i < nv; i += stride) {
        float v[V];
        ldv<V>(x + i * V, v);
#pragma unroll
        for (int k = 0; k < V; k++) s += (double)v[k] * v[k];
    }
    if (tid < n - nv * V) { // the last n % V values
        const double v = ldf(x + nv * V + tid);
        s += v * v;
    }
    s = block_sum_d(s, sh);
    if (threadIdx.x == 0) part[blockIdx.x] = s;
}

// out: (1) F32 (f64 == 0) or F64
__global__ void __launch_bounds__(kThreads)
k_sumsq_final(void *out, int f64, const double *part, int nb) {
    __shared__ double sh[kWarps];
    double s = 0.0;
    for (int i = threadIdx.x; i < nb; i += kThreads) s += part[i];
    s = block_sum_d(s, sh);
    if (threadIdx.x != 0) return;
    if (f64) *(double *)out = s;
    else *(float *)out = (float)s; // above FLT_MAX: Inf; Inf/NaN propagate
}

// ---- axpby ------------------------------------------------------------------------------------

// y = alpha·x + beta·y in float, the CPU's operations (beta == 0: y is not read)
template <int V, typename TY, typename TX>
__global__ void __launch_bounds__(kThreads)
k_axpby(TY *y, const TX *x, float alpha, float beta, size_t n) {
    const size_t nv = n / V, stride = (size_t)gridDim.x * kThreads;
    const size_t tid = blockIdx.x * (size_t)kThreads + threadIdx.x;
    for (size_t i = tid; i < nv; i += stride) {
        float xv[V], yv[V];
        ldv<V>(x + i * V, xv);
        if (beta != 0.0f) ldv<V>(y + i * V, yv);
#pragma unroll
        for (int k = 0; k < V; k++)
            yv[k] = beta != 0.0f ? __fadd_rn(__fmul_rn(alpha, xv[k]), __fmul_rn(beta, yv[k]))
                                 : __fmul_rn(alpha, xv[k]);
        stv<V>(y + i * V, yv);
    }
    if (tid < n - nv * V) {
        const size_t j = nv * V + tid;
        const float r = beta != 0.0f ? __fadd_rn(__fmul_rn(alpha, ldf(x + j)), __fmul_rn(beta, ldf(y + j)))
                                     : __fmul_rn(alpha, ldf(x + j));
        stf(y + j, r);
    }
}

// ---- adamw ------------------------------------------------------------------------------------

struct AdamK {
    float lr, b1, omb1, b2, omb2, eps, wd, bc1, bc2, gs; // omb = 1 − β, formed on the host in float
};

// One value: ae_cpu_adamw's float operations in its order, each rounded once. 1 when the new
// w or v is not finite.
__device__ __forceinline__ int adam_one(const AdamK &k, float &w, float &m, float &v, float g) {
    const float gj = __fmul_rn(g, k.gs);
    m = __fadd_rn(__fmul_rn(k.b1, m), __fmul_rn(k.omb1, gj));
    v = __fadd_rn(__fmul_rn(k.b2, v), __fmul_rn(__fmul_rn(k.omb2, gj), gj));
    const float mhat = __fdiv_rn(m, k.bc1), vhat = __fdiv_rn(v, k.bc2);
    const float upd = __fadd_rn(__fdiv_rn(mhat, __fadd_rn(__fsqrt_rn(vhat), k.eps)),
                                __fmul_rn(k.wd, w));
    w = __fsub_rn(w, __fmul_rn(k.lr, upd));
    return !isfinite(w) || !isfinite(v);
}

// w, m, v: (n) F32; g: (n) TG (F32, or BF16: --grad-dtype bf16, widened exactly); p: (n) TP
// or null; flag: (1) I32 or null (set to 1, never cleared)
template <int V, typename TP, typename TG>
__global__ void __launch_bounds__(kThreads)
k_adamw(AdamK k, float *w, float *m, float *v, const TG *g, TP *p, int32_t *flag, size_t n) {
    const size_t nv = n / V, stride = (size_t)gridDim.x * kThreads;
    const size_t tid = blockIdx.x * (size_t)kThreads + threadIdx.x;
    int bad = 0;
    for (size_t i = tid; i < nv; i += stride) {
        float wv[V], mv[V], vv[V], gv[V];
        ldv<V>(w + i * V, wv);
        ldv<V>(m + i * V, mv);
        ldv<V>(v + i * V, vv);
        ldv<V>(g + i * V, gv);
#pragma unroll
        for (int e = 0; e < V; e++) bad |= adam_one(k, wv[e], mv[e], vv[e], gv[e]);
        stv<V>(w + i * V, wv);
        stv<V>(m + i * V, mv);
        stv<V>(v + i * V, vv);
        if (p) stv<V>(p + i * V, wv);
    }
    if (tid < n - nv * V) {
        const size_t j = nv * V + tid;
        float wj = w[j], mj = m[j], vj = v[j];
        bad |= adam_one(k, wj, mj, vj, ldf(g + j));
        w[j] = wj, m[j] = mj, v[j] = vj;
        if (p) stf(p + j, wj);
    }
    if (bad && flag) *flag = 1; // a plain store: every writer writes the same value
}

// ---- adamw8 -----------------------------------------------------------------------------------

static_assert(AE_Q8_BLOCK == 256, "adamw8 maps one quantisation block to one warp, 8 values a lane");

// Values 0 .. len − 1 (len <= 8) of p as fp32, the rest 0: two vector loads when VEC (len is 8;
// p 16-byte aligned for F32, 8-byte for BF16), else one by one.
template <bool VEC, typename T>
__device__ __forceinline__ void ld8(const T *p, float (&v)[8], int len) {
    if constexpr (VEC) {
        float a[4], b[4];
        ld4(p, a);
        ld4(p + 4, b);
#pragma unroll
        for (int e = 0; e < 4; e++) v[e] = a[e], v[4 + e] = b[e];
    } else {
#pragma unroll
        for (int e = 0; e < 8; e++) v[e] = e < len ? ldf(p + e) : 0.0f;
    }
}
template <bool VEC, typename T>
__device__ __forceinline__ void st8(T *p, const float (&v)[8], int len) {
    if constexpr (VEC) {
        const float a[4] = {v[0], v[1], v[2], v[3]}, b[4] = {v[4], v[5], v[6], v[7]};
        st4(p, a);
        st4(p + 4, b);
    } else {
#pragma unroll
        for (int e = 0; e < 8; e++)
            if (e < len) stf(p + e, v[e]);
    }
}
// The same for code bytes, packed four to a word (byte e of the 8 in word e / 4, bits 8·(e % 4)
// up; bytes past len 0). VEC: one 8-byte access, p 8-byte aligned.
template <bool VEC>
__device__ __forceinline__ void ld8_codes(const uint8_t *p, uint32_t (&c)[2], int len) {
    if constexpr (VEC) {
        const uint2 q = *reinterpret_cast<const uint2 *>(p);
        c[0] = q.x, c[1] = q.y;
    } else {
        c[0] = c[1] = 0;
#pragma unroll
        for (int e = 0; e < 8; e++)
            if (e < len) c[e >> 2] |= (uint32_t)p[e] << 8 * (e & 3);
    }
}
template <bool VEC>
__device__ __forceinline__ void st8_codes(uint8_t *p, const uint32_t (&c)[2], int len) {
    if constexpr (VEC) {
        *reinterpret_cast<uint2 *>(p) = make_uint2(c[0], c[1]);
    } else {
#pragma unroll
        for (int e = 0; e < 8; e++)
            if (e < len) p[e] = (uint8_t)(c[e >> 2] >> 8 * (e & 3));
    }
}
__device__ __forceinline__ uint8_t code_at(const uint32_t (&c)[2], int e) {
    return (uint8_t)(c[e >> 2] >> 8 * (e & 3));
}

// One lane's inputs of a quantisation block: its 8 values of w and g, their codes, and the
// block's two absmax values.
struct Adam8In {
    float w[8], g[8];
    uint32_t mc[2], vc[2]; // codes, packed (ld8_codes)
    float m_amax, s_amax;
};

// Loads lane's values j .. j + len − 1 (j = 256b + 8·lane) of quantisation block b.
template <bool VEC, typename TG>
__device__ __forceinline__ void adam8_load(Adam8In &in, const float *w, const uint8_t *mq,
                                           const float *ms, const uint8_t *vq, const float *vs,
                                           const TG *g, size_t b, size_t j, int len) {
    in.m_amax = ms[b];
    in.s_amax = vs[b];
    ld8<VEC>(w + j, in.w, len);
    ld8<VEC>(g + j, in.g, len);
    ld8_codes<VEC>(mq + j, in.mc, len);
    ld8_codes<VEC>(vq + j, in.vc, len);
}

// Block b from its loaded inputs: ae_cpu_adamw8's operations on each value (decode, ae_q8_adam,
// sqrt), the new w stored, the block's absmax of |m| and of sqrt(v) as warp reductions, then the
// codes and their stores. The whole warp calls it with the same VEC (every lane's 8 values in the
// tensor, every pointer aligned: vector accesses and no per-value guards). Returns 1 when a new
// w or v of the lane is not finite. (w goes out before the reductions and the codes stay packed:
// fewer live registers, so that 4 blocks of 256 threads fit an SM.)
template <bool VEC, typename TP>
__device__ __forceinline__ int adam8_update(const ae_q8_step &k, const ae_q8_code &code, Adam8In &in,
                                            float *w, uint8_t *mq, float *ms, uint8_t *vq,
                                            float *vs, TP *p, size_t b, size_t j, int len) {
    float mv[8], sv[8];
    float m_loc = 0.0f, s_loc = 0.0f;
    int bad = 0;
#pragma unroll
    for (int e = 0; e < 8; e++) {
        mv[e] = sv[e] = 0.0f;
        if (!VEC && e >= len) continue;
        const float md = ae_q8_decode_m(&code, code_at(in.mc, e), in.m_amax);
        const float sd = ae_q8_decode_v(&code, code_at(in.vc, e), in.s_amax);
        mv[e] = in.m_amax > 0.0f ? md : 0.0f;
        const float s0 = in.s_amax > 0.0f ? sd : 0.0f;
        float vj = __fmul_rn(s0, s0);
        bad |= ae_q8_adam(&k, &in.w[e], &mv[e], &vj, in.g[e]);
        sv[e] = __fsqrt_rn(vj);
        m_loc = fmaxf(m_loc, fabsf(mv[e]));
        s_loc = fmaxf(s_loc, sv[e]);
    }
    st8<VEC>(w + j, in.w, len);
    if (p) st8<VEC>(p + j, in.w, len);
    const float m_max = warp_max(m_loc), s_max = warp_max(s_loc);
    const float m_inv = ae_q8_inv(m_max), s_inv = ae_q8_inv(s_max);
    in.mc[0] = in.mc[1] = in.vc[0] = in.vc[1] = 0;
#pragma unroll
    for (int e = 0; e < 8; e++) {
        in.mc[e >> 2] |= (uint32_t)ae_q8_encode_m(&code, mv[e], m_inv) << 8 * (e & 3);
        in.vc[e >> 2] |= (uint32_t)ae_q8_encode_v(&code, sv[e], s_inv) << 8 * (e & 3);
    }
    st8_codes<VEC>(mq + j, in.mc, len);
    st8_codes<VEC>(vq + j, in.vc, len);
    if ((threadIdx.x & 31) == 0) ms[b] = m_max, vs[b] = s_max;
    return bad;
}

// One warp per quantisation block (grid-stride over the blocks), lane l on its values 8l .. 8l + 7
// (adam8_load, adam8_update; no block barrier). The code tables arrive by value and are copied to
// shared memory. w: (n) F32; g: (n) TG (F32 or BF16); mq, vq: (n) codes; ms, vs: (blocks) F32;
// p: (n) TP or null. vec: w, g, p as vec_ok and mq, vq 8-byte aligned. The kernel is bound by
// its instructions and their latency, not its bytes, so warps an SM count: 4 blocks of 256
// (64 registers; with 3, 80 registers, the Qwen3-8B MLA student's step took 12.9 ms against
// 11.5, and 15.6 before the one-comparison search and the packed codes). Also measured slower:
// loading a warp's next block while it updates the current one (22.2 against 18.1 ms, 96
// registers, 2 blocks an SM), and interleaved copies of the code tables in shared memory
// against bank conflicts (more instructions, fewer blocks: 16.3 to 20.3 ms against 15.7);
// docs/BENCHMARKS.md, 2026-12-01 and 12-02.
template <typename TP, typename TG>
__global__ void __launch_bounds__(kThreads, 4)
k_adamw8(ae_q8_step k, ae_q8_code code_in, float *w, uint8_t *mq, float *ms, uint8_t *vq, float *vs,
         const TG *g, TP *p, int32_t *flag, size_t n, int vec) {
    __shared__ ae_q8_code code;
    for (int i = threadIdx.x; i < (int)(sizeof code / sizeof(float)); i += kThreads)
        ((float *)&code)[i] = ((const float *)&code_in)[i];
    __syncthreads();
    const size_t nb = ae_q8_blocks(n), step = (size_t)gridDim.x * kWarps;
    int bad = 0;
    for (size_t b = blockIdx.x * (size_t)kWarps + (threadIdx.x >> 5); b < nb; b += step) {
        const size_t j = b * AE_Q8_BLOCK + 8 * (size_t)(threadIdx.x & 31);
        Adam8In in;
        if (vec && (b + 1) * AE_Q8_BLOCK <= n) { // warp-uniform
            adam8_load<true>(in, w, mq, ms, vq, vs, g, b, j, 8);
            bad |= adam8_update<true>(k, code, in, w, mq, ms, vq, vs, p, b, j, 8);
        } else {
            const int len = j >= n ? 0 : (n - j < 8 ? (int)(n - j) : 8);
            adam8_load<false>(in, w, mq, ms, vq, vs, g, b, j, len);
            bad |= adam8_update<false>(k, code, in, w, mq, ms, vq, vs, p, b, j, len);
        }
    }
    if (bad && flag) *flag = 1;
}

} // namespace

// ---- entry points ------------------------------------------------------------------------------

void ae_cuda_embed_bwd(const ae_backend *be, ae_ptr dtable, ae_ptr dy, ae_ptr ids, int T, int D) {
    if (cuda_failed(be)) return;
    const char *op = "embed_bwd";
    cuda_need(dtable, AE_M_FLOAT, op, "dtable");
    cuda_need(dy, AE_M_FLOAT, op, "dy");
    cuda_need(ids, AE_M_I32, op, "ids");
    if (T <= 0 || D <= 0) return;
    cudaStream_t s = stream_of(be);
    size_t sort_bytes = 0;
    cuda_check(be, cub::DeviceRadixSort::SortPairs(nullptr, sort_bytes, (const int32_t *)nullptr,
                                                   (int32_t *)nullptr, (const int32_t *)nullptr,
                                                   (int32_t *)nullptr, T, 0, 32, s),
               op);
    const size_t ints = ((size_t)3 * T + 63) / 64 * 64; // keys out, tokens in, tokens out
    char *buf = (char *)cuda_tmp_alloc(be, ints * sizeof(int32_t) + sort_bytes, op);
    if (!buf) return;
    int32_t *key = (int32_t *)buf, *tok_in = key + T, *tok = tok_in + T; // (T) each
    void *sort_tmp = buf + ints * sizeof(int32_t);
    k_iota<<<cuda_blocks((size_t)T, kThreads), kThreads, 0, s>>>(tok_in, T);
    cuda_check(be, cudaGetLastError(), op);
    cuda_check(be, cub::DeviceRadixSort::SortPairs(sort_tmp, sort_bytes, (const int32_t *)ids.data,
                                                   key, tok_in, tok, T, 0, 32, s),
               op);
    dim3 grid((unsigned)((T + kSegRows - 1) / kSegRows), (unsigned)((D + kThreads - 1) / kThreads));
    AE_CUDA_FLOAT_DISPATCH(dtable.dtype, TD, {
        k_embed_rows<TD><<<grid, kThreads, 0, s>>>((TD *)dtable.data, dy.data, is_bf(dy), key, tok,
                                                   T, D);
    });
    cuda_check(be, cudaGetLastError(), op);
    cuda_tmp_free(be, buf);
}

void ae_cuda_mse_rows(const ae_backend *be, ae_ptr out, ae_ptr dy, ae_ptr y, ae_ptr t, int N,
                      int D, int normalized, float scale) {
    if (cuda_failed(be)) return;
    const char *op = "mse_rows";
    const int f64 = out.dtype == AE_DT_F64; // F64 keeps the double row losses
    if (!f64) cuda_need(out, AE_M_F32, op, "out");
    cuda_need(dy, AE_M_FLOAT, op, "dy");
    cuda_need(y, AE_M_FLOAT, op, "y");
    cuda_need(t, AE_M_FLOAT, op, "t");
    if (N <= 0 || D <= 0) return;
    k_mse_rows<<<(unsigned)N, kThreads, 0, stream_of(be)>>>(
        out.data, f64, dy.data, is_bf(dy), y.data, is_bf(y), t.data, is_bf(t), D, normalized,
        scale);
    cuda_check(be, cudaGetLastError(), op);
}

void ae_cuda_cosine_rows(const ae_backend *be, ae_ptr out, ae_ptr da, ae_ptr a, ae_ptr b, int N,
                         int D, float scale) {
    if (cuda_failed(be)) return;
    const char *op = "cosine_rows";
    cuda_need(out, AE_M_F32, op, "out");
    cuda_need(da, AE_M_FLOAT, op, "da");
    cuda_need(a, AE_M_FLOAT, op, "a");
    cuda_need(b, AE_M_FLOAT, op, "b");
    if (N <= 0 || D <= 0) return;
    k_cosine_rows<<<(unsigned)N, kThreads, 0, stream_of(be)>>>(
        (float *)out.data, da.data, is_bf(da), a.data, is_bf(a), b.data, is_bf(b), D, scale);
    cuda_check(be, cudaGetLastError(), op);
}

void ae_cuda_softmax_stats(const ae_backend *be, ae_ptr stats, ae_ptr arg, ae_ptr z, int64_t ldz,
                           int N, int Vc, int v0, float inv_tau) {
    if (cuda_failed(be)) return;
    const char *op = "softmax_stats";
    cuda_need(stats, AE_M_F32, op, "stats");
    cuda_need(arg, AE_M_I32, op, "arg");
    cuda_need(z, AE_M_F32, op, "z");
    if (N <= 0 || Vc <= 0) return;
    k_softmax_stats<<<(unsigned)N, kThreads, 0, stream_of(be)>>>(
        (float *)stats.data, (int32_t *)arg.data, (const float *)z.data, ldz, Vc, v0, inv_tau);
    cuda_check(be, cudaGetLastError(), op);
}

void ae_cuda_kd_chunk(const ae_backend *be, ae_ptr kl, ae_ptr dzs, int64_t ldd, ae_ptr zt,
                      ae_ptr zs, int64_t ldz, ae_ptr st, ae_ptr ss, int N, int Vc, float inv_tau,
                      float gscale) {
    if (cuda_failed(be)) return;
    const char *op = "kd_chunk";
    cuda_need(kl, AE_M_F32, op, "kl");
    cuda_need(dzs, AE_M_FLOAT, op, "dzs");
    cuda_need(zt, AE_M_F32, op, "zt");
    cuda_need(zs, AE_M_F32, op, "zs");
    cuda_need(st, AE_M_F32, op, "st");
    cuda_need(ss, AE_M_F32, op, "ss");
    if (N <= 0 || Vc <= 0) return;
    k_kd_chunk<<<(unsigned)N, kThreads, 0, stream_of(be)>>>(
        (float *)kl.data, dzs.data, is_bf(dzs), ldd, (const float *)zt.data,
        (const float *)zs.data, ldz, (const float *)st.data, (const float *)ss.data, Vc, inv_tau,
        gscale);
    cuda_check(be, cudaGetLastError(), op);
}

void ae_cuda_sumsq(const ae_backend *be, ae_ptr out, ae_ptr x, size_t n) {
    if (cuda_failed(be)) return;
    const char *op = "sumsq";
    const int f64 = out.dtype == AE_DT_F64; // F64 keeps the double sum
    if (!f64) cuda_need(out, AE_M_F32, op, "out");
    cuda_need(x, AE_M_FLOAT, op, "x");
    cudaStream_t s = stream_of(be);
    const unsigned nb = grid_cap(n / 4 + 1, kThreads * 8, kSumsqBlocks);
    double *part = (double *)cuda_tmp_alloc(be, sizeof(double) * nb, op);
    if (!part) return;
    const int vec = vec_ok(x);
    AE_CUDA_FLOAT_DISPATCH(x.dtype, T, {
        if (vec)
            k_sumsq_partial<4, T><<<nb, kThreads, 0, s>>>(part, (const T *)x.data, n);
        else
            k_sumsq_partial<1, T><<<nb, kThreads, 0, s>>>(part, (const T *)x.data, n);
    });
    cuda_check(be, cudaGetLastError(), op);
    k_sumsq_final<<<1, kThreads, 0, s>>>(out.data, f64, part, (int)nb);
    cuda_check(be, cudaGetLastError(), op);
    cuda_tmp_free(be, part);
}

void ae_cuda_axpby(const ae_backend *be, ae_ptr y, float alpha, ae_ptr x, float beta, size_t n) {
    if (cuda_failed(be)) return;
    const char *op = "axpby";
    cuda_need(y, AE_M_FLOAT, op, "y");
    cuda_need(x, AE_M_FLOAT, op, "x");
    if (n == 0) return;
    cudaStream_t s = stream_of(be);
    const int vec = vec_ok(x) && vec_ok(y);
    const unsigned nb = grid_cap(vec ? n / 4 + 1 : n, kThreads, (unsigned)cu(be)->sm_count * 16);
    AE_CUDA_FLOAT_DISPATCH(y.dtype, TY, AE_CUDA_FLOAT_DISPATCH(x.dtype, TX, {
        if (vec)
            k_axpby<4, TY, TX><<<nb, kThreads, 0, s>>>((TY *)y.data, (const TX *)x.data, alpha,
                                                        beta, n);
        else
            k_axpby<1, TY, TX><<<nb, kThreads, 0, s>>>((TY *)y.data, (const TX *)x.data, alpha,
                                                        beta, n);
    }));
    cuda_check(be, cudaGetLastError(), op);
}

// The kernels' scalars of one step (1 − β formed here in float, as the cpu does).
static AdamK adam_k(const ae_adamw_args *a) {
    AdamK k;
    k.lr = a->lr, k.b1 = a->beta1, k.omb1 = 1.0f - a->beta1, k.b2 = a->beta2;
    k.omb2 = 1.0f - a->beta2, k.eps = a->eps, k.wd = a->weight_decay, k.bc1 = a->bc1;
    k.bc2 = a->bc2, k.gs = a->gscale;
    return k;
}

void ae_cuda_adamw(const ae_backend *be, const ae_adamw_args *a, ae_ptr w, ae_ptr m, ae_ptr v,
                   ae_ptr g, ae_ptr param, ae_ptr flag, size_t n) {
    if (cuda_failed(be)) return;
    const char *op = "adamw";
    cuda_need(w, AE_M_F32, op, "w");
    cuda_need(m, AE_M_F32, op, "m");
    cuda_need(v, AE_M_F32, op, "v");
    cuda_need(g, AE_M_FLOAT, op, "g");
    cuda_need(param, AE_M_FLOAT, op, "param");
    cuda_need(flag, AE_M_I32, op, "flag");
    if (n == 0) return;
    const AdamK k = adam_k(a);
    cudaStream_t s = stream_of(be);
    // param == w (F32): nothing to convert
    ae_ptr p = param.data == w.data ? ae_ptr_null() : param;
    const int vec = vec_ok(w) && vec_ok(m) && vec_ok(v) && vec_ok(g) && vec_ok(p);
    const unsigned nb = grid_cap(vec ? n / 4 + 1 : n, kThreads, (unsigned)cu(be)->sm_count * 16);
    float *wf = (float *)w.data, *mf = (float *)m.data, *vf = (float *)v.data;
    int32_t *fl = (int32_t *)flag.data;
    AE_CUDA_FLOAT_DISPATCH(p.dtype, TP, AE_CUDA_FLOAT_DISPATCH(g.dtype, TG, {
        const TG *gp = (const TG *)g.data;
        if (vec)
            k_adamw<4, TP, TG><<<nb, kThreads, 0, s>>>(k, wf, mf, vf, gp, (TP *)p.data, fl, n);
        else
            k_adamw<1, TP, TG><<<nb, kThreads, 0, s>>>(k, wf, mf, vf, gp, (TP *)p.data, fl, n);
    }));
    cuda_check(be, cudaGetLastError(), op);
}

// Aborts unless p is U8 (a bug in the caller).
static void need_u8(ae_ptr p, const char *op, const char *arg) {
    if (p.dtype == AE_DT_U8) return;
    fprintf(stderr, "attnedit: internal error: cuda %s: argument %s has dtype %s, not U8\n", op,
            arg, ae_dtype_name(p.dtype));
    abort();
}

void ae_cuda_adamw8(const ae_backend *be, const ae_adamw_args *a, ae_ptr w, ae_ptr mq, ae_ptr ms,
                    ae_ptr vq, ae_ptr vs, ae_ptr g, ae_ptr param, ae_ptr flag, size_t n) {
    if (cuda_failed(be)) return;
    const char *op = "adamw8";
    cuda_need(w, AE_M_F32, op, "w");
    need_u8(mq, op, "mq");
    need_u8(vq, op, "vq");
    cuda_need(ms, AE_M_F32, op, "ms");
    cuda_need(vs, AE_M_F32, op, "vs");
    cuda_need(g, AE_M_FLOAT, op, "g");
    cuda_need(param, AE_M_FLOAT, op, "param");
    cuda_need(flag, AE_M_I32, op, "flag");
    if (n == 0) return;
    ae_q8_code code;
    ae_q8_code_init(&code);
    ae_ptr p = param.data == w.data ? ae_ptr_null() : param; // param == w (F32): nothing to convert
    const int vec = vec_ok(w) && vec_ok(g) && vec_ok(p) && ((uintptr_t)mq.data & 7u) == 0 &&
                    ((uintptr_t)vq.data & 7u) == 0;
    const unsigned nb = grid_cap(ae_q8_blocks(n), kWarps, (unsigned)cu(be)->sm_count * 8);
    AE_CUDA_FLOAT_DISPATCH(p.dtype, TP, AE_CUDA_FLOAT_DISPATCH(g.dtype, TG, {
        k_adamw8<TP, TG><<<nb, kThreads, 0, stream_of(be)>>>(
            ae_q8_step_of(a), code, (float *)w.data, (uint8_t *)mq.data, (float *)ms.data,
            (uint8_t *)vq.data, (float *)vs.data, (const TG *)g.data, (TP *)p.data,
            (int32_t *)flag.data, n, vec);
    }));
    cuda_check(be, cudaGetLastError(), op);
}
