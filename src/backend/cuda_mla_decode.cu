// The absorbed-MLA attention and the value absorption (mla_decode_attend, backend/ops.h):
//   o[t, h, :] = Wuv_h · ctx[t, h, :],   ctx = softmax(qt·latentᵀ·scale) · latent[:, 0:R]
// Decode-sized calls (T·Hq <= 64, T <= 8) take two launches where attention + combine + the
// per-head GEMV took three: kernel E (cuda_attention_mla.cu) writes its split partials (also at
// one split), then k_mla_merge_wuv merges them and multiplies by Wuv in one launch:
//   block (head h, slice of kWuvRows rows of Wuv_h), 256 threads:
//   1. its Wuv rows are loaded into registers first (16-byte loads, 4·CPL a lane, in flight
//      while the merge runs: the weights come from DRAM, the partials from L2);
//   2. warp t (< T) turns the splits' maxima and sums of row (t, h) into per-split weights
//      exp2(m_s − max) and 1 / Σ weight·l (lane-strided, then a butterfly: a fixed order);
//   3. ctx[t] (R fp32, shared memory) = Σ_s weight_s · opart_s: thread (sg, cg) sums splits sg,
//      sg + SG, .. for the four columns 4·cg .. (8 loads in flight), the SG partials added in sg
//      order;
//   4. o[t, h, i] = Σ_r ctx[t, r] · Wuv_h[i, r]: warp w owns rows 4w .. 4w + 3 of the slice, a
//      lane chunks lane, lane + 32, .. of each row; a butterfly sum per (t, row), bf16 out.
// ctx stays fp32 (the unfused path rounds it to bf16 between the two products). Deterministic:
// every sum in a fixed order, no atomics. Each of a head's dvo / kWuvRows blocks merges the
// head's partials again (L2 reads: slices x splits x T x R x 4 bytes a head); the slice of 32
// rows keeps that at 4 merges a head for dv 128 (docs/CUDA.md).
// Other calls (more rows, sinks, fp32, AE_CUDA_MLA_KERNEL=old): attention, then the batched gemm.
#include <stdio.h>
#include <stdlib.h>

#include "backend/cuda_attention.h"
#include "backend/cuda_gemv_core.h"
#include "backend/cuda_mla.h"

