// MoE training ops on the GPU (contracts in ops.h; fp32 references in cpu_moe_train.c):
//
// moe_plan: a stable radix sort of the slots s = t·K + k by expert (cub::DeviceRadixSort on the
//   expert ids with the slot ids as values: LSD radix sort is stable, so an expert's slots stay
//   in increasing s), then pos[order[p]] = p and tok[p] = order[p] / K, and off[e] = the first
//   sorted position whose expert is >= e (binary search, one thread per e). The same result as
//   the CPU's counting sort, exactly.
// moe_combine: thread per (token, column), the K slot rows summed in k order in fp32.
// moe_combine_bwd: block per token; per choice k the dot dy·o is a fixed-shape block reduction
//   (butterfly in each warp, warps in order, in double) and the slot row dye = w·dy is written.
// moe_route_bwd: warp per token, lane j < K holding choice j; the K-term sums are formed in
//   double in j order by every lane (the CPU's order), then each lane writes its experts'
//   dz = p·(dp − Σ dp·p).
// No float atomics: every result is the same on every run.
#include <cub/cub.cuh>
#include <stdio.h>
#include <stdlib.h>

#include "backend/cuda_internal.h"

namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

__global__ void k_slot_iota(int32_t *v, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) v[i] = i;
}

// order: (S) slot ids sorted by expert;  pos, tok: (S)
__global__ void k_plan_scatter(int32_t *pos, int32_t *tok, const int32_t *order, int S, int K) {
    int p = blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= S) return;
    int s = order[p];
    pos[s] = p;
    tok[p] = s / K;
}

// off[e] = first p with key[p] >= e, for e in [0, E] (key: (S) sorted expert ids).
__global__ void k_plan_offsets(int32_t *off, const int32_t *key, int S, int E) {
    int e = blockIdx.x * blockDim.x + threadIdx.x;
    if (e > E) return;
    int lo = 0, hi = S;
    while (lo < hi) {
        int mid = (lo + hi) >> 1;
        if (key[mid] < e) lo = mid + 1;
        else hi = mid;
    }
    off[e] = lo;
}

// y[t, d] (=|+=) Σ_k w[t,k] · o[pos[t·K + k], d]. Grid (T, column blocks).
template <typename TY, typename TO>
__global__ void __launch_bounds__(kThreads)
k_combine(TY *y, const TO *o, const int32_t *pos, const float *wts, int K, int D, int accumulate) {
    int t = blockIdx.x, d = blockIdx.y * blockDim.x + threadIdx.x;
    if (d >= D) return;
    float acc = 0.0f;
    for (int k = 0; k < K; k++) {
        size_t s = (size_t)t * K + k;
        acc += (wts ? wts[s] : 1.0f) * ldf(o + (size_t)pos[s] * D + d);
    }
    TY *dst = y + (size_t)t * D + d;
    stf(dst, accumulate ? ldf(dst) + acc : acc);
}

// Block per token: for each k, dye[pos[s]] = w·dy[t] and dw[s] = dy[t]·o[pos[s]].
template <typename TE, typename TD, typename TO>
__global__ void __launch_bounds__(kThreads)
k_combine_bwd(TE *dye, float *dw, const TD *dy, const TO *o, const int32_t *pos, const float *wts,
              int K, int D) {
    __shared__ double sh[kWarps];
    int t = blockIdx.x;
    const TD *dyt = dy + (size_t)t * D;
    for (int k = 0; k < K; k++) {
        size_t s = (size_t)t * K + k, row = (size_t)pos[s] * D;
        float w = wts[s];
        double dot = 0.0;
        for (int d = threadIdx.x; d < D; d += kThreads) {
            float g = ldf(dyt + d);
            dot += (double)g * ldf(o + row + d);
            stf(dye + row + d, w * g);
        }
        for (int off = 16; off > 0; off >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, off);
        if ((threadIdx.x & 31) == 0) sh[threadIdx.x >> 5] = dot;
        __syncthreads();
        if (threadIdx.x == 0) {
            double sum = 0.0;
            for (int i = 0; i < kWarps; i++) sum += sh[i];
            dw[s] = (float)sum;
        }
        __syncthreads(); // sh is rewritten for the next k
    }
}

