// Paged KV cache ops on CUDA (semantics in ae_paged_attn_args, backend/ops.h; the fp32 reference
// is backend/cpu_paged.c).
//
//   k_paged_store: one block per row; threads copy the row's cols values (converting F32 <-> BF16
//     when the dtypes differ) into its page slot.
//   k_paged_attn: one block of 4 warps per (query row, head). Warp w visits the keys lo + w,
//     lo + w + 4, ...: the lanes split the dk-long dot product (warp shuffle reduction), each
//     warp keeps an online softmax (running max m, sum l) and an fp32 accumulator of the dv
//     output columns in registers (lane: columns lane, lane + 32, ...: dv <= 512). The four
//     partial states are merged in shared memory with the sink, and the row is written once.
//     This is the straightforward correct kernel (a decode over N sequences at once); a
//     split-KV / tensor-core version for long contexts is future work.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "backend/cuda_attention.h"

namespace {

constexpr int kWarps = 4;
constexpr int kMaxCols = 16; // dv <= 32 * kMaxCols

template <typename TD, typename TS>
__global__ void k_paged_store(TD *dst, int64_t page_stride, int page_size, int64_t ldd,
                              const TS *src, int64_t lds, const int32_t *slot, int cols) {
    int r = blockIdx.x, s = slot[r];
    if (s < 0) return;
    TD *d = dst + (int64_t)(s / page_size) * page_stride + (int64_t)(s % page_size) * ldd;
    const TS *x = src + (int64_t)r * lds;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) stf(d + c, ldf(x + c));
}

struct PagedParams {
    int Hq, G, dk, dv, page_size, max_blocks, k_stride, v_stride, window;
    int64_t page_stride;
    float scale;
    const float *sinks;
    const int32_t *seq, *pos, *table;
};

template <typename T>
__global__ void k_paged_attn(PagedParams p, T *out, const T *q, const T *k, const T *v) {
    extern __shared__ float sm[];
    float *qs = sm;                           // (dk)
    float *ms = qs + p.dk;                    // (kWarps)
    float *ls = ms + kWarps;                  // (kWarps)
    float *os = ls + kWarps;                  // (kWarps, dv)
    int r = blockIdx.x / p.Hq, h = blockIdx.x % p.Hq, kh = h / p.G;
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    const T *qv = q + ((int64_t)r * p.Hq + h) * p.dk;
    for (int d = threadIdx.x; d < p.dk; d += blockDim.x) qs[d] = ldf(qv + d);
    __syncthreads();
    const int32_t *tab = p.table + (int64_t)p.seq[r] * p.max_blocks;
    int qpos = p.pos[r];
    int lo = p.window > 0 && qpos - p.window + 1 > 0 ? qpos - p.window + 1 : 0;
    float m = -INFINITY, l = 0.0f, acc[kMaxCols];
#pragma unroll
    for (int i = 0; i < kMaxCols; i++) acc[i] = 0.0f;
    for (int j = lo + w; j <= qpos; j += kWarps) {
        int64_t base = (int64_t)tab[j / p.page_size] * p.page_stride;
        int64_t row = j % p.page_size;
        const T *kr = k + base + row * p.k_stride + (int64_t)kh * p.dk;
        const T *vr = v + base + row * p.v_stride + (int64_t)kh * p.dv;
        float s = 0.0f;
        for (int d = lane; d < p.dk; d += 32) s += qs[d] * ldf(kr + d);
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
        s *= p.scale;
        float mn = fmaxf(m, s), corr = expf(m - mn), e = expf(s - mn);
        l = l * corr + e;
#pragma unroll
        for (int i = 0; i < kMaxCols; i++) {
            int d = lane + 32 * i;
            if (d < p.dv) acc[i] = acc[i] * corr + e * ldf(vr + d);
        }
        m = mn;
    }
    if (lane == 0) {
        ms[w] = m;
        ls[w] = l;
    }
#pragma unroll
    for (int i = 0; i < kMaxCols; i++) {
        int d = lane + 32 * i;
        if (d < p.dv) os[w * p.dv + d] = acc[i];
    }
    __syncthreads();
    float M = p.sinks ? p.sinks[h] : -INFINITY;
    for (int i = 0; i < kWarps; i++) M = fmaxf(M, ms[i]);
    float L = p.sinks ? expf(p.sinks[h] - M) : 0.0f, wt[kWarps];
    for (int i = 0; i < kWarps; i++) {
        wt[i] = ls[i] > 0.0f ? expf(ms[i] - M) : 0.0f;
        L += ls[i] * wt[i];
    }
    T *o = out + ((int64_t)r * p.Hq + h) * p.dv;
    for (int d = threadIdx.x; d < p.dv; d += blockDim.x) {
        float s = 0.0f;
        for (int i = 0; i < kWarps; i++) s += os[i * p.dv + d] * wt[i];
        stf(o + d, s / L);
    }
}

} // namespace

