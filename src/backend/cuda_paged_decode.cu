// k_paged_decode: the decode rows of attention_paged (the rows cuda_paged.cu's paged_rows gets:
// short decode rows and short runs, bf16, dk = dv = 64 or 128) in one launch, kernel G's design
// (cuda_attention_decode.cu) with each row's keys read through its block-table row.
//
// Why: k_paged_attn runs one block of 4 warps per (row, 4 heads, chunk) with few loads in flight
// per lane, and split-KV needs a second launch (k_paged_combine): a fixed cost of ~10 µs per
// call on an H200, 36 layers per token (issue 9: 6.66 ms per output token at 1K, one client).
//
// Grid (Hkv · NHG, S, N): block (kv head kvh, head group hg, split s, row r) owns the query heads
// kvh·G + hg·NR .. + NR − 1 (NR: 1, 2, 4 or 8, a template; NHG = ⌈G / NR⌉; rows past G are zeros,
// never written) of row r and split s of the row's visible keys [lo(pos), pos]. S is the launch's
// split bound (host: from the rows' longest possible range, max_blocks·page_size or the window,
// and the SM count); a row uses Sr = min(S, ⌈keys / PD_MIN_KEYS⌉) splits, computed on the device
// from its pos (the host cannot read pos), so a 1K row in a launch sized for 40K keys still runs
// ~64-key splits; blocks of splits >= Sr return at once. Key j of the row lives in row j % P of
// page table[seq][j / P] (P = page_size; shift and mask when P is a power of two). Pages before
// lo(pos) (released by the sliding window, −1) are never read.
//
// Within a block (PD_WARPS warps), exactly kernel G: warp w takes the key batches w, w + 4, ...;
// a K or V row is D/8 lanes x 16 bytes, 2U 16-byte loads in flight per lane; all NR query rows
// in registers; fp32 online softmax in log2 units (P never rounded to bf16); the warps' (m, l, o)
// merged through shared memory in warp order 0..PD_WARPS−1.
//
// Sr > 1: the block writes its partial (m, l, o) (cuda_attention.h's format, R = N·Hq rows),
// takes a ticket (atomicAdd on the counter of its (row, head group)); the block drawing ticket
// Sr − 1 merges the Sr partials in split order 0..Sr−1 (the same bits whichever block is last),
// adds the sink, writes out and sets the counter back to 0 (the next launch or graph replay
// finds zeros). Counters: a __device__ table, one slot of PD_TICKETS per backend (fixed
// addresses, nothing allocated or cleared per call). Partials: cuda_tmp_alloc (inside a graph
// recording the recording's workspace, as for k_paged_attn's split path).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda_attention.h"

#ifndef PAGED_DECODE_FOLD_DEFAULT_ON
#define PAGED_DECODE_FOLD_DEFAULT_ON 1 // AE_PAGED_DECODE_FOLD unset: this kernel (1) or k_paged_attn (0)
#endif

#define PD_WARPS 4
#define PD_THREADS (PD_WARPS * 32)
#define PD_MIN_KEYS 64    // a split covers at least this many keys (as kernel G)
#define PD_PER_SM 4       // resident blocks per SM the split bound aims for (at most)
#define PD_MAX_SPLITS 128 // split bound of a launch (merge weights: NR x S floats of shared memory)
#define PD_SLOTS 8        // backends with their own ticket counters
#define PD_TICKETS 8192   // counters per slot: (Hkv · NHG) x N blocks of one split

// Tickets of the split merge: slot i of backend i (pd_tickets); always 0 between launches.
__device__ unsigned int g_pd_tickets[PD_SLOTS * PD_TICKETS];