// Warp per token (kWarps tokens per block); K <= 32.
template <typename TZ>
__global__ void __launch_bounds__(kThreads)
k_route_bwd(TZ *dz, const float *dw, const float *probs, const int32_t *idx, int T, int E, int K,
            int renorm) {
    const unsigned all = 0xffffffffu;
    int lane = threadIdx.x & 31, t = blockIdx.x * kWarps + (threadIdx.x >> 5);
    if (t >= T) return; // whole warps leave together
    const float *p = probs + (size_t)t * E;
    int my_e = lane < K ? idx[(size_t)t * K + lane] : 0;
    double my_p = lane < K ? (double)p[my_e] : 0.0, my_g = lane < K ? (double)dw[(size_t)t * K + lane] : 0.0;
    double ssum = 0.0, wdw = 0.0, pdp = 0.0;
    for (int j = 0; j < K; j++) ssum += __shfl_sync(all, my_p, j);
    for (int j = 0; j < K; j++) wdw += __shfl_sync(all, my_g, j) * __shfl_sync(all, my_p, j) / ssum;
    double my_dp = renorm ? (my_g - wdw) / ssum : my_g;
    for (int j = 0; j < K; j++) pdp += __shfl_sync(all, my_dp, j) * __shfl_sync(all, my_p, j);
    TZ *dzt = dz + (size_t)t * E;
    for (int e = lane; e < E; e += 32) stf(dzt + e, (float)(-(double)p[e] * pdp));
    __syncwarp();
    if (lane < K) stf(dzt + my_e, (float)(my_p * (my_dp - pdp)));
}

int bits_for(int E) { // radix bits that cover expert ids 0 .. E-1
    int b = 1;
    while (b < 31 && (1 << b) < E) b++;
    return b;
}

} // namespace

void ae_cuda_moe_plan(const ae_backend *be, ae_ptr off, ae_ptr pos, ae_ptr tok, ae_ptr idx, int T,
                      int K, int E) {
    if (cuda_failed(be)) return;
    const char *op = "moe_plan";
    cuda_need(off, AE_M_I32, op, "off");
    cuda_need(pos, AE_M_I32, op, "pos");
    cuda_need(tok, AE_M_I32, op, "tok");
    cuda_need(idx, AE_M_I32, op, "idx");
    if (E <= 0 || K <= 0 || T < 0 || (int64_t)T * K > INT32_MAX / 2) {
        fprintf(stderr, "attnedit: internal error: cuda moe_plan: T=%d K=%d E=%d\n", T, K, E);
        abort();
    }
    int S = T * K;
    cudaStream_t st = stream_of(be);
    size_t sort_bytes = 0;
    int bits = bits_for(E);
    cuda_check(be, cub::DeviceRadixSort::SortPairs(nullptr, sort_bytes, (const int32_t *)nullptr,
                                                   (int32_t *)nullptr, (const int32_t *)nullptr,
                                                   (int32_t *)nullptr, S, 0, bits, st),
               op);
    size_t ints = ((size_t)3 * S + 63) / 64 * 64; // sorted keys, slot ids in, slot ids sorted
    char *buf = (char *)cuda_tmp_alloc(be, ints * sizeof(int32_t) + sort_bytes, op);
    if (!buf) return;
    int32_t *key = (int32_t *)buf, *ids_in = key + S, *order = ids_in + S; // (S) each
    if (S > 0) {
        k_slot_iota<<<cuda_blocks((size_t)S, kThreads), kThreads, 0, st>>>(ids_in, S);
        cuda_check(be, cudaGetLastError(), op);
        cuda_check(be, cub::DeviceRadixSort::SortPairs(buf + ints * sizeof(int32_t), sort_bytes,
                                                       (const int32_t *)idx.data, key, ids_in,
                                                       order, S, 0, bits, st),
                   op);
        k_plan_scatter<<<cuda_blocks((size_t)S, kThreads), kThreads, 0, st>>>(
            (int32_t *)pos.data, (int32_t *)tok.data, order, S, K);
        cuda_check(be, cudaGetLastError(), op);
    }
    k_plan_offsets<<<cuda_blocks((size_t)E + 1, kThreads), kThreads, 0, st>>>((int32_t *)off.data,
                                                                              key, S, E);
    cuda_check(be, cudaGetLastError(), op);
    cuda_tmp_free(be, buf);
}