void ae_cuda_paged_store(const ae_backend *be, ae_ptr dst, int64_t page_stride, int page_size,
                         int64_t ldd, ae_ptr src, int64_t lds, ae_ptr slot, int N, int cols) {
    if (cuda_failed(be) || N <= 0 || cols <= 0) return;
    cuda_need(dst, AE_M_FLOAT, "paged_store", "dst");
    cuda_need(src, AE_M_FLOAT, "paged_store", "src");
    cuda_need(slot, AE_M_I32, "paged_store", "slot");
    int threads = cols >= 256 ? 256 : ((cols + 31) / 32) * 32;
    AE_CUDA_FLOAT_DISPATCH(dst.dtype, TD, AE_CUDA_FLOAT_DISPATCH(src.dtype, TS, {
        k_paged_store<TD, TS><<<N, threads, 0, stream_of(be)>>>(
            (TD *)dst.data, page_stride, page_size, ldd, (const TS *)src.data, lds,
            (const int32_t *)slot.data, cols);
    }));
    cuda_check(be, cudaGetLastError(), "paged_store");
}

void ae_cuda_attention_paged(const ae_backend *be, const ae_paged_attn_args *a, ae_ptr out,
                             ae_ptr q, ae_ptr k, ae_ptr v) {
    if (cuda_failed(be) || a->N <= 0) return;
    cuda_need(out, AE_M_FLOAT, "attention_paged", "out");
    cuda_need(q, AE_M_FLOAT, "attention_paged", "q");
    cuda_need(k, AE_M_FLOAT, "attention_paged", "k");
    cuda_need(v, AE_M_FLOAT, "attention_paged", "v");
    cuda_need(a->sinks, AE_M_F32, "attention_paged", "sinks");
    cuda_need(a->seq, AE_M_I32, "attention_paged", "seq");
    cuda_need(a->pos, AE_M_I32, "attention_paged", "pos");
    cuda_need(a->block_table, AE_M_I32, "attention_paged", "block_table");
    if (q.dtype != out.dtype || k.dtype != q.dtype || v.dtype != q.dtype || a->dv > 32 * kMaxCols ||
        a->Hkv <= 0 || a->Hq % a->Hkv != 0) {
        fprintf(stderr, "attnedit: internal error: cuda attention_paged: dtypes %s/%s/%s/%s, "
                        "dv %d (max %d), Hq %d, Hkv %d not supported\n",
                ae_dtype_name(out.dtype), ae_dtype_name(q.dtype), ae_dtype_name(k.dtype),
                ae_dtype_name(v.dtype), a->dv, 32 * kMaxCols, a->Hq, a->Hkv);
        abort();
    }
    PagedParams p;
    p.Hq = a->Hq;
    p.G = a->Hq / a->Hkv;
    p.dk = a->dk;
    p.dv = a->dv;
    p.page_size = a->page_size;
    p.max_blocks = a->max_blocks;
    p.k_stride = a->k_stride;
    p.v_stride = a->v_stride;
    p.window = a->window;
    p.page_stride = a->page_stride;
    p.scale = a->scale;
    p.sinks = (const float *)a->sinks.data;
    p.seq = (const int32_t *)a->seq.data;
    p.pos = (const int32_t *)a->pos.data;
    p.table = (const int32_t *)a->block_table.data;
    size_t smem = sizeof(float) * ((size_t)a->dk + 2 * kWarps + (size_t)kWarps * a->dv);
    AE_CUDA_FLOAT_DISPATCH(q.dtype, T, {
        if (!attn_set_smem(be, (const void *)k_paged_attn<T>, smem)) {
            cuda_check(be, cudaErrorInvalidValue, "attention_paged (shared memory)");
            return;
        }
        k_paged_attn<T><<<(unsigned)((size_t)a->N * a->Hq), 32 * kWarps, smem, stream_of(be)>>>(
            p, (T *)out.data, (const T *)q.data, (const T *)k.data, (const T *)v.data);
    });
    cuda_check(be, cudaGetLastError(), "attention_paged");
}