namespace {

typedef struct {
    const bf16 *q, *k, *v; // q (N, Hq, D); k, v: the page pool (rows of k_stride / v_stride)
    bf16 *out;             // (N, Hq, D)
    const float *sinks;    // (Hq) natural-log units, or null
    const int32_t *seq, *pos, *table; // (N), (N), (·, max_blocks)
    float *opart, *mpart, *lpart;     // partials of S splits (S > 1)
    int N, Hq, G, k_stride, v_stride, window, page_size, page_shift, max_blocks, splits;
    int64_t page_stride;
    float scale_log2; // scale · log2(e)
} pd_params;

template <int D> struct pd_cfg {
    static constexpr int LPK = D / 8;   // lanes per key row (16-byte chunks)
    static constexpr int KG = 32 / LPK; // keys a warp reads at once
    static constexpr int U = 4;         // steps per batch
    static constexpr int BK = KG * U;   // keys per warp batch
    static_assert(D % 8 == 0 && 32 % LPK == 0, "a key row must split evenly over the lanes");
};

// 8 bf16 (16 bytes) as floats.
__device__ __forceinline__ void pd_unpack(const uint4 &u, float (&f)[8]) {
    const __nv_bfloat162 *h = reinterpret_cast<const __nv_bfloat162 *>(&u);
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const float2 x = __bfloat1622float2(h[i]);
        f[2 * i] = x.x, f[2 * i + 1] = x.y;
    }
}

// Splits row keys [lo, pos] uses: one per PD_MIN_KEYS keys, at most the launch's bound.
__device__ __forceinline__ int pd_row_splits(int n, int bound) {
    const int s = (n + PD_MIN_KEYS - 1) / PD_MIN_KEYS;
    return s < bound ? s : bound;
}

// Element offsets from k and v of key j's rows (its page from the sequence's table row).
__device__ __forceinline__ void pd_key_off(const pd_params &p, const int32_t *tab, int j,
                                           int64_t &ko, int64_t &vo) {
    int pg, row;
    if (p.page_shift >= 0) pg = j >> p.page_shift, row = j & (p.page_size - 1);
    else pg = j / p.page_size, row = j - pg * p.page_size;
    const int64_t base = (int64_t)__ldg(tab + pg) * p.page_stride;
    ko = base + (int64_t)row * p.k_stride;
    vo = base + (int64_t)row * p.v_stride;
}

// The last block of a (row, head group): merges the S partials of its nr rows in split order,
// writes out. wts: NR x S floats of shared memory.
template <int D, int NR>
__device__ void pd_merge(const pd_params &p, int r, int h0, int nr, int S, float *wts) {
    __shared__ float s_inv[NR];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const size_t R = (size_t)p.N * p.Hq;
    for (int i = warp; i < nr; i += PD_WARPS) {
        const size_t row = (size_t)r * p.Hq + h0 + i;
        float mx = -INFINITY;
        for (int s = lane; s < S; s += 32) mx = fmaxf(mx, __ldcg(p.mpart + s * R + row));
        for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
        const int has_sink = p.sinks != nullptr;
        const float sink2 = has_sink ? p.sinks[h0 + i] * AE_ATTN_LOG2E : -INFINITY;
        const float base = attn_base(has_sink ? fmaxf(mx, sink2) : mx);
        float den = 0.0f;
        for (int s = lane; s < S; s += 32) {
            const float ws = exp2f(__ldcg(p.mpart + s * R + row) - base); // 0: split saw no key
            wts[i * S + s] = ws;
            den += ws * __ldcg(p.lpart + s * R + row);
        }
        for (int o = 16; o > 0; o >>= 1) den += __shfl_xor_sync(0xffffffffu, den, o);
        if (has_sink) den += exp2f(sink2 - base);
        if (lane == 0) s_inv[i] = den > 0.0f ? 1.0f / den : 0.0f;
    }
    __syncthreads();
    // thread: 4 consecutive columns of one row; splits summed in order 0..S−1
    for (int e = threadIdx.x; e < nr * (D / 4); e += PD_THREADS) {
        const int i = e / (D / 4), c = (e % (D / 4)) * 4;
        const size_t row = (size_t)r * p.Hq + h0 + i;
        const float *src = p.opart + row * D + c;
        const float *w = wts + i * S;
        float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll 16
        for (int s = 0; s < S; s++) {
            const float4 x = __ldcg(reinterpret_cast<const float4 *>(src + (size_t)s * R * D));
            acc.x += w[s] * x.x, acc.y += w[s] * x.y, acc.z += w[s] * x.z, acc.w += w[s] * x.w;
        }
        const float f = s_inv[i];
        bf16 *dst = p.out + row * D + c; // 8-byte aligned: out 16-byte aligned, c % 4 == 0
        *reinterpret_cast<uint32_t *>(dst) = pack_bf16(acc.x * f, acc.y * f);
        *reinterpret_cast<uint32_t *>(dst + 2) = pack_bf16(acc.z * f, acc.w * f);
    }
}