void ae_cuda_moe_combine(const ae_backend *be, ae_ptr y, ae_ptr o, ae_ptr pos, ae_ptr wts, int T,
                         int K, int D, int accumulate) {
    if (cuda_failed(be)) return;
    const char *op = "moe_combine";
    cuda_need(y, AE_M_FLOAT, op, "y");
    cuda_need(o, AE_M_FLOAT, op, "o");
    cuda_need(pos, AE_M_I32, op, "pos");
    cuda_need(wts, AE_M_F32, op, "wts");
    if (T <= 0 || D <= 0) return;
    dim3 grid((unsigned)T, (unsigned)((D + kThreads - 1) / kThreads));
    AE_CUDA_FLOAT_DISPATCH(y.dtype, TY, AE_CUDA_FLOAT_DISPATCH(o.dtype, TO, {
        k_combine<TY, TO><<<grid, kThreads, 0, stream_of(be)>>>(
            (TY *)y.data, (const TO *)o.data, (const int32_t *)pos.data, (const float *)wts.data,
            K, D, accumulate);
    }));
    cuda_check(be, cudaGetLastError(), op);
}

void ae_cuda_moe_combine_bwd(const ae_backend *be, ae_ptr dye, ae_ptr dw, ae_ptr dy, ae_ptr o,
                             ae_ptr pos, ae_ptr wts, int T, int K, int D) {
    if (cuda_failed(be)) return;
    const char *op = "moe_combine_bwd";
    cuda_need(dye, AE_M_FLOAT, op, "dye");
    cuda_need(dw, AE_M_F32, op, "dw");
    cuda_need(dy, AE_M_FLOAT, op, "dy");
    cuda_need(o, AE_M_FLOAT, op, "o");
    cuda_need(pos, AE_M_I32, op, "pos");
    cuda_need(wts, AE_M_F32, op, "wts");
    if (T <= 0 || K <= 0) return;
    // o is F32 in the training pass; other dtype pairs dispatch too
    AE_CUDA_FLOAT_DISPATCH(dye.dtype, TE, AE_CUDA_FLOAT_DISPATCH(dy.dtype, TD,
        AE_CUDA_FLOAT_DISPATCH(o.dtype, TO, {
            k_combine_bwd<TE, TD, TO><<<(unsigned)T, kThreads, 0, stream_of(be)>>>(
                (TE *)dye.data, (float *)dw.data, (const TD *)dy.data, (const TO *)o.data,
                (const int32_t *)pos.data, (const float *)wts.data, K, D);
        })));
    cuda_check(be, cudaGetLastError(), op);
}

void ae_cuda_moe_route_bwd(const ae_backend *be, ae_ptr dz, ae_ptr dw, ae_ptr probs, ae_ptr idx,
                           int T, int E, int K, int renorm) {
    if (cuda_failed(be)) return;
    const char *op = "moe_route_bwd";
    cuda_need(dz, AE_M_FLOAT, op, "dz");
    cuda_need(dw, AE_M_F32, op, "dw");
    cuda_need(probs, AE_M_F32, op, "probs");
    cuda_need(idx, AE_M_I32, op, "idx");
    if (T <= 0) return;
    if (K <= 0 || K > 32 || K > E) {
        fprintf(stderr, "attnedit: internal error: cuda moe_route_bwd: E=%d K=%d (K at most 32)\n",
                E, K);
        abort();
    }
    unsigned blocks = (unsigned)((T + kWarps - 1) / kWarps);
    AE_CUDA_FLOAT_DISPATCH(dz.dtype, TZ, {
        k_route_bwd<TZ><<<blocks, kThreads, 0, stream_of(be)>>>(
            (TZ *)dz.data, (const float *)dw.data, (const float *)probs.data,
            (const int32_t *)idx.data, T, E, K, renorm);
    });
    cuda_check(be, cudaGetLastError(), op);
}
