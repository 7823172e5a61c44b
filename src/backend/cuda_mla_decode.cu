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
// From MQ_MIN_SPLITS splits k_mla_merge_q (below) merges instead, by latent parts: every partial
// read once, the parts' partial outputs added by ticket.
// Other calls (more rows, sinks, fp32, AE_CUDA_MLA_KERNEL=old): attention, then the batched gemm.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda_attention.h"
#include "backend/cuda_decode_core.h"
#include "backend/cuda_gemv_core.h"
#include "backend/cuda_mla.h"

#ifndef MLA_MERGE_Q_DEFAULT_ON
#define MLA_MERGE_Q_DEFAULT_ON 1 // AE_MLA_MERGE_Q unset: k_mla_merge_q where it fits (1) or not (0)
#endif
#define MQ_SLOTS 8       // backends with their own ticket counters
#define MQ_TICKETS 1024  // counters per slot: one per query head
#define MQ_MIN_SPLITS 64 // fewer splits: k_mla_merge_wuv, faster there (1K keys, 16 splits: 22.0 vs 22.9 us)

// Tickets of k_mla_merge_q: slot i of backend i (mq_tickets); always 0 between launches.
__device__ unsigned int g_mq_tickets[MQ_SLOTS * MQ_TICKETS];

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

// Step 3: ctx (ncols) = inv · Σ_s w[s] · opart_s[c0 .. c0 + ncols) of row (t, h), red (SG, ncols)
// with SG = kMwThreads / (ncols / 4) split groups. Called by every thread of the block.
// k_mla_merge_wuv: the whole latent (c0 0, ncols R); k_mla_merge_q: its part (c0, kMqCols).
__device__ __forceinline__ void merge_ctx(const merge_args &a, int t, int h, const float *w,
                                          float inv, int c0, int ncols, float *ctx, float *red) {
    const int tid = threadIdx.x, ncg = ncols / 4, SG = kMwThreads / ncg;
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
                                                                    c0 + 4 * cg)
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
        *reinterpret_cast<float4 *>(red + (size_t)sg * ncols + 4 * cg) = acc;
    }
    __syncthreads();
    for (int c = tid; c < ncols; c += kMwThreads) {
        float sum = 0.0f;
        for (int g = 0; g < SG; g++) sum += red[(size_t)g * ncols + c];
        ctx[c] = sum * inv;
    }
    __syncthreads(); // ctx complete; red free for the next token
}

// sum + Σ_j x[j] · v[j] over 8 columns: x = (x0, x1) fp32, v 8 bf16 (uint4, two a word, the lower
// column in the low half), eight fmaf in column order. With sum = -0.0f the first fmaf is exactly
// the product x0.x · v[0] (a + (-0) == a for every float a, signed zeros included).
__device__ __forceinline__ float dot8(const float4 &x0, const float4 &x1, const uint4 &v,
                                      float sum) {
    sum = fmaf(x0.x, __uint_as_float(v.x << 16), sum);
    sum = fmaf(x0.y, __uint_as_float(v.x & 0xffff0000u), sum);
    sum = fmaf(x0.z, __uint_as_float(v.y << 16), sum);
    sum = fmaf(x0.w, __uint_as_float(v.y & 0xffff0000u), sum);
    sum = fmaf(x1.x, __uint_as_float(v.z << 16), sum);
    sum = fmaf(x1.y, __uint_as_float(v.z & 0xffff0000u), sum);
    sum = fmaf(x1.z, __uint_as_float(v.w << 16), sum);
    return fmaf(x1.w, __uint_as_float(v.w & 0xffff0000u), sum);
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
    for (int t = 0; t < a.T; t++)
        merge_ctx(a, t, h, w + (size_t)t * a.S, inv[t], 0, a.R, ctx + (size_t)t * a.R, red);
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
                sum = dot8(x0, x1, wr[k][c], sum);
            }
            sum = warp_sum(sum);
            const int i = i0 + kRowsPerWarp * warp + k;
            if (lane == 0 && i < a.dvo)
                a.o[((size_t)t * a.Hq + h) * a.dvo + i] = __float2bfloat16_rn(sum);
        }
    }
}

