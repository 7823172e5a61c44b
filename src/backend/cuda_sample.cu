// Sampling of logit rows on the GPU (sample_rows; the rule: backend/ops.h, ae_sample_param; the
// reference: cpu_sample.c, a sort of the whole vocabulary). One block per row, no sort: a few
// passes over the row (F32, read from L2), each a block-wide reduction or a histogram.
//
//   1. max and its first index (a temperature-0 row ends here: argmax_rows' answer);
//   2. Σ exp((z - max) / T) in double (per-thread sums in index order, then a fixed tree);
//   3. top-k: the k-th largest key κk (radix select, below, on counts);
//   4. top-p: the largest key κp whose mass Σ p(key >= κp), within the top-k set, reaches top_p;
//   5. the draw: the key κr where the running mass in descending order first exceeds
//      r = u · (kept mass); among equal keys the lower ids come first (a scan in id order
//      finds the j-th one when j > 0).
//
// Keys. The key of a logit is its float's 32-bit order-preserving code (-0 taken as +0). Since
// x -> expf((x - max) / T) and the normalisation are monotone, a larger key never has a smaller
// probability, and equal keys (equal logits) have equal probabilities: ordering by key
// descending, equal keys by id, is the reference's order (probability descending, ties by id).
// Each search is a radix select over the 32 key bits in digits of 11, 11 and 10 bits: a pass
// builds, over the set's elements whose key starts with the digits chosen so far, a histogram
// of per-bucket counts and per-bucket masses; one warp then finds the bucket where the
// descending cumulative sum reaches the target. After three passes the bucket is one key, and
// the weight above it and its members' count are known; the members' own order is by id, so the
// cut inside them is arithmetic (all members have the same probability).
//
// Masses are integers: each probability p (a float, as the reference's) counts as
// floor(p · 2^62), exact for every p >= 2^-38 (smaller ones, together below V · 2^-62, are
// dropped). Integer sums do not depend on the order of the additions, so the shared-memory
// atomics that build the histograms give the same sums on every run: the kernel is
// deterministic (no float atomics; the float and double reductions run in a fixed order).
//
// Where it may differ from the reference: the sums. The reference adds the float probabilities
// in double in sorted order; here they are added as integers (exact, less the dropped tail), the
// probabilities come from CUDA's expf (within 2 ulp of glibc's) and a double product with
// 1/Σ (the reference divides), and Σ runs in another order. So when a cumulative sum lies
// within about 1e-7 · (kept mass) of top_p or of r, the cut or the draw can land one id away.
// Also, two different logits within an ulp or two of each other can round to one probability:
// the reference then orders them by id, the kernel by logit, which matters only when the cut
// or the draw falls between them. tests/test_cuda_sample.c builds rows that avoid both and
// checks equality id for id.
#include <limits.h>
#include <math.h>

#include "backend/cuda_internal.h"