// tickets: this backend's slot (PD_TICKETS counters, index r · gridDim.x + blockIdx.x).
template <int D, int NR>
__global__ void __launch_bounds__(PD_THREADS) k_paged_decode(const pd_params p, unsigned *tickets) {
    typedef pd_cfg<D> C;
    extern __shared__ __align__(16) float pd_sm[];
    __shared__ int s_last;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int kg = lane / C::LPK, dl = lane % C::LPK; // key group, 8-dim chunk of the lane
    const int nhg = (p.G + NR - 1) / NR;
    const int kvh = blockIdx.x / nhg, hg = blockIdx.x % nhg, split = blockIdx.y, r = blockIdx.z;
    const int h0 = kvh * p.G + hg * NR;                      // first query head of the block
    const int nr = p.G - hg * NR < NR ? p.G - hg * NR : NR; // its real rows

    // the row's visible keys, its split count, this split's share (chunks of ⌈keys / S⌉: a
    // trailing split may be empty when S > 64, its partial then m = −inf, l = 0, weight 0)
    const int pos = p.pos[r], lo = attn_lo(pos, p.window);
    const int S = pd_row_splits(pos - lo + 1, p.splits);
    if (split >= S) return; // this row needs fewer splits than the launch has
    int kb = lo, ke = pos + 1;
    if (S > 1) {
        const int chunk = (ke - kb + S - 1) / S;
        const long b = (long)kb + (long)split * chunk;
        kb = b < ke ? (int)b : ke;
        if (ke - kb > chunk) ke = kb + chunk;
    }
    const int32_t *tab = p.table + (int64_t)p.seq[r] * p.max_blocks;

    float q[NR][8]; // q[i][e]: dim 8·dl + e of query head h0 + i
#pragma unroll
    for (int i = 0; i < NR; i++) {
        uint4 u = make_uint4(0u, 0u, 0u, 0u);
        if (i < nr)
            u = __ldg(reinterpret_cast<const uint4 *>(p.q + ((size_t)r * p.Hq + h0 + i) * D + dl * 8));
        pd_unpack(u, q[i]);
    }
    float o[NR][8], m[NR], l[NR];
#pragma unroll
    for (int i = 0; i < NR; i++) {
        m[i] = -INFINITY, l[i] = 0.0f;
#pragma unroll
        for (int e = 0; e < 8; e++) o[i][e] = 0.0f;
    }
    const bf16 *kh = p.k + (size_t)kvh * D + dl * 8, *vh = p.v + (size_t)kvh * D + dl * 8;

    for (int j0 = kb + warp * C::BK; j0 < ke; j0 += PD_WARPS * C::BK) {
        uint4 kr[C::U], vr[C::U]; // all loads of the batch first: 2U in flight per lane
#pragma unroll
        for (int u = 0; u < C::U; u++) {
            const int j = j0 + u * C::KG + kg;
            kr[u] = vr[u] = make_uint4(0u, 0u, 0u, 0u);
            if (j < ke) { // keys past the range are never read (unwritten page slots)
                int64_t ko, vo;
                pd_key_off(p, tab, j, ko, vo);
                kr[u] = __ldg(reinterpret_cast<const uint4 *>(kh + ko));
                vr[u] = __ldg(reinterpret_cast<const uint4 *>(vh + vo));
            }
        }
        float s[NR][C::U]; // scores of the lane's keys (log2 units), then their weights
#pragma unroll
        for (int u = 0; u < C::U; u++) {
            float kf[8];
            pd_unpack(kr[u], kf);
#pragma unroll
            for (int i = 0; i < NR; i++) {
                float d = 0.0f;
#pragma unroll
                for (int e = 0; e < 8; e++) d = fmaf(q[i][e], kf[e], d);
#pragma unroll
                for (int x = 1; x < C::LPK; x <<= 1) d += __shfl_xor_sync(0xffffffffu, d, x);
                s[i][u] = j0 + u * C::KG + kg < ke ? d * p.scale_log2 : -INFINITY;
            }
        }
#pragma unroll
        for (int i = 0; i < NR; i++) {
            float mx = s[i][0];
#pragma unroll
            for (int u = 1; u < C::U; u++) mx = fmaxf(mx, s[i][u]);
#pragma unroll
            for (int x = C::LPK; x < 32; x <<= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, x));
            const float mn = fmaxf(m[i], mx), base = attn_base(mn);
            const float al = exp2f(m[i] - base); // 0 while nothing was seen
            m[i] = mn;
            l[i] *= al;
#pragma unroll
            for (int e = 0; e < 8; e++) o[i][e] *= al;
#pragma unroll
            for (int u = 0; u < C::U; u++) {
                s[i][u] = exp2f(s[i][u] - base); // 0 for a key past the range
                l[i] += s[i][u];
            }
        }
#pragma unroll
        for (int u = 0; u < C::U; u++) {
            float vf[8];
            pd_unpack(vr[u], vf);
#pragma unroll
            for (int i = 0; i < NR; i++)
#pragma unroll
                for (int e = 0; e < 8; e++) o[i][e] = fmaf(s[i][u], vf[e], o[i][e]);
        }
    }
    // the warp's sums over its key groups (xor butterfly: every lane gets the same bits)