// ---- the merge by latent quarters (k_mla_merge_q) -----------------------------------------------
// k_mla_merge_wuv's blocks each merge their head's whole latent (R values of every split) for 32
// of its Wuv rows: a head's partials are read dvo / 32 times (4 at dv 128: 16.8 MB of L2 reads a
// layer at 4K keys, most of the launch). Here block (head h, part q) merges only latent columns
// q·128 .. q·128 + 127 (every partial value is read once) and multiplies them by the same columns
// of all dvo rows of Wuv_h, a partial o; the head's P = R / 128 partial o meet by ticket:
//   1. its Wuv values first (rows 16k + 2w + lane/16, columns q·128 + 8·(lane % 16) ..: one
//      16-byte load per row, k < dvo / 16 <= 8, in flight while the merge runs);
//   2. split weights and 1 / Σ weight·l of row (t, h) by warp t (merge_weights, as k_mla_merge_wuv);
//   3. ctx[t] (128 fp32, shared memory) = Σ_s weight_s · opart_s (merge_ctx on the part's columns):
//      thread (sg, cg) = (tid / 32, tid % 32) sums splits sg, sg + 8, .. for columns 4·cg .. (8
//      loads in flight), the 8 split groups added in sg order;
//   4. a row's partial Σ_c ctx[t, c] · Wuv_h[i, c] over the part's columns: 16 lanes, a butterfly;
//      into scratch (T, Hq, P, dvo) fp32;
//   5. a ticket on head h's counter (atomicAdd after a fence); the block drawing ticket P − 1 adds
//      the P partials in part order and writes o (bf16), then resets the counter.
// Deterministic (every sum in a fixed order; the ticket only picks which block adds). Takes calls
// of at least MQ_MIN_SPLITS splits with R % 128 == 0, dvo <= 128, Hq <= MQ_TICKETS; the others
// keep k_mla_merge_wuv. H200, bench_attn --decode-mla-fused (one layer of the Qwen3-8B MLA
// student, absorb + E + merge), AE_MLA_MERGE_Q=0 -> 1, two runs: 4K keys (64 splits) 24.92 /
// 25.07 -> 24.34 / 23.88 us, 32K (128 splits) 43.77 / 43.94 -> 41.35 / 40.99; 1K (16 splits)
// 21.96 / 22.07 -> 23.03 / 22.70 (hence the floor).
constexpr int kMqCols = 128, kMqRowsPass = 16, kMqPasses = 8; // columns a part, rows a pass
static_assert(kMwThreads == 8 * 32 && kMqRowsPass == 2 * kMwWarps, "8 split groups of 32 lanes");

struct mq_args {
    merge_args m;
    float *part;      // (T, Hq, P, dvo) fp32: the parts' partial o
    unsigned *ticket; // this backend's counters, one per head
};