namespace {

constexpr int kThreads = 1024;
constexpr int kWarps = kThreads / 32;
constexpr int kBuckets = 2048;                // 11-bit digits
constexpr double kFix = 4611686018427387904.0; // 2^62: a probability as an integer

// The float's order-preserving code (larger float, larger key; -0 and +0 one key).
__device__ __forceinline__ uint32_t key_of(float x) {
    uint32_t b = __float_as_uint(x + 0.0f);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
__device__ __forceinline__ float logit_of(uint32_t k) {
    return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

struct RowCtx {
    const float *z; // (V)
    int V;
    float mx, T;
    double inv_sum; // 1 / Σ exp((z - mx) / T)
};

// floor(p · 2^62) of the element's probability, p rounded to float as the reference's.
__device__ __forceinline__ uint64_t mass_of(const RowCtx &c, float x) {
    float e = expf(__fdiv_rn(__fsub_rn(x, c.mx), c.T));
    float p = __double2float_rn(__dmul_rn((double)e, c.inv_sum));
    return __double2ull_rz(__dmul_rn((double)p, kFix));
}

// The elements of a search: all, or those with key > lo and the c lowest ids with key == lo
// (each of weight w; the lowest of them is min_id).
struct Set {
    int all;
    uint32_t lo;
    int c, min_id;
    uint64_t w;
};

// A search's answer: the largest key whose cumulative weight (of the set's elements with key >=
// it) reaches the target; above: the weight of the set's elements with a larger key; n_eq and
// min_id: the set's members with that key. found = 0 when the set's whole weight (total) does
// not reach the target.
struct Cross {
    int found;
    uint32_t key;
    uint64_t above, total;
    int n_eq, min_id;
};

struct Shared {
    int cnt[kBuckets];
    uint64_t w[kBuckets];
    int mn[kBuckets];
    int warp_i[kWarps];
    float warp_f[kWarps];
    double warp_d[kWarps];
    int found, bucket, id;
    uint64_t above, total;
};

__device__ __forceinline__ bool reaches(uint64_t x, uint64_t target, bool strict) {
    return strict ? x > target : x >= target;
}

// Warp 0: the first bucket, from the highest down, where above + the cumulative weight reaches
// the target (lane L owns the L-th group of nb/32 buckets from the top; a lane-order scan).
template <bool kMass>
__device__ void find_bucket(Shared &sh, int nb, uint64_t above, uint64_t target, bool strict) {
    int lane = threadIdx.x & 31, per = nb / 32, hi = nb - lane * per;
    uint64_t my = 0;
    for (int b = hi - 1; b >= hi - per; b--) my += kMass ? sh.w[b] : (uint64_t)sh.cnt[b];
    uint64_t inc = my;
    for (int off = 1; off < 32; off *= 2) {
        uint64_t t = __shfl_up_sync(0xffffffffu, inc, off);
        if (lane >= off) inc += t;
    }
    unsigned hit = __ballot_sync(0xffffffffu, reaches(above + inc, target, strict));
    if (lane == 31) sh.total = inc;
    if (hit == 0) {
        if (lane == 0) sh.found = 0;
        return;
    }
    if (lane != __ffs(hit) - 1) return;
    uint64_t acc = above + inc - my;
    for (int b = hi - 1; b >= hi - per; b--) {
        uint64_t wb = kMass ? sh.w[b] : (uint64_t)sh.cnt[b];
        if (reaches(acc + wb, target, strict)) {
            sh.found = 1;
            sh.bucket = b;
            sh.above = acc;
            return;
        }
        acc += wb;
    }
}

// The radix search (every thread of the block calls it): weights are masses (kMass) or counts.
template <bool kMass>
__device__ Cross cross(Shared &sh, const RowCtx &c, const Set &set, uint64_t target, bool strict) {
    const int shifts[3] = {21, 10, 0}, widths[3] = {11, 11, 10};
    uint32_t prefix = 0;
    uint64_t above = 0;
    Cross r = {0, 0, 0, 0, 0, INT_MAX};
    for (int d = 0; d < 3; d++) {
        int shift = shifts[d], nb = 1 << widths[d];
        uint32_t hmask = d == 0 ? 0u : ~0u << (shift + widths[d]);
        bool last = d == 2;
        for (int b = threadIdx.x; b < nb; b += blockDim.x) sh.cnt[b] = 0, sh.w[b] = 0, sh.mn[b] = INT_MAX;
        __syncthreads();
        for (int i = threadIdx.x; i < c.V; i += blockDim.x) {
            float x = c.z[i];
            uint32_t k = key_of(x);
            if ((!set.all && k <= set.lo) || (k & hmask) != prefix) continue;
            int b = (int)((k >> shift) & (uint32_t)(nb - 1));
            if (kMass) atomicAdd((unsigned long long *)&sh.w[b], (unsigned long long)mass_of(c, x));
            if (!kMass || last) atomicAdd(&sh.cnt[b], 1); // counts: the weight, or the members
            if (last) atomicMin(&sh.mn[b], i);
        }
        __syncthreads();
        if (threadIdx.x == 0 && !set.all && set.c > 0 && (set.lo & hmask) == prefix) {
            int b = (int)((set.lo >> shift) & (uint32_t)(nb - 1)); // the lo members taken
            sh.cnt[b] += set.c;
            sh.w[b] += (uint64_t)set.c * set.w;
            sh.mn[b] = min(sh.mn[b], set.min_id);
        }
        __syncthreads();
        if (threadIdx.x < 32) find_bucket<kMass>(sh, nb, above, target, strict);
        __syncthreads();
        if (d == 0) r.total = sh.total;
        if (!sh.found) return r; // only in pass 0: later passes split a bucket that reached it
        prefix |= (uint32_t)sh.bucket << shift;
        above = sh.above;
        if (last) {
            r.found = 1;
            r.key = prefix;
            r.above = above;
            r.n_eq = sh.cnt[sh.bucket];
            r.min_id = sh.mn[sh.bucket];
        }
        __syncthreads(); // the histogram is read above before the next pass clears it
    }
    return r;
}

// The j-th lowest id (j >= 0) among the elements with this key: tiles of ids in order, a count
// per warp and a rank per thread.
__device__ int nth_id(Shared &sh, const float *row, int V, uint32_t key, int j) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, base = 0;
    if (threadIdx.x == 0) sh.id = -1;
    for (int t0 = 0; t0 < V; t0 += blockDim.x) {
        int i = t0 + threadIdx.x;
        bool f = i < V && key_of(row[i]) == key;
        unsigned bal = __ballot_sync(0xffffffffu, f);
        if (lane == 0) sh.warp_i[warp] = __popc(bal);
        __syncthreads();
        int before = 0, tile = 0;
        for (int w = 0; w < (int)(blockDim.x >> 5); w++) {
            before += w < warp ? sh.warp_i[w] : 0;
            tile += sh.warp_i[w];
        }
        if (f && base + before + __popc(bal & ((1u << lane) - 1u)) == j) sh.id = i;
        base += tile;
        __syncthreads();
        if (base > j) break; // base is the same in every thread
    }
    return sh.id;
}

// The row's maximum and the first index of it: NaN never wins; INT_MAX when every value is NaN.
struct ArgMax {
    float v;
    int i;
    __device__ void add(int j, float x) {
        if (x == x && (i == INT_MAX || x > v)) v = x, i = j; // j ascends: the first maximum
    }
    __device__ void merge(float v2, int i2) {
        if (i2 == INT_MAX) return;
        if (i == INT_MAX || v2 > v || (v2 == v && i2 < i)) v = v2, i = i2;
    }
};

__device__ ArgMax block_argmax(Shared &sh, ArgMax a) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int off = 16; off > 0; off /= 2) {
        float v = __shfl_down_sync(0xffffffffu, a.v, off);
        int i = __shfl_down_sync(0xffffffffu, a.i, off);
        a.merge(v, i);
    }
    if (lane == 0) sh.warp_f[warp] = a.v, sh.warp_i[warp] = a.i;
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < (int)(blockDim.x >> 5); w++) a.merge(sh.warp_f[w], sh.warp_i[w]);
        sh.warp_f[0] = a.v, sh.warp_i[0] = a.i;
    }
    __syncthreads();
    ArgMax r = {sh.warp_f[0], sh.warp_i[0]};
    __syncthreads();
    return r;
}