namespace {

constexpr int kMwThreads = 256, kMwWarps = kMwThreads / 32;
constexpr int kWuvRows = 32, kRowsPerWarp = kWuvRows / kMwWarps; // Wuv rows per block, per warp
#ifndef MLA_MW_BATCH
#define MLA_MW_BATCH 8
#endif
constexpr int kMwMaxT = 8, kMwBatch = MLA_MW_BATCH; // tokens; a thread's partial loads in flight

struct merge_args {
    const float *opart, *mpart, *lpart; // (S, T·Hq, R), (S, T·Hq), (S, T·Hq) fp32
    const bf16 *wuv;                    // head h's (dvo, R) rows at wuv + h·sw
    bf16 *o;                            // (T, Hq, dvo)
    int64_t sw;
    int S, T, Hq, R, dvo;
};

// Shared memory of a block, in floats: weights (T, S), inv (T), ctx (T, R), red (kMwThreads·4),
// each piece starting on 16 bytes (ctx and red are read and written as float4).
__host__ __device__ __forceinline__ size_t round4(size_t n) { return (n + 3) / 4 * 4; }
static size_t merge_smem(int T, int S, int R) {
    return sizeof(float) * (round4((size_t)T * S) + round4(T) + (size_t)T * R + kMwThreads * 4);
}

// Step 2: split weights and the inverse denominator of row (t, h), by warp t.
__device__ __forceinline__ void merge_weights(const merge_args &a, int t, int h, float *w,
                                              float *inv) {
    const int lane = threadIdx.x & 31;
    const size_t rows = (size_t)a.T * a.Hq, r = (size_t)t * a.Hq + h;
    float mx = -INFINITY;
    for (int s = lane; s < a.S; s += 32) mx = fmaxf(mx, a.mpart[s * rows + r]);
    for (int off = 16; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
    const float base = attn_base(mx);
    float den = 0.0f;
    for (int s = lane; s < a.S; s += 32) {
        const float ws = exp2f(a.mpart[s * rows + r] - base); // 0 for a split that saw no key
        w[s] = ws;
        den += ws * a.lpart[s * rows + r];
    }
    for (int off = 16; off > 0; off >>= 1) den += __shfl_xor_sync(0xffffffffu, den, off);
    if (lane == 0) *inv = den > 0.0f ? 1.0f / den : 0.0f;
}

// Step 3: ctx (R) = inv · Σ_s w[s] · opart_s of row (t, h). Called by every thread of the block.
__device__ __forceinline__ void merge_ctx(const merge_args &a, int t, int h, const float *w,
                                          float inv, float *ctx, float *red) {
    const int tid = threadIdx.x, ncg = a.R / 4, SG = kMwThreads / ncg;
    const int sg = tid / ncg, cg = tid % ncg;
    const size_t rows = (size_t)a.T * a.Hq, r = (size_t)t * a.Hq + h;
    float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if (sg < SG) {
        for (int s0 = sg; s0 < a.S; s0 += SG * kMwBatch) {
            float4 x[kMwBatch];
#pragma unroll
            for (int b = 0; b < kMwBatch; b++) {
                const int s = s0 + b * SG;
                x[b] = s < a.S ? *reinterpret_cast<const float4 *>(a.opart + (s * rows + r) * a.R +
                                                                    4 * cg)
                               : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            }
#pragma unroll
            for (int b = 0; b < kMwBatch; b++) {
                const int s = s0 + b * SG;
                const float ws = s < a.S ? w[s] : 0.0f;
                acc.x = fmaf(ws, x[b].x, acc.x);
                acc.y = fmaf(ws, x[b].y, acc.y);
                acc.z = fmaf(ws, x[b].z, acc.z);
                acc.w = fmaf(ws, x[b].w, acc.w);
            }
        }
        *reinterpret_cast<float4 *>(red + (size_t)sg * a.R + 4 * cg) = acc;
    }
    __syncthreads();
    for (int c = tid; c < a.R; c += kMwThreads) {
        float sum = 0.0f;
        for (int g = 0; g < SG; g++) sum += red[(size_t)g * a.R + c];
        ctx[c] = sum * inv;
    }
    __syncthreads(); // ctx complete; red free for the next token
}

// CPL: 16-byte chunks of a Wuv row per lane (R <= 256·CPL).
template <int CPL>
__global__ void __launch_bounds__(kMwThreads) k_mla_merge_wuv(const merge_args a) {
    extern __shared__ __align__(16) float sm[];
    float *w = sm;                          // (T, S) split weights
    float *inv = w + round4((size_t)a.T * a.S); // (T)
    float *ctx = inv + round4(a.T);             // (T, R)
    float *red = ctx + (size_t)a.T * a.R;   // (SG, R) <= kMwThreads·4
    const int slices = (a.dvo + kWuvRows - 1) / kWuvRows;
    const int h = blockIdx.x / slices, i0 = (blockIdx.x % slices) * kWuvRows;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    // 1. this lane's Wuv chunks: rows i0 + kRowsPerWarp·warp + k, chunks lane + 32·c
    uint4 wr[kRowsPerWarp][CPL];
    const bf16 *wh = a.wuv + (int64_t)h * a.sw;
#pragma unroll
    for (int k = 0; k < kRowsPerWarp; k++) {
        const int i = i0 + kRowsPerWarp * warp + k;
#pragma unroll
        for (int c = 0; c < CPL; c++) {
            const int col = 8 * (lane + 32 * c);
            wr[k][c] = i < a.dvo && col < a.R ? ld_weights16(wh + (int64_t)i * a.R + col)
                                              : make_uint4(0, 0, 0, 0);
        }
    }
    // 2. split weights of every token (warp t)
    if (warp < a.T) merge_weights(a, warp, h, w + (size_t)warp * a.S, inv + warp);
    __syncthreads();
    // 3. ctx of every token
    for (int t = 0; t < a.T; t++) merge_ctx(a, t, h, w + (size_t)t * a.S, inv[t], ctx + (size_t)t * a.R, red);
    // 4. o = Wuv_h · ctx for this warp's rows
    for (int t = 0; t < a.T; t++) {
        const float *ct = ctx + (size_t)t * a.R;
#pragma unroll
        for (int k = 0; k < kRowsPerWarp; k++) {
            float sum = 0.0f;
#pragma unroll
            for (int c = 0; c < CPL; c++) {
                const int col = 8 * (lane + 32 * c);
                if (col >= a.R) break;
                const float4 x0 = *reinterpret_cast<const float4 *>(ct + col);
                const float4 x1 = *reinterpret_cast<const float4 *>(ct + col + 4);
                const uint4 v = wr[k][c];
                sum = fmaf(x0.x, __uint_as_float(v.x << 16), sum);
                sum = fmaf(x0.y, __uint_as_float(v.x & 0xffff0000u), sum);
                sum = fmaf(x0.z, __uint_as_float(v.y << 16), sum);
                sum = fmaf(x0.w, __uint_as_float(v.y & 0xffff0000u), sum);
                sum = fmaf(x1.x, __uint_as_float(v.z << 16), sum);
                sum = fmaf(x1.y, __uint_as_float(v.z & 0xffff0000u), sum);
                sum = fmaf(x1.z, __uint_as_float(v.w << 16), sum);
                sum = fmaf(x1.w, __uint_as_float(v.w & 0xffff0000u), sum);
            }
            sum = warp_sum(sum);
            const int i = i0 + kRowsPerWarp * warp + k;
            if (lane == 0 && i < a.dvo)
                a.o[((size_t)t * a.Hq + h) * a.dvo + i] = __float2bfloat16_rn(sum);
        }
    }
}

// 1 when the fused launches take the call (besides kernel E's own conditions).
int merge_fits(const ae_attn_args *a, ae_ptr o, ae_ptr q, ae_ptr kv, ae_ptr wuv, int64_t sw,
               int dvo) {
    const int bf = o.dtype == AE_DT_BF16 && q.dtype == AE_DT_BF16 && kv.dtype == AE_DT_BF16 &&
                   wuv.dtype == AE_DT_BF16;
    return bf && a->Hkv == 1 && !a->sinks.data && !a->lse.data && a->T <= kMwMaxT &&
           a->T * a->Hq <= 64 && a->dv % 8 == 0 && a->dv <= 1024 && dvo > 0 && sw % 8 == 0 &&
           a->k_stride == a->v_stride && a->k_stride % 8 == 0 && cuda_aligned16(q.data) &&
           cuda_aligned16(kv.data) && cuda_aligned16(wuv.data);
}

// Queues the merge of kernel E's partials p into o; 0 when its shared memory does not fit.
int merge_launch(const ae_backend *be, const attn_params *p, ae_ptr o, ae_ptr wuv, int64_t sw,
                 int dvo) {
    merge_args m = {p->opart, p->mpart, p->lpart, (const bf16 *)wuv.data, (bf16 *)o.data,
                    sw, p->splits, p->T, p->Hq, p->dv, dvo};
    const size_t smem = merge_smem(m.T, m.S, m.R);
    const unsigned blocks = (unsigned)(m.Hq * ((dvo + kWuvRows - 1) / kWuvRows));
#define MERGE_CASE(CPL)                                                                           \
    do {                                                                                          \
        if (!attn_set_smem(be, (const void *)k_mla_merge_wuv<CPL>, smem)) return 0;               \
        k_mla_merge_wuv<CPL><<<blocks, kMwThreads, smem, stream_of(be)>>>(m);                     \
    } while (0)
    if (m.R <= 256) MERGE_CASE(1);
    else if (m.R <= 512) MERGE_CASE(2);
    else MERGE_CASE(4);
#undef MERGE_CASE
    cuda_check(be, cudaGetLastError(), "mla_decode_attend");
    return 1;
}

// The unfused form (ae_mla_attend_ops) with a bf16 ctx (T, Hq, R) as the model's unfused path.
void attend_unfused(const ae_backend *be, const ae_attn_args *a, ae_ptr o, ae_ptr q, ae_ptr kv,
                    ae_ptr wuv, int64_t sw, int dvo) {
    const size_t n = (size_t)a->T * a->Hq * a->dv;
    void *buf = cuda_tmp_alloc(be, n * sizeof(bf16), "mla_decode_attend");
    if (!buf) return;
    ae_mla_attend_ops(be, a, o, ae_ptr_make(buf, AE_DT_BF16), q, kv, wuv, sw, dvo);
    cuda_tmp_free(be, buf);
}

} // namespace

void ae_cuda_mla_decode_attend(const ae_backend *be, const ae_attn_args *a, ae_ptr o, ae_ptr q,
                               ae_ptr kv, ae_ptr wuv, int64_t sw, int dvo) {
    if (cuda_failed(be)) return;
    cuda_need(wuv, AE_M_BF16, "mla_decode_attend", "wuv");
    if (a->T <= 0 || a->Hq <= 0 || dvo <= 0) return;
    if (merge_fits(a, o, q, kv, wuv, sw, dvo)) {
        attn_params p, parts;
        attn_params_init(&p, a, ae_ptr_null(), q, kv, kv);
        if (attn_mla_dec_parts(be, &p, &parts)) {
            if (parts.opart && !merge_launch(be, &parts, o, wuv, sw, dvo)) {
                fprintf(stderr, "attnedit: internal error: mla_decode_attend: the merge of %d "
                                "splits x %d tokens x %d values does not fit shared memory\n",
                        parts.splits, parts.T, parts.dv);
                abort();
            }
            if (parts.opart) cuda_tmp_free(be, parts.opart);
            return;
        }
    }
    attend_unfused(be, a, o, q, kv, wuv, sw, dvo);
}