__global__ void __launch_bounds__(kMwThreads) k_mla_merge_q(const mq_args q) {
    const merge_args &a = q.m;
    extern __shared__ __align__(16) float sm[];
    const int P = a.R / kMqCols;
    float *w = sm;                              // (T, S) split weights
    float *inv = w + round4((size_t)a.T * a.S); // (T)
    float *ctx = inv + round4(a.T);             // (T, kMqCols)
    float *red = ctx + (size_t)a.T * kMqCols;   // (8, kMqCols)
    __shared__ int s_last;
    const int h = blockIdx.x / P, part = blockIdx.x % P, c0 = part * kMqCols;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int lr = lane >> 4, lc = lane & 15; // row of the pair, 8-column chunk
    // 1. Wuv_h rows 16k + 2·warp + lr, columns c0 + 8·lc ..
    uint4 wr[kMqPasses];
    const bf16 *wh = a.wuv + (int64_t)h * a.sw + c0 + 8 * lc;
#pragma unroll
    for (int k = 0; k < kMqPasses; k++) {
        const int i = kMqRowsPass * k + 2 * warp + lr;
        wr[k] = i < a.dvo ? ld_weights16(wh + (int64_t)i * a.R) : make_uint4(0, 0, 0, 0);
    }
    // 2. split weights of every token (warp t)
    if (warp < a.T) merge_weights(a, warp, h, w + (size_t)warp * a.S, inv + warp);
    __syncthreads();
    // 3. ctx of every token over this part's columns
    for (int t = 0; t < a.T; t++)
        merge_ctx(a, t, h, w + (size_t)t * a.S, inv[t], c0, kMqCols, ctx + (size_t)t * kMqCols,
                  red);
    // 4. partial o of this part's columns, every row and token
    for (int t = 0; t < a.T; t++) {
        const float *ct = ctx + (size_t)t * kMqCols + 8 * lc;
        const float4 x0 = *reinterpret_cast<const float4 *>(ct);
        const float4 x1 = *reinterpret_cast<const float4 *>(ct + 4);
#pragma unroll
        for (int k = 0; k < kMqPasses; k++) {
            float sum = dot8(x0, x1, wr[k], -0.0f); // starts at the product
#pragma unroll
            for (int off = 8; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
            const int i = kMqRowsPass * k + 2 * warp + lr;
            if (lc == 0 && i < a.dvo)
                q.part[(((size_t)t * a.Hq + h) * P + part) * a.dvo + i] = sum;
        }
    }
    // 5. the head's parts meet: the last block adds them in part order
    __threadfence();
    __syncthreads();
    if (tid == 0) s_last = atomicAdd(q.ticket + h, 1u) == (unsigned)(P - 1);
    __syncthreads();
    if (!s_last) return;
    __threadfence(); // the other parts' partials are read after their tickets
    for (int e = tid; e < a.T * a.dvo; e += kMwThreads) {
        const int t = e / a.dvo, i = e % a.dvo;
        const float *src = q.part + ((size_t)t * a.Hq + h) * P * a.dvo + i;
        float sum = __ldcg(src);
        for (int pp = 1; pp < P; pp++) sum += __ldcg(src + (size_t)pp * a.dvo);
        a.o[((size_t)t * a.Hq + h) * a.dvo + i] = __float2bfloat16_rn(sum);
    }
    if (tid == 0) q.ticket[h] = 0u; // all P parts of this head counted: ready again
}

// This backend's slot of g_mq_tickets (dec_ticket_slot: first come; NULL with the error kept).
static unsigned *mq_tickets(const ae_backend *be) {
    return dec_ticket_slot<MQ_SLOTS, MQ_TICKETS>(be, (const void *)g_mq_tickets,
                                                 "mla_decode_attend (merge tickets)");
}

// Queues k_mla_merge_q for the merge of p into o: 1 when it did (or kept an error), 0 when the
// shape or AE_MLA_MERGE_Q leaves it to k_mla_merge_wuv.
static int merge_q_launch(const ae_backend *be, const attn_params *p, ae_ptr o, ae_ptr wuv,
                          int64_t sw, int dvo) {
    const char *env = getenv("AE_MLA_MERGE_Q");
    if (env && *env ? strcmp(env, "0") == 0 : !MLA_MERGE_Q_DEFAULT_ON) return 0;
    if (p->splits < MQ_MIN_SPLITS || p->dv % kMqCols != 0 || dvo > kMqRowsPass * kMqPasses ||
        p->Hq > MQ_TICKETS)
        return 0;
    const int P = p->dv / kMqCols;
    const size_t smem = sizeof(float) * (round4((size_t)p->T * p->splits) + round4(p->T) +
                                         (size_t)p->T * kMqCols + 8 * kMqCols);
    if (!attn_set_smem(be, (const void *)k_mla_merge_q, smem)) return 0;
    unsigned *tickets = mq_tickets(be);
    if (!tickets) return 1;
    const size_t np = (size_t)p->T * p->Hq * P * dvo;
    float *part = (float *)cuda_tmp_alloc(be, np * sizeof(float), "mla_decode_attend");
    if (!part) return 1;
    mq_args q = {{p->opart, p->mpart, p->lpart, (const bf16 *)wuv.data, (bf16 *)o.data, sw,
                  p->splits, p->T, p->Hq, p->dv, dvo},
                 part, tickets};
    k_mla_merge_q<<<(unsigned)(p->Hq * P), kMwThreads, smem, stream_of(be)>>>(q);
    cuda_check(be, cudaGetLastError(), "mla_decode_attend");
    attn_mla_note_merge("k_mla_merge_q");
    cuda_tmp_free(be, part);
    return 1;
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
    if (merge_q_launch(be, p, o, wuv, sw, dvo)) return 1;
    merge_args m = {p->opart, p->mpart, p->lpart, (const bf16 *)wuv.data, (bf16 *)o.data,
                    sw, p->splits, p->T, p->Hq, p->dv, dvo};
    const size_t smem = merge_smem(m.T, m.S, m.R);
    const unsigned blocks = (unsigned)(m.Hq * ((dvo + kWuvRows - 1) / kWuvRows));
#define MERGE_CASE(CPL)                                                                           \
    do {                                                                                          \
        if (!attn_set_smem(be, (const void *)k_mla_merge_wuv<CPL>, smem)) return 0;               \
        k_mla_merge_wuv<CPL><<<blocks, kMwThreads, smem, stream_of(be)>>>(m);                     \
    } while (0)
    attn_mla_note_merge("k_mla_merge_wuv");
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
