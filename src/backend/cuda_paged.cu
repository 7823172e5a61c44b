// Paged KV cache ops on CUDA (semantics in ae_paged_attn_args, backend/ops.h; the fp32 reference
// is backend/cpu_paged.c).
//
// attention_paged: prefill runs (ae_paged_run, at least paged_tc_min() rows) and decode rows
// over long keys (paged_tc_keys()) on the tensor-core attention kernels F (Hopper wgmma: prefill
// chunks at d = 128 or 192/128, when attn_wgmma_run takes them), B (GQA/GateSWA) and D/E
// (absorbed MLA) of cuda_attention*.cu in their paged addressing mode (paged_run_tc, below);
// all other rows (short decode rows) on k_paged_decode (cuda_paged_decode.cu: bf16, dk = dv = 64
// or 128; every warp computing, the split merge folded into the launch) or, for other shapes
// (absorbed MLA 576/512, odd dims, fp32) and with AE_PAGED_DECODE_FOLD=0, on k_paged_attn.
//
//   k_paged_store: one block per row; threads copy the row's cols values (converting F32 <-> BF16
//     when the dtypes differ) into its page slot. k_paged_gather: the reverse for positions
//     0..n-1 of one sequence (one block per position, its page from the block-table row).
//   k_paged_gather_kv16: a prefill run's visible K and V rows into one contiguous temporary
//     (AE_PAGED_F_GATHER=1, paged_run_gathered), one block per (position, K or V), 16-byte
//     copies.
//   k_paged_attn: one block of 4 warps per (query row, group of 4 consecutive q heads, key
//     chunk); warp w serves head 4·group + w (heads of one GQA group / all MLA heads read the
//     same key rows, which then come from L1). A warp walks its chunk in tiles of 32 keys:
//       scores: 8 lanes per key, 4 keys per load instruction (each lane reads 8 consecutive
//         values with 16-byte loads: whole 128-byte lines per key, coalesced), the 8 keys of a
//         lane group in flight at once; partial dot products reduced over the 8 lanes, then
//         gathered so that lane t holds the score of key t of the tile;
//       one warp max and one warp sum per tile (online softmax: running max m, sum l);
//       values: lane owns output columns (4·lane + 128·i + e, or lane + 32·i in the scalar
//         layout; dv <= 512), and for each key of the tile (its weight and row broadcast by
//         shuffles) adds p·v[col] from coalesced row loads, 4 keys in flight.
//     With one chunk (splits == 1) the warp adds the sink and writes its output row; otherwise it
//     writes its chunk's partial state (m, l, unnormalised acc[dv]) to scratch.
//   k_paged_combine: split-KV (FlashDecoding) merge, one block per (row, head): the chunks'
//     partials and the sink give the normalised row. A chunk that saw no key has l = 0 and
//     weight 0 (never exp(-inf - -inf)).
// Split-KV is used when the (row, head group) blocks are too few to fill the GPU and the rows
// may be long (the host bounds the key count by max_blocks·page_size and the window: it cannot
// read pos); each row's key range is cut into `splits` chunks of equal, 32-aligned size, so rows
// shorter than that leave trailing chunks empty.
// Vector loads (VEC) need dk % 8 == 0, dv % 4 == 0, strides and pointers 16-byte aligned;
// other shapes take the scalar path (same kernel, width 1).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda.h"
#include "backend/cuda_attention.h"

// cuda_paged_decode.cu: the decode rows on k_paged_decode (kernel G's design over pages, the
// split merge in the same launch); 0 when it does not take them (AE_PAGED_DECODE_FOLD=0, shapes).
int paged_decode_run(const ae_backend *be, const ae_paged_attn_args *a, int r0, int n, ae_ptr out,
                     ae_ptr q, ae_ptr k, ae_ptr v, int *splits);

// What the last attention_paged call ran for its rows outside the tensor-core runs
// (ae_cuda_paged_last).
static struct {
    const char *kernel; // null: every row went to the tensor-core kernels
    int splits;
} g_paged_last;