#pragma unroll
    for (int i = 0; i < NR; i++) {
#pragma unroll
        for (int x = C::LPK; x < 32; x <<= 1) {
            l[i] += __shfl_xor_sync(0xffffffffu, l[i], x);
#pragma unroll
            for (int e = 0; e < 8; e++) o[i][e] += __shfl_xor_sync(0xffffffffu, o[i][e], x);
        }
    }
    float *wo = pd_sm;                   // [PD_WARPS][NR][D] the warps' accumulators
    float *wm = wo + PD_WARPS * NR * D;  // [PD_WARPS][NR] their maxima
    float *wl = wm + PD_WARPS * NR;      // [PD_WARPS][NR] their sums
    if (kg == 0) {
#pragma unroll
        for (int i = 0; i < NR; i++) {
#pragma unroll
            for (int e = 0; e < 8; e++) wo[(warp * NR + i) * D + dl * 8 + e] = o[i][e];
            if (dl == 0) wm[warp * NR + i] = m[i], wl[warp * NR + i] = l[i];
        }
    }
    __syncthreads();

    // the block's rows: warps merged in order 0..PD_WARPS−1; out directly, or the split's partial
    const size_t R = (size_t)p.N * p.Hq;
    for (int e = threadIdx.x; e < nr * D; e += PD_THREADS) {
        const int i = e / D, d = e % D;
        float mx = -INFINITY;
#pragma unroll
        for (int w = 0; w < PD_WARPS; w++) mx = fmaxf(mx, wm[w * NR + i]);
        const float base = attn_base(mx);
        float acc = 0.0f, sum = 0.0f;
#pragma unroll
        for (int w = 0; w < PD_WARPS; w++) {
            const float f = exp2f(wm[w * NR + i] - base); // 0 for a warp that saw no key
            acc += f * wo[(w * NR + i) * D + d];
            sum += f * wl[w * NR + i];
        }
        const size_t row = (size_t)r * p.Hq + h0 + i;
        if (S == 1) {
            const int has_sink = p.sinks != nullptr;
            const float sink2 = has_sink ? p.sinks[h0 + i] * AE_ATTN_LOG2E : 0.0f;
            p.out[row * D + d] = __float2bfloat16_rn(acc * attn_out_scale(mx, sum, has_sink, sink2));
        } else {
            const size_t pr = (size_t)split * R + row;
            p.opart[pr * D + d] = acc;
            if (d == 0) p.mpart[pr] = mx, p.lpart[pr] = sum;
        }
    }
    if (S == 1) return;

    // ticket: the partial is visible device-wide before the count says it is there
    __threadfence();
    __syncthreads();
    unsigned *ticket = tickets + (size_t)r * gridDim.x + blockIdx.x;
    if (threadIdx.x == 0) s_last = atomicAdd(ticket, 1u) == (unsigned)(S - 1);
    __syncthreads();
    if (!s_last) return;
    __threadfence(); // the other blocks' partials are read after their tickets
    pd_merge<D, NR>(p, r, h0, nr, S, pd_sm);
    if (threadIdx.x == 0) *ticket = 0u; // all S blocks of this (row, group) counted: ready again
}