__device__ double block_sum(Shared &sh, double s) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int off = 16; off > 0; off /= 2) s += __shfl_down_sync(0xffffffffu, s, off);
    if (lane == 0) sh.warp_d[warp] = s;
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < (int)(blockDim.x >> 5); w++) s += sh.warp_d[w];
        sh.warp_d[0] = s;
    }
    __syncthreads();
    double r = sh.warp_d[0];
    __syncthreads();
    return r;
}

__global__ void __launch_bounds__(kThreads)
k_sample(int32_t *ids, const float *z, const ae_sample_param *prm, int V) {
    __shared__ Shared sh;
    const float *row = z + (size_t)blockIdx.x * V;
    const ae_sample_param p = prm[blockIdx.x];
    ArgMax am = {0.0f, INT_MAX};
    for (int i = threadIdx.x; i < V; i += blockDim.x) am.add(i, row[i]);
    am = block_argmax(sh, am);
    int first_max = (row[0] != row[0] || am.i == INT_MAX) ? 0 : am.i; // as argmax_rows
    if (!(p.temperature > 0.0f)) {
        if (threadIdx.x == 0) ids[blockIdx.x] = first_max;
        return;
    }
    RowCtx c = {row, V, am.v, p.temperature, 0.0};
    double s = 0.0;
    for (int i = threadIdx.x; i < V; i += blockDim.x) s += (double)expf(__fdiv_rn(__fsub_rn(row[i], c.mx), c.T));
    c.inv_sum = 1.0 / block_sum(sh, s);
    // the top-k set: keys above κk, and of κk's members the lowest ids up to k in all
    Set K = {1, 0, 0, 0, 0};
    if (p.top_k > 0 && p.top_k < V) {
        Cross X = cross<false>(sh, c, K, (uint64_t)p.top_k, false);
        if (X.found)
            K = {0, X.key, p.top_k - (int)X.above, X.min_id, mass_of(c, logit_of(X.key))};
    }
    // the top-p set: the shortest prefix of the top-k set whose mass reaches top_p
    uint64_t Pt = (uint64_t)ceil((double)p.top_p * kFix);
    Cross Y = cross<true>(sh, c, K, Pt, false);
    Set P = K;
    uint64_t M = Y.total;
    if (Y.found) {
        uint64_t m = mass_of(c, logit_of(Y.key)); // > 0: the crossing bucket has weight
        uint64_t need = (Pt - Y.above + m - 1) / m;
        int take = need < (uint64_t)Y.n_eq ? (int)need : Y.n_eq;
        P = {0, Y.key, take, Y.min_id, m};
        M = Y.above + (uint64_t)take * m;
    }
    // the draw: the first element of the order whose running mass exceeds r = u · M
    uint64_t R = (uint64_t)floor((double)p.u * (double)M);
    Cross Z = cross<true>(sh, c, P, R, true);
    if (!Z.found) { // a row without finite mass (NaN logits): the argmax, as greedy
        if (threadIdx.x == 0) ids[blockIdx.x] = first_max;
        return;
    }
    uint64_t m = mass_of(c, logit_of(Z.key));
    uint64_t j64 = m ? (R - Z.above) / m : 0;
    int j = j64 < (uint64_t)Z.n_eq ? (int)j64 : Z.n_eq - 1;
    int id = j <= 0 ? Z.min_id : nth_id(sh, row, V, Z.key, j);
    if (threadIdx.x == 0) ids[blockIdx.x] = id >= 0 && id < V ? id : first_max;
}

} // namespace

void ae_cuda_sample_rows(const ae_backend *be, ae_ptr ids, ae_ptr z, ae_ptr params, int N, int V) {
    if (cuda_failed(be)) return;
    cuda_need(ids, AE_M_I32, "sample_rows", "ids");
    cuda_need(z, AE_M_F32, "sample_rows", "z");
    cuda_need(params, AE_M_I32, "sample_rows", "params");
    if (N <= 0 || V <= 0) return;
    k_sample<<<(unsigned)N, kThreads, 0, stream_of(be)>>>(
        (int32_t *)ids.data, (const float *)z.data, (const ae_sample_param *)params.data, V);
    cuda_check(be, cudaGetLastError(), "sample_rows");
}