namespace {

constexpr int kWarps = 4;      // heads per block
constexpr int kMaxCols = 16;   // dv <= 32 * kMaxCols
constexpr int kMaxSplits = 32; // key chunks per row
constexpr int kMinChunk = 64;  // keys per chunk at least (when splitting)

template <typename TD, typename TS>
__device__ __forceinline__ void copy_row(TD *d, const TS *x, int cols) {
    for (int c = threadIdx.x; c < cols; c += blockDim.x) stf(d + c, ldf(x + c));
}

template <typename TD, typename TS>
__global__ void k_paged_store(TD *dst, int64_t page_stride, int page_size, int64_t ldd,
                              const TS *src, int64_t lds, const int32_t *slot, int cols) {
    int r = blockIdx.x, s = slot[r];
    if (s < 0) return;
    TD *d = dst + (int64_t)(s / page_size) * page_stride + (int64_t)(s % page_size) * ldd;
    copy_row(d, src + (int64_t)r * lds, cols);
}

// One block per position j: row j of dst from its page (table[j / page_size]).
template <typename TD, typename TS>
__global__ void k_paged_gather(TD *dst, int64_t ldd, const TS *src, int64_t page_stride,
                               int page_size, int64_t lds, const int32_t *table, int cols) {
    const int j = blockIdx.x;
    const TS *x = src + (int64_t)table[j / page_size] * page_stride + (int64_t)(j % page_size) * lds;
    copy_row(dst + (int64_t)j * ldd, x, cols);
}

// Key rows j0 .. j0 + n − 1 of one sequence into a contiguous buffer, 16-byte chunks (bf16 rows
// of the tensor-core path: pointers, strides and the page stride in whole 16-byte pieces,
// paged_tc_ok): block (r, y) copies row j0 + r of K (y = 0: kcols values into dst + r·kcols)
// or of V (y = 1: vcols values into dst + n·kcols + r·vcols), from page table[j / page_size].
__global__ void k_paged_gather_kv16(uint4 *dst, const bf16 *k, const bf16 *v, int64_t page_stride,
                                    int page_size, int k_stride, int v_stride,
                                    const int32_t *table, int j0, int n, int kcols, int vcols) {
    const int r = blockIdx.x, j = j0 + r, isv = blockIdx.y;
    const int cols = isv ? vcols : kcols;
    const bf16 *x = (isv ? v : k) + (int64_t)table[j / page_size] * page_stride +
                    (int64_t)(j % page_size) * (isv ? v_stride : k_stride);
    uint4 *d = dst + ((isv ? (size_t)n * kcols : 0) + (size_t)r * cols) / 8;
    for (int c = threadIdx.x; c < cols / 8; c += blockDim.x)
        d[c] = reinterpret_cast<const uint4 *>(x)[c];
}

struct PagedParams {
    int N, Hq, G, dk, dv, page_size, max_blocks, k_stride, v_stride, window;
    int64_t page_stride;
    float scale;
    const float *sinks;
    const int32_t *seq, *pos, *table;
    int splits;                   // key chunks per row (grid y); 1: write out directly
    float *opart, *mpart, *lpart; // splits > 1: (splits, N·Hq, dv), (splits, N·Hq) x 2
};

// W consecutive values as fp32 (W = 8: 16-byte aligned; W = 1: any).
__device__ __forceinline__ void ld8(const float *p, float (&v)[8]) {
    float4 a = reinterpret_cast<const float4 *>(p)[0], b = reinterpret_cast<const float4 *>(p)[1];
    v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
}
__device__ __forceinline__ void ld8(const bf16 *p, float (&v)[8]) {
    uint4 q = *reinterpret_cast<const uint4 *>(p); // little-endian: element 0 in the low half
    v[0] = __uint_as_float(q.x << 16), v[1] = __uint_as_float(q.x & 0xffff0000u);
    v[2] = __uint_as_float(q.y << 16), v[3] = __uint_as_float(q.y & 0xffff0000u);
    v[4] = __uint_as_float(q.z << 16), v[5] = __uint_as_float(q.z & 0xffff0000u);
    v[6] = __uint_as_float(q.w << 16), v[7] = __uint_as_float(q.w & 0xffff0000u);
}
template <int W, typename T> __device__ __forceinline__ void ldw(const T *p, float (&v)[W]) {
    if constexpr (W == 8) ld8(p, v);
    else v[0] = ldf(p);
}

// Scores of the 32 keys of a tile, lane t: key t (-inf when t >= nk). koff: this lane's key row
// offset (key t = lane); qs: the head's q (dk, fp32, 32-byte aligned when W == 8).
template <int W, typename T>
__device__ __forceinline__ float tile_scores(const float *qs, const T *k, int64_t koff, int nk,
                                             int dk, float scale, int lane) {
    const int g = lane >> 3, sl = lane & 7;
    const T *kr[8];
    float part[8];
#pragma unroll
    for (int it = 0; it < 8; it++) {
        kr[it] = k + __shfl_sync(0xffffffffu, (long long)koff, it * 4 + g);
        part[it] = 0.0f;
    }
    for (int d = sl * W; d < dk; d += 8 * W) {
        float qv[W];
        if constexpr (W == 8) {
            float4 a = reinterpret_cast<const float4 *>(qs + d)[0];
            float4 b = reinterpret_cast<const float4 *>(qs + d)[1];
            qv[0] = a.x, qv[1] = a.y, qv[2] = a.z, qv[3] = a.w;
            qv[4] = b.x, qv[5] = b.y, qv[6] = b.z, qv[7] = b.w;
        } else {
            qv[0] = qs[d];
        }
#pragma unroll
        for (int it = 0; it < 8; it++) {
            if (it * 4 + g < nk) {
                float x[W];
                ldw<W>(kr[it] + d, x);
#pragma unroll
                for (int e = 0; e < W; e++) part[it] += qv[e] * x[e];
            }
        }
    }
    float s = -INFINITY;
#pragma unroll
    for (int it = 0; it < 8; it++) {
        float x = part[it];
        x += __shfl_xor_sync(0xffffffffu, x, 4);
        x += __shfl_xor_sync(0xffffffffu, x, 2);
        x += __shfl_xor_sync(0xffffffffu, x, 1);
        x = __shfl_sync(0xffffffffu, x, (lane & 3) * 8); // key it·4 + (lane & 3)
        if ((lane >> 2) == it) s = x;
    }
    return lane < nk ? s * scale : -INFINITY;
}

// acc[col] += Σ_t p_t · v_t[col] over the nk keys of a tile (p: lane t holds key t's weight,
// voff: its value row offset). Columns of the lane: 32·V·i + V·lane + e.
template <int V, typename T>
__device__ __forceinline__ void tile_values(float (&acc)[kMaxCols], const T *v, int64_t voff,
                                            float p, int nk, int dv, int lane) {
    for (int t0 = 0; t0 < nk; t0 += 4) {
        float pv[4];
        const T *vr[4];
#pragma unroll
        for (int u = 0; u < 4; u++) {
            pv[u] = __shfl_sync(0xffffffffu, p, (t0 + u) & 31);
            vr[u] = v + __shfl_sync(0xffffffffu, (long long)voff, (t0 + u) & 31);
        }
#pragma unroll
        for (int u = 0; u < 4; u++) {
            if (t0 + u >= nk) break;
#pragma unroll
            for (int i = 0; i < kMaxCols / V; i++) {
                int col = 32 * V * i + V * lane;
                if (col < dv) {
                    float x[V];
                    ldv<V>(vr[u] + col, x);
#pragma unroll
                    for (int e = 0; e < V; e++) acc[i * V + e] += pv[u] * x[e];
                }
            }
        }
    }
}

template <typename T, bool VEC>
__global__ void __launch_bounds__(32 * kWarps) k_paged_attn(PagedParams p, T *out, const T *q,
                                                             const T *k, const T *v) {
    constexpr int W = VEC ? 8 : 1, V = VEC ? 4 : 1;
    extern __shared__ __align__(16) float qs[]; // (kWarps, dk)
    const int HG = (p.Hq + kWarps - 1) / kWarps;
    const int r = blockIdx.x / HG, h0 = (blockIdx.x % HG) * kWarps, chunk = blockIdx.y;
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, h = h0 + w;
    const int nh = p.Hq - h0 < kWarps ? p.Hq - h0 : kWarps; // heads of this block
    const T *qv = q + ((int64_t)r * p.Hq + h0) * p.dk;     // nh consecutive head rows
    for (int d = threadIdx.x; d < nh * p.dk; d += blockDim.x) qs[d] = ldf(qv + d);
    __syncthreads();
    if (h >= p.Hq) return;
    const float *qh = qs + w * p.dk;
    const int kh = h / p.G;
    const int32_t *tab = p.table + (int64_t)p.seq[r] * p.max_blocks;
    const int qpos = p.pos[r];
    const int lo = attn_lo(qpos, p.window), n = qpos - lo + 1;
    // This chunk's keys [c0, c1): chunks of cs keys (a multiple of 32), trailing ones empty.
    int cs = (n + p.splits - 1) / p.splits;
    cs = (cs + 31) & ~31;
    const int64_t c0l = (int64_t)lo + (int64_t)chunk * cs;
    const int c0 = c0l > qpos + 1 ? qpos + 1 : (int)c0l;
    const int c1 = c0 + cs > qpos + 1 ? qpos + 1 : c0 + cs;
    float m = -INFINITY, l = 0.0f, acc[kMaxCols];
#pragma unroll
    for (int i = 0; i < kMaxCols; i++) acc[i] = 0.0f;
    for (int j0 = c0; j0 < c1; j0 += 32) {
        const int nk = c1 - j0 < 32 ? c1 - j0 : 32;
        const int j = lane < nk ? j0 + lane : j0; // a visible key for every lane's addresses
        const int64_t base = (int64_t)tab[j / p.page_size] * p.page_stride;
        const int64_t row = j % p.page_size;
        const int64_t koff = base + row * p.k_stride + (int64_t)kh * p.dk;
        const int64_t voff = base + row * p.v_stride + (int64_t)kh * p.dv;
        const float s = tile_scores<W>(qh, k, koff, nk, p.dk, p.scale, lane);
        const float mn = fmaxf(m, warp_max(s)); // finite: key j0 is visible
        const float corr = expf(m - mn);        // 0 on the first tile (m = -inf)
        const float pj = lane < nk ? expf(s - mn) : 0.0f;
        l = l * corr + warp_sum(pj);
#pragma unroll
        for (int i = 0; i < kMaxCols; i++) acc[i] *= corr;
        m = mn;
        tile_values<V>(acc, v, voff, pj, nk, p.dv, lane);
    }
    const int64_t orow = (int64_t)r * p.Hq + h;
    if (p.splits == 1) {
        const float sink = p.sinks ? p.sinks[h] : -INFINITY;
        const float M = fmaxf(m, sink);
        const float wk = l > 0.0f ? expf(m - M) : 0.0f;
        const float L = l * wk + (p.sinks ? expf(sink - M) : 0.0f);
        const float f = L > 0.0f ? wk / L : 0.0f;
        T *o = out + orow * p.dv;
#pragma unroll
        for (int i = 0; i < kMaxCols / V; i++) {
            int col = 32 * V * i + V * lane;
            if (col < p.dv) {
                float x[V];
#pragma unroll
                for (int e = 0; e < V; e++) x[e] = acc[i * V + e] * f;
                stv<V>(o + col, x);
            }
        }
    } else {
        const int64_t prow = (int64_t)chunk * p.N * p.Hq + orow;
        float *o = p.opart + prow * p.dv;
#pragma unroll
        for (int i = 0; i < kMaxCols / V; i++) {
            int col = 32 * V * i + V * lane;
            if (col < p.dv) {
#pragma unroll
                for (int e = 0; e < V; e++) o[col + e] = acc[i * V + e];
            }
        }
        if (lane == 0) {
            p.mpart[prow] = m; // -inf and l = 0 for an empty chunk
            p.lpart[prow] = l;
        }
    }
}

// One block per output row (r·Hq + h): out = (Σ_c w_c acc_c) / (Σ_c w_c l_c + e^(sink − M)),
// w_c = e^(m_c − M) for chunks with l_c > 0 (else 0), M = max(sink, m_c of those chunks).
template <typename T>
__global__ void k_paged_combine(PagedParams p, T *out) {
    __shared__ float wts[kMaxSplits];
    const int64_t row = blockIdx.x, R = (int64_t)p.N * p.Hq;
    const int h = (int)(row % p.Hq);
    if (threadIdx.x < 32) {
        const int c = threadIdx.x;
        const float mc = c < p.splits ? p.mpart[c * R + row] : -INFINITY;
        const float lc = c < p.splits ? p.lpart[c * R + row] : 0.0f;
        const float sink = p.sinks ? p.sinks[h] : -INFINITY;
        const float M = fmaxf(warp_max(lc > 0.0f ? mc : -INFINITY), sink);
        const float wc = lc > 0.0f ? expf(mc - M) : 0.0f;
        const float L = warp_sum(lc * wc) + (p.sinks ? expf(sink - M) : 0.0f);
        if (c < p.splits) wts[c] = L > 0.0f ? wc / L : 0.0f;
    }
    __syncthreads();
    for (int d = threadIdx.x; d < p.dv; d += blockDim.x) {
        float s = 0.0f;
        for (int c = 0; c < p.splits; c++) s += wts[c] * p.opart[(c * R + row) * p.dv + d];
        stf(out + row * p.dv + d, s);
    }
}

// Key chunks per row: enough (row, head group) blocks for ~8 per SM, chunks of >= kMinChunk
// keys of the longest possible row, at most kMaxSplits.
int paged_pick_splits(const ae_backend *be, const ae_paged_attn_args *a, long blocks) {
    long keys = (long)a->max_blocks * a->page_size;
    if (a->window > 0 && a->window < keys) keys = a->window;
    long want = 8L * cu(be)->sm_count;
    if (blocks >= want || keys < 2 * kMinChunk) return 1;
    long s = (want + blocks - 1) / blocks, cap = keys / kMinChunk;
    if (s > cap) s = cap;
    if (s > kMaxSplits) s = kMaxSplits;
    return s < 2 ? 1 : (int)s;
}


// 1 when the vector path's alignment holds: key rows in 16-byte pieces of 8 values, value rows
// and output rows in pieces of 4 (float4 / 8-byte bf16x4).
int paged_vec_ok(const ae_paged_attn_args *a, ae_ptr out, ae_ptr k, ae_ptr v) {
    return a->dk % 8 == 0 && a->dv % 4 == 0 && a->k_stride % 8 == 0 && a->v_stride % 4 == 0 &&
           a->page_stride % 8 == 0 && cuda_aligned16(k.data) && cuda_aligned16(v.data) &&
           cuda_aligned16(out.data);
}

// Rows r0 .. r0 + n − 1 of the call through k_paged_attn (and the combine when split): the
// kernels see n rows, their q, out, seq and pos offset here on the host.
void paged_rows(const ae_backend *be, const ae_paged_attn_args *a, int r0, int n, ae_ptr out,
                ae_ptr q, ae_ptr k, ae_ptr v) {
    if (n <= 0 || cuda_failed(be)) return;
    if (paged_decode_run(be, a, r0, n, out, q, k, v, &g_paged_last.splits)) {
        g_paged_last.kernel = "fold (k_paged_decode)";
        return;
    }
    out = ae_ptr_at(out, (size_t)r0 * a->Hq * a->dv);
    q = ae_ptr_at(q, (size_t)r0 * a->Hq * a->dk);
    PagedParams p = {};
    p.N = n;
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
    p.seq = (const int32_t *)a->seq.data + r0;
    p.pos = (const int32_t *)a->pos.data + r0;
    p.table = (const int32_t *)a->block_table.data;
    const long blocks = (long)n * ((a->Hq + kWarps - 1) / kWarps);
    p.splits = paged_pick_splits(be, a, blocks);
    g_paged_last.kernel = p.splits > 1 ? "k_paged_attn + k_paged_combine" : "k_paged_attn";
    g_paged_last.splits = p.splits;
    float *buf = NULL;
    if (p.splits > 1) {
        size_t rows = (size_t)n * a->Hq * p.splits;
        buf = (float *)cuda_tmp_alloc(be, sizeof(float) * rows * ((size_t)a->dv + 2),
                                      "attention_paged");
        if (!buf) return;
        p.opart = buf;
        p.mpart = buf + rows * (size_t)a->dv;
        p.lpart = p.mpart + rows;
    }
    const size_t smem = sizeof(float) * (size_t)kWarps * a->dk;
    const int vec = paged_vec_ok(a, out, k, v);
    const dim3 grid((unsigned)blocks, (unsigned)p.splits);
    AE_CUDA_FLOAT_DISPATCH(q.dtype, T, {
        const void *kern = vec ? (const void *)k_paged_attn<T, true>
                               : (const void *)k_paged_attn<T, false>;
        if (!attn_set_smem(be, kern, smem)) {
            cuda_check(be, cudaErrorInvalidValue, "attention_paged (shared memory)");
        } else {
            if (vec)
                k_paged_attn<T, true><<<grid, 32 * kWarps, smem, stream_of(be)>>>(
                    p, (T *)out.data, (const T *)q.data, (const T *)k.data, (const T *)v.data);
            else
                k_paged_attn<T, false><<<grid, 32 * kWarps, smem, stream_of(be)>>>(
                    p, (T *)out.data, (const T *)q.data, (const T *)k.data, (const T *)v.data);
            cuda_check(be, cudaGetLastError(), "attention_paged");
            if (p.splits > 1) {
                k_paged_combine<T><<<(unsigned)((size_t)n * a->Hq), 128, 0, stream_of(be)>>>(
                    p, (T *)out.data);
                cuda_check(be, cudaGetLastError(), "attention_paged (combine)");
            }
        }
    });
    cuda_tmp_free(be, buf);
}

// ---- prefill runs on tensor cores ---------------------------------------------------------------
//
// A run (ae_paged_run: n consecutive positions pos0.. of one sequence) is exactly the query block
// of a contiguous `attention` call (T = n, pos0) whose keys are addressed through the sequence's
// block-table row instead of a contiguous cache: kernel F (Hopper wgmma, dk = dv = 128 or
// 192/128; windows, sinks), B (GQA/GateSWA: windows, sinks) or D/E (absorbed MLA: one latent
// head, k == v rows) run on it unchanged, reading key rows through attn_key_off
// (cuda_attention.h), split-KV and all (F never splits). Tiles wholly before the window are
// never loaded, so released pages (−1) before a run's first visible key are never read.
// Prefill chunks (paged_tc_min() rows or more) try F first (attn_wgmma_run: AE_ATTN_WGMMA=1
// forces it, =0 keeps B; by default it takes runs with at least half a wave of its 128-row
// blocks, wgmma_paged_wins, once WGMMA_DEFAULT_EXT is on); decode rows that come here for their
// long keys stay on B's split-KV (F would run one block per kv head). F addresses pages of a
// power-of-two size by shift and mask with AE_ATTN_WGMMA_PAGED=fast (wgmma_keys), or reads a
// contiguous copy of the run's keys with AE_PAGED_F_GATHER=1 (paged_run_gathered).

// Shortest run taken to tensor cores: 16 positions. Kernel B packs 64 query rows (token, head of
// the GQA group) per block and D/E 16-64 (token, head) rows; from 16 positions on a block holds
// at least 16·G rows (a whole 64-row tile at G = 4, Qwen3-8B 32/8), so little of the tensor-core
// work is padding, and each key tile is loaded once per 16+ positions instead of once per row.
// Shorter runs are decode rows (n = 1) and short tails of prompts: over short keys k_paged_attn
// is tuned for them (one pass over the keys per row and group of 4 heads, split-KV); over long
// keys see kTcMinKeys. AE_CUDA_PAGED_TC_MIN=n (n >= 1) overrides it, for measurements and tests.
constexpr int kTcMinRows = 16;

// Decode rows (and short runs) whose last row sees at least kTcMinKeys keys go to the
// tensor-core kernels too, one launch per run: for a single row B and E split the keys over the
// whole GPU (split-KV sized from the row's tiles and the SM count, then the deterministic
// combine), stage K/V tiles in shared memory with 16-byte cp.async copies, two tiles in flight,
// and read every key row once for all query heads of the GQA group (B packs them into one row
// tile) or for all heads (E: the 576-wide latent once). That is the non-paged decode path of
// `attention` (bench_infer: 6.8 ms per token at 32K on the teacher) with the keys read through
// the block table; with k_paged_attn (one pass per (row, 4 heads, chunk) from registers, few
// loads in flight) the engine decoded one 32K sequence at 27.9 ms per token, 67% of the GPU time
// in attention_paged (docs/SERVE.md, 25efe1c). From 4K keys a row's reads (16+ MiB per layer at
// Qwen3-8B shapes, 4.5 MiB for the 576-wide latent) outweigh its launches (attention + combine);
// shorter decode rows stay on k_paged_attn, all of them in one launch.
// AE_CUDA_PAGED_TC_KEYS=n (n >= 1) overrides it; a large n with a large AE_CUDA_PAGED_TC_MIN
// keeps every row on k_paged_attn.
constexpr int kTcMinKeys = 4096;

// The value of environment variable `name` when it is an integer >= 1, else dflt.
int env_count(const char *name, int dflt) {
    const char *env = getenv(name);
    const int n = env ? atoi(env) : 0;
    return n >= 1 ? n : dflt;
}

int paged_tc_min() { return env_count("AE_CUDA_PAGED_TC_MIN", kTcMinRows); }
int paged_tc_keys() { return env_count("AE_CUDA_PAGED_TC_KEYS", kTcMinKeys); }

// 1 when run u should go to the tensor-core kernels: tc_min rows or more (a prefill chunk), or a
// last row that sees tc_keys keys or more (decode over a long context).
int paged_run_wants_tc(const ae_paged_attn_args *a, const ae_paged_run *u, int tc_min,
                       int tc_keys) {
    if (u->n >= tc_min) return 1;
    const long last = (long)u->pos0 + u->n - 1;
    const long lo = a->window > 0 && last - a->window + 1 > 0 ? last - a->window + 1 : 0;
    return last - lo + 1 >= tc_keys;
}

// 1 when the tensor-core kernels can take this call's runs: bf16 tensors, (dk, dv) one of B's
// or (absorbed MLA) one of D/E's, and 16-byte copies possible from every key row (pointers,
// strides and the page stride in whole 16-byte pieces). q and out rows of a run stay aligned:
// the instantiated dims are multiples of 16.
int paged_tc_ok(const ae_paged_attn_args *a, ae_ptr out, ae_ptr q, ae_ptr k, ae_ptr v) {
    const char *env = getenv("AE_CUDA_ATTN"); // "ref": no tensor cores (as for `attention`)
    if (q.dtype != AE_DT_BF16 || (env && strcmp(env, "ref") == 0)) return 0;
    if (!cuda_aligned16(q.data) || !cuda_aligned16(k.data) || !cuda_aligned16(v.data) ||
        !cuda_aligned16(out.data) || a->k_stride % 8 != 0 || a->v_stride % 8 != 0 ||
        a->page_stride % 8 != 0)
        return 0;
    if (a->Hkv == 1 && k.data == v.data && a->k_stride == a->v_stride &&
        attn_mla_has(a->dk, a->dv))
        return 1;
    return attn_flash_has(a->dk, a->dv);
}

// AE_PAGED_F_GATHER=1: prefill chunks (tc_min rows or more, not absorbed MLA) first gather the
// run's visible key and value rows into a contiguous temporary (paged_run_gathered) and run the
// contiguous kernels on it; unset or 0: they read the pages directly. Off by default (for A/B
// runs in bench_paged: the gather copies every visible row once per run, against kernel F's
// paged addressing).
int paged_f_gather() {
    const char *env = getenv("AE_PAGED_F_GATHER");
    return env && strcmp(env, "1") == 0;
}

// Run u (parameters p: its rows over the pages) on a contiguous copy of its visible keys kb ..
// ke − 1 (kb = the window's start for its first row, ke = its last position + 1): rows of
// Hkv·dk (K) then Hkv·dv (V) values, key j at row j − kb; positions shift by −kb, which keeps
// every row's visible keys (lo(pos) − kb = lo(pos − kb) for pos >= pos0, as kb = lo(pos0)).
// Then F (attn_wgmma_run's default for contiguous keys, or AE_ATTN_WGMMA) or B. 0 when neither
// takes it (the caller computes the rows with k_paged_attn).
int paged_run_gathered(const ae_backend *be, const attn_params *p) {
    const int ke = p->pos0 + p->T;
    const int kb = p->window > 0 && p->pos0 - p->window + 1 > 0 ? p->pos0 - p->window + 1 : 0;
    const int n = ke - kb, kcols = p->Hkv * p->dk, vcols = p->Hkv * p->dv;
    bf16 *buf = (bf16 *)cuda_tmp_alloc(be, (size_t)n * (kcols + vcols) * sizeof(bf16),
                                       "attention_paged (AE_PAGED_F_GATHER)");
    if (!buf) return 1; // the error is kept
    const int cmax = (kcols > vcols ? kcols : vcols) / 8;
    const int threads = cmax >= 256 ? 256 : ((cmax + 31) / 32) * 32;
    k_paged_gather_kv16<<<dim3((unsigned)n, 2), threads, 0, stream_of(be)>>>(
        (uint4 *)buf, p->k, p->v, p->page_stride, p->page_size, p->k_stride, p->v_stride,
        p->pages, kb, n, kcols, vcols);
    cuda_check(be, cudaGetLastError(), "attention_paged (gather)");
    attn_params c = *p;
    c.pages = NULL;
    c.k = buf;                     // (n, Hkv, dk)
    c.v = buf + (size_t)n * kcols; // (n, Hkv, dv)
    c.k_stride = kcols;
    c.v_stride = vcols;
    c.pos0 = p->pos0 - kb;
    const int done = attn_wgmma_run(be, &c, NULL) ||
                     (attn_flash_has(c.dk, c.dv) && attn_flash_run_lse(be, &c, NULL));
    cuda_tmp_free(be, buf);
    return done;
}

// Queues run u on kernel D/E (absorbed MLA), F (a prefill chunk of tc_min rows or more, when
// attn_wgmma_run takes it; AE_PAGED_F_GATHER=1: on a contiguous copy of its keys) or B; 0 when
// the kernel cannot take it (its shared memory does not fit): the caller then computes the rows
// with k_paged_attn.
int paged_run_tc(const ae_backend *be, const ae_paged_attn_args *a, const ae_paged_run *u,
                 int tc_min, ae_ptr out, ae_ptr q, ae_ptr k, ae_ptr v) {
    // the run's n rows as a contiguous attention call over the page pool (k, v)
    ae_attn_args run = {.T = u->n, .pos0 = u->pos0, .Hq = a->Hq, .Hkv = a->Hkv, .dk = a->dk,
                        .dv = a->dv, .k_stride = a->k_stride, .v_stride = a->v_stride,
                        .window = a->window, .scale = a->scale, .sinks = a->sinks};
    attn_params p;
    attn_params_init(&p, &run, ae_ptr_at(out, (size_t)u->first * a->Hq * a->dv), // (n, Hq, dv)
                     ae_ptr_at(q, (size_t)u->first * a->Hq * a->dk), k, v);    // (n, Hq, dk)
    p.pages = (const int32_t *)a->block_table.data + (size_t)u->seq * a->max_blocks;
    p.page_size = a->page_size;
    p.page_stride = a->page_stride;
    if (a->Hkv == 1 && k.data == v.data && a->k_stride == a->v_stride &&
        attn_mla_has(a->dk, a->dv))
        return attn_mla_run(be, &p);
    if (u->n >= tc_min && paged_f_gather()) return paged_run_gathered(be, &p);
    if (u->n >= tc_min && attn_wgmma_run(be, &p, NULL)) return 1;
    return attn_flash_has(a->dk, a->dv) && attn_flash_run_lse(be, &p, NULL);
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

void ae_cuda_paged_gather(const ae_backend *be, ae_ptr dst, int64_t ldd, ae_ptr src,
                          int64_t page_stride, int page_size, int64_t lds, ae_ptr table, int n,
                          int cols) {
    if (cuda_failed(be) || n <= 0 || cols <= 0) return;
    cuda_need(dst, AE_M_FLOAT, "paged_gather", "dst");
    cuda_need(src, AE_M_FLOAT, "paged_gather", "src");
    cuda_need(table, AE_M_I32, "paged_gather", "table");
    int threads = cols >= 256 ? 256 : ((cols + 31) / 32) * 32;
    AE_CUDA_FLOAT_DISPATCH(dst.dtype, TD, AE_CUDA_FLOAT_DISPATCH(src.dtype, TS, {
        k_paged_gather<TD, TS><<<n, threads, 0, stream_of(be)>>>(
            (TD *)dst.data, ldd, (const TS *)src.data, page_stride, page_size, lds,
            (const int32_t *)table.data, cols);
    }));
    cuda_check(be, cudaGetLastError(), "paged_gather");
}

// Runs of at least paged_tc_min() rows, or whose last row sees at least paged_tc_keys() keys,
// go to the tensor-core kernels (one launch each); every other row (short decode rows and runs,
// rows outside runs, runs a kernel could not take) goes to k_paged_attn in maximal consecutive
// ranges: with the engine's order (decode rows first, then prefill chunks) one launch for the
// short decode rows and one per short chunk.
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
    ae_paged_runs_check(a, NULL, NULL); // order and bounds (seq/pos are device memory)
    g_paged_last.kernel = NULL;
    const int tc = paged_tc_ok(a, out, q, k, v), tc_min = paged_tc_min(), tc_keys = paged_tc_keys();
    int r = 0; // rows before r are queued
    for (int i = 0; tc && i < a->n_runs; i++) {
        const ae_paged_run *u = &a->runs[i];
        if (!paged_run_wants_tc(a, u, tc_min, tc_keys) ||
            !paged_run_tc(be, a, u, tc_min, out, q, k, v))
            continue;
        paged_rows(be, a, r, u->first - r, out, q, k, v);
        r = u->first + u->n;
    }
    paged_rows(be, a, r, a->N - r, out, q, k, v);
}

const char *ae_cuda_paged_last(void) {
    static char buf[96];
    if (!g_paged_last.kernel) return "tensor cores only";
    snprintf(buf, sizeof buf, "%s, splits %d", g_paged_last.kernel, g_paged_last.splits);
    return buf;
}