// ---- host ---------------------------------------------------------------------------------------

// This backend's slot of g_pd_tickets; NULL with the error kept when the symbol is not found. A
// ninth backend shares a slot round-robin (safe while two backends sharing one do not run this
// kernel at the same time).
unsigned *pd_tickets(const ae_backend *be) {
    static const ae_backend *owner[PD_SLOTS];
    static unsigned *addr[PD_SLOTS];
    static int next;
    for (int i = 0; i < PD_SLOTS; i++)
        if (owner[i] == be) return addr[i];
    void *base = NULL;
    cudaError_t e = cudaGetSymbolAddress(&base, g_pd_tickets);
    if (e != cudaSuccess) {
        cuda_check(be, e, "attention_paged (decode tickets)");
        return NULL;
    }
    const int i = next++ % PD_SLOTS;
    owner[i] = be;
    addr[i] = (unsigned *)base + (size_t)i * PD_TICKETS;
    return addr[i];
}

// The launch's split bound for `blocks` blocks per split, `per_sm` of them resident per SM:
// enough splits for up to PD_PER_SM blocks per SM, at least PD_MIN_KEYS keys each of the
// longest range a row can have (max_blocks·page_size, or the window), at most PD_MAX_SPLITS;
// rows shorter than that use fewer (pd_row_splits, on the device).
int pd_pick_splits(const ae_backend *be, long keys, long blocks, int per_sm) {
    const long want = (long)cu(be)->sm_count * (per_sm < PD_PER_SM ? per_sm : PD_PER_SM);
    if (blocks >= want || keys < 2 * PD_MIN_KEYS) return 1;
    long s = (want + blocks - 1) / blocks;
    if (s > keys / PD_MIN_KEYS) s = keys / PD_MIN_KEYS;
    if (s > PD_MAX_SPLITS) s = PD_MAX_SPLITS;
    return s < 2 ? 1 : (int)s;
}

template <int D, int NR> int pd_launch(const ae_backend *be, pd_params p, int *splits) {
    const int nhg = (p.G + NR - 1) / NR, gx = (p.Hq / p.G) * nhg;
    unsigned *tickets = pd_tickets(be);
    if (!tickets) return 1;
    const size_t warp_smem = sizeof(float) * (size_t)PD_WARPS * NR * (D + 2);
    int per_sm = 1;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, k_paged_decode<D, NR>, PD_THREADS,
                                                      warp_smem) != cudaSuccess) {
        cudaGetLastError();
        per_sm = 1;
    }
    // more (row, group) counters than a slot has: unsplit (so many blocks fill the GPU anyway)
    long keys = (long)p.max_blocks * p.page_size; // the longest range a row can have
    if (p.window > 0 && p.window < keys) keys = p.window;
    p.splits = (long)gx * p.N > PD_TICKETS ? 1 : pd_pick_splits(be, keys, (long)gx * p.N, per_sm);
    *splits = p.splits;
    const size_t merge_smem = sizeof(float) * (size_t)NR * p.splits;
    const size_t smem = warp_smem > merge_smem ? warp_smem : merge_smem;
    if (!attn_set_smem(be, (const void *)k_paged_decode<D, NR>, smem)) return 0;
    float *buf = NULL;
    if (p.splits > 1) {
        const size_t rows = (size_t)p.N * p.Hq * p.splits;
        buf = (float *)cuda_tmp_alloc(be, sizeof(float) * rows * (D + 2), "attention_paged");
        if (!buf) return 1;
        p.opart = buf;                    // (S, N·Hq, D)
        p.mpart = buf + rows * (size_t)D; // (S, N·Hq)
        p.lpart = p.mpart + rows;         // (S, N·Hq)
    }
    const dim3 grid((unsigned)gx, (unsigned)p.splits, (unsigned)p.N);
    k_paged_decode<D, NR><<<grid, PD_THREADS, smem, stream_of(be)>>>(p, tickets);
    cuda_check(be, cudaGetLastError(), "attention_paged (decode)");
    cuda_tmp_free(be, buf);
    return 1;
}

// NR: the fewest rows (1, 2, 4, 8) covering a kv head's G query heads; G > 8: groups of 8.
template <int D> int pd_pick_rows(const ae_backend *be, const pd_params &p, int *splits) {
    if (p.G <= 1) return pd_launch<D, 1>(be, p, splits);
    if (p.G <= 2) return pd_launch<D, 2>(be, p, splits);
    if (p.G <= 4) return pd_launch<D, 4>(be, p, splits);
    return pd_launch<D, 8>(be, p, splits);
}

int pd_aligned16(const void *ptr) { return ((uintptr_t)ptr & 15) == 0; }

} // namespace

// AE_PAGED_DECODE_FOLD: 0 = k_paged_attn + k_paged_combine; unset = PAGED_DECODE_FOLD_DEFAULT_ON;
// else this kernel. Read at every call (a graph keeps its recording's choice).
static int paged_decode_enabled(void) {
    const char *env = getenv("AE_PAGED_DECODE_FOLD");
    if (!env || !*env) return PAGED_DECODE_FOLD_DEFAULT_ON;
    return strcmp(env, "0") != 0;
}

// Rows r0 .. r0 + n − 1 of the call on k_paged_decode; 1 when queued (or an error kept), 0 when
// it does not take them (switched off; not bf16; dk != dv or not 64 / 128; 16-byte alignment of
// q, k, v, out, strides and the page stride; more rows than a grid's z): the caller then runs
// k_paged_attn. *splits: the launch's split bound.
int paged_decode_run(const ae_backend *be, const ae_paged_attn_args *a, int r0, int n, ae_ptr out,
                     ae_ptr q, ae_ptr k, ae_ptr v, int *splits) {
    if (!paged_decode_enabled() || q.dtype != AE_DT_BF16 || a->dk != a->dv ||
        (a->dk != 64 && a->dk != 128) || n > 65535 || a->page_size <= 0)
        return 0;
    out = ae_ptr_at(out, (size_t)r0 * a->Hq * a->dv); // (n, Hq, dv)
    q = ae_ptr_at(q, (size_t)r0 * a->Hq * a->dk);     // (n, Hq, dk)
    if (!pd_aligned16(q.data) || !pd_aligned16(k.data) || !pd_aligned16(v.data) ||
        !pd_aligned16(out.data) || a->k_stride % 8 != 0 || a->v_stride % 8 != 0 ||
        a->page_stride % 8 != 0)
        return 0;
    pd_params p;
    memset(&p, 0, sizeof p);
    p.q = (const bf16 *)q.data;
    p.k = (const bf16 *)k.data;
    p.v = (const bf16 *)v.data;
    p.out = (bf16 *)out.data;
    p.sinks = (const float *)a->sinks.data;
    p.seq = (const int32_t *)a->seq.data + r0;
    p.pos = (const int32_t *)a->pos.data + r0;
    p.table = (const int32_t *)a->block_table.data;
    p.N = n;
    p.Hq = a->Hq;
    p.G = a->Hq / a->Hkv;
    p.k_stride = a->k_stride;
    p.v_stride = a->v_stride;
    p.window = a->window;
    p.page_size = a->page_size;
    p.page_shift = -1; // shift and mask for power-of-two pages (the engine's 16)
    if ((a->page_size & (a->page_size - 1)) == 0)
        for (p.page_shift = 0; (1 << p.page_shift) < a->page_size; p.page_shift++) {}
    p.max_blocks = a->max_blocks;
    p.page_stride = a->page_stride;
    p.scale_log2 = a->scale * AE_ATTN_LOG2E;
    return a->dk == 128 ? pd_pick_rows<128>(be, p, splits) : pd_pick_rows<64>(be, p, splits);
}
