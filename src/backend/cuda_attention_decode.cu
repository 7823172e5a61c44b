// G. k_attn_decode: attention for a few query tokens (decode: T·G <= 64 packed rows, no lse)
// with dk = dv in {64, 128}. See cuda_attention.cu for when it runs (AE_ATTN_DECODE).
//
// Why not kernel B: at T = 1 kernel B runs a 64-row block for G real rows (one warp computes,
// three copy) and split-KV needs a second launch (k_attn_combine): ~10 µs a call of fixed cost.
// Here every warp computes and the combine happens inside the same launch.
//
// Grid (Hkv · NHG, splits, T): block (kv head kvh, head group hg, split s, token t) owns the
// query heads kvh·G + hg·NR .. + NR − 1 (NR rows, a template: 1, 2, 4 or 8; NHG = ⌈G / NR⌉, the
// rows past G are zeros, never written) of token t and the keys of split s of the token's
// visible range [lo(pos), pos] (ring / window as kernel B: attn_key_off).
//
// Within a block (DEC_WARPS warps): warp w takes the key batches w, w + DEC_WARPS, ... of BK
// keys. A K or V row is D/8 lanes x 16 bytes (LPK lanes per key; the warp's 32 lanes read KG =
// 32 / LPK keys at once), U such steps per batch: 2U 16-byte loads in flight per lane. Each lane
// keeps all NR query rows for its 8 dims in registers; a score is the lane's 8-dim partial dot
// summed over the LPK lanes of its key (xor butterfly). Online softmax per row in fp32, log2
// units, the running max uniform over the warp (batch max over the KG key groups), sums and
// accumulators per key group until the end, then added over the key groups (butterfly). The
// warps' (m, l, o) are merged through shared memory in warp order 0..DEC_WARPS−1.
//
// Splits > 1: the block writes its partial (m, l, o) (the format of cuda_attention.h), then
// takes a ticket: atomicAdd on the counter of its (head group, token). The block that draws the
// last ticket (S − 1) merges the S partials in split order 0..S−1 — the same arithmetic
// whichever block arrives last, so two runs give the same bits — adds the sink, writes `out` and
// sets the counter back to 0 for the next launch (or graph replay). Counters live in a
// __device__ table (zero at module load, so nothing to allocate or clear per call, and fixed
// addresses for graphs), a slot of DEC_TICKETS counters per backend. Partials come from
// attn_partials_alloc (inside a graph recording: the recording's workspace, the same addresses
// every replay).
#include <stdlib.h>
#include <string.h>

#include "backend/cuda_attention.h"

#ifndef DECODE_KERNEL_DEFAULT_ON
#define DECODE_KERNEL_DEFAULT_ON 1 // AE_ATTN_DECODE unset: this kernel (1) or kernel B (0)
#endif

#define DEC_WARPS 4
#define DEC_THREADS (DEC_WARPS * 32)
#define DEC_MAX_ROWS 64   // T·G packed rows this kernel takes
#define DEC_MIN_KEYS 64   // a split covers at least this many keys (2 batches of the block at D 128)
#define DEC_PER_SM 4      // resident blocks per SM the split choice aims for (at most)
#define DEC_SLOTS 8       // backends with their own ticket counters
#define DEC_TICKETS 4096  // counters per slot: (Hkv · NHG) x T blocks of one split

// Tickets of the split merge: slot i of backend i (dec_tickets); always 0 between launches.
__device__ unsigned int g_dec_tickets[DEC_SLOTS * DEC_TICKETS];

template <int D> struct dec_cfg {
    static constexpr int LPK = D / 8;     // lanes per key row (16-byte chunks)
    static constexpr int KG = 32 / LPK;   // keys a warp reads at once
    static constexpr int U = 4;           // steps per batch
    static constexpr int BK = KG * U;     // keys per warp batch
    static_assert(D % 8 == 0 && 32 % LPK == 0, "a key row must split evenly over the lanes");
};

// 8 bf16 (16 bytes) as floats.
__device__ __forceinline__ void dec_unpack(const uint4 &u, float (&f)[8]) {
    const __nv_bfloat162 *h = reinterpret_cast<const __nv_bfloat162 *>(&u);
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const float2 x = __bfloat1622float2(h[i]);
        f[2 * i] = x.x, f[2 * i + 1] = x.y;
    }
}

__device__ __forceinline__ void dec_store_bf16x4(bf16 *dst, float4 x) {
    // out is 4-byte aligned (dispatcher) and dst is 4 elements into a row of D (even): bf16x2 stores
    *reinterpret_cast<uint32_t *>(dst) = pack_bf16(x.x, x.y);
    *reinterpret_cast<uint32_t *>(dst + 2) = pack_bf16(x.z, x.w);
}

// The last block of a (head group, token): merges the p.splits partials of its nr rows in split
// order, writes out. wts: NR x S floats of shared memory.
template <int D, int NR>
__device__ void dec_merge(const attn_params &p, int t, int h0, int nr, float *wts) {
    __shared__ float s_inv[NR];
    const int S = p.splits, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const size_t R = (size_t)p.T * p.Hq;
    for (int r = warp; r < nr; r += DEC_WARPS) {
        const size_t row = (size_t)t * p.Hq + h0 + r;
        float mx = -INFINITY;
        for (int s = lane; s < S; s += 32) mx = fmaxf(mx, __ldcg(p.mpart + s * R + row));
        for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
        const int has_sink = p.sinks != nullptr;
        const float sink2 = has_sink ? p.sinks[h0 + r] * AE_ATTN_LOG2E : -INFINITY;
        const float base = attn_base(has_sink ? fmaxf(mx, sink2) : mx);
        float den = 0.0f;
        for (int s = lane; s < S; s += 32) {
            const float ws = exp2f(__ldcg(p.mpart + s * R + row) - base); // 0: split saw no key
            wts[r * S + s] = ws;
            den += ws * __ldcg(p.lpart + s * R + row);
        }
        for (int o = 16; o > 0; o >>= 1) den += __shfl_xor_sync(0xffffffffu, den, o);
        if (has_sink) den += exp2f(sink2 - base);
        if (lane == 0) s_inv[r] = den > 0.0f ? 1.0f / den : 0.0f;
    }
    __syncthreads();
    // thread: 4 consecutive columns of one row; splits summed in order 0..S−1, 16 loads in flight
    // (the merge is the launch's serial tail: its L2 latency, not its bytes, is the cost)
    for (int e = threadIdx.x; e < nr * (D / 4); e += DEC_THREADS) {
        const int r = e / (D / 4), c = (e % (D / 4)) * 4;
        const size_t row = (size_t)t * p.Hq + h0 + r;
        const float *src = p.opart + row * D + c;
        const float *w = wts + r * S;
        float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll 16
        for (int s = 0; s < S; s++) {
            const float4 x = __ldcg(reinterpret_cast<const float4 *>(src + (size_t)s * R * D));
            acc.x += w[s] * x.x, acc.y += w[s] * x.y, acc.z += w[s] * x.z, acc.w += w[s] * x.w;
        }
        const float f = s_inv[r];
        dec_store_bf16x4(p.out + row * D + c, make_float4(acc.x * f, acc.y * f, acc.z * f, acc.w * f));
    }
}

// tickets: this backend's slot (DEC_TICKETS counters, index t · gridDim.x + blockIdx.x).
template <int D, int NR>
__global__ void __launch_bounds__(DEC_THREADS) k_attn_decode(const attn_params p, unsigned *tickets) {
    typedef dec_cfg<D> C;
    extern __shared__ __align__(16) float dec_sm[];
    __shared__ int s_last;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int kg = lane / C::LPK, dl = lane % C::LPK; // key group, 8-dim chunk of the lane
    const int nhg = (p.G + NR - 1) / NR;
    const int kvh = blockIdx.x / nhg, hg = blockIdx.x % nhg, split = blockIdx.y, t = blockIdx.z;
    const int h0 = kvh * p.G + hg * NR;                           // first query head of the block
    const int nr = p.G - hg * NR < NR ? p.G - hg * NR : NR;      // its real rows
    const int S = p.splits, pos = p.pos0 + t;

    // this split's share of the token's visible keys (possibly none)
    int kb = attn_lo(pos, p.window), ke = pos + 1;
    if (S > 1) {
        const int chunk = (ke - kb + S - 1) / S;
        const long b = (long)kb + (long)split * chunk;
        kb = b < ke ? (int)b : ke;
        if (ke - kb > chunk) ke = kb + chunk;
    }

    float q[NR][8]; // q[r][i]: dim 8·dl + i of query head h0 + r
#pragma unroll
    for (int r = 0; r < NR; r++) {
        uint4 u = make_uint4(0u, 0u, 0u, 0u);
        if (r < nr)
            u = __ldg(reinterpret_cast<const uint4 *>(p.q + ((size_t)t * p.Hq + h0 + r) * D + dl * 8));
        dec_unpack(u, q[r]);
    }
    float o[NR][8], m[NR], l[NR];
#pragma unroll
    for (int r = 0; r < NR; r++) {
        m[r] = -INFINITY, l[r] = 0.0f;
#pragma unroll
        for (int i = 0; i < 8; i++) o[r][i] = 0.0f;
    }
    const bf16 *kh = p.k + (size_t)kvh * D + dl * 8, *vh = p.v + (size_t)kvh * D + dl * 8;

    for (int j0 = kb + warp * C::BK; j0 < ke; j0 += DEC_WARPS * C::BK) {
        uint4 kr[C::U], vr[C::U]; // all loads of the batch first: 2U in flight per lane
#pragma unroll
        for (int u = 0; u < C::U; u++) {
            const int j = j0 + u * C::KG + kg;
            kr[u] = vr[u] = make_uint4(0u, 0u, 0u, 0u);
            if (j < ke) { // keys past the range are never read (a cache's unwritten rows)
                kr[u] = __ldg(reinterpret_cast<const uint4 *>(kh + attn_key_off(p, j, p.k_stride)));
                vr[u] = __ldg(reinterpret_cast<const uint4 *>(vh + attn_key_off(p, j, p.v_stride)));
            }
        }
        float s[NR][C::U]; // scores of the lane's keys (log2 units), then their weights
#pragma unroll
        for (int u = 0; u < C::U; u++) {
            float kf[8];
            dec_unpack(kr[u], kf);
#pragma unroll
            for (int r = 0; r < NR; r++) {
                float d = 0.0f;
#pragma unroll
                for (int i = 0; i < 8; i++) d = fmaf(q[r][i], kf[i], d);
#pragma unroll
                for (int x = 1; x < C::LPK; x <<= 1) d += __shfl_xor_sync(0xffffffffu, d, x);
                s[r][u] = j0 + u * C::KG + kg < ke ? d * p.scale_log2 : -INFINITY;
            }
        }
#pragma unroll
        for (int r = 0; r < NR; r++) {
            float mx = s[r][0];
#pragma unroll
            for (int u = 1; u < C::U; u++) mx = fmaxf(mx, s[r][u]);
#pragma unroll
            for (int x = C::LPK; x < 32; x <<= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, x));
            const float mn = fmaxf(m[r], mx), base = attn_base(mn);
            const float al = exp2f(m[r] - base); // 0 while nothing was seen
            m[r] = mn;
            l[r] *= al;
#pragma unroll
            for (int i = 0; i < 8; i++) o[r][i] *= al;
#pragma unroll
            for (int u = 0; u < C::U; u++) {
                s[r][u] = exp2f(s[r][u] - base); // 0 for a key past the range
                l[r] += s[r][u];
            }
        }
#pragma unroll
        for (int u = 0; u < C::U; u++) {
            float vf[8];
            dec_unpack(vr[u], vf);
#pragma unroll
            for (int r = 0; r < NR; r++)
#pragma unroll
                for (int i = 0; i < 8; i++) o[r][i] = fmaf(s[r][u], vf[i], o[r][i]);
        }
    }
    // the warp's sums over its key groups (xor butterfly: every lane gets the same bits)
#pragma unroll
    for (int r = 0; r < NR; r++) {
#pragma unroll
        for (int x = C::LPK; x < 32; x <<= 1) {
            l[r] += __shfl_xor_sync(0xffffffffu, l[r], x);
#pragma unroll
            for (int i = 0; i < 8; i++) o[r][i] += __shfl_xor_sync(0xffffffffu, o[r][i], x);
        }
    }
    float *wo = dec_sm;                      // [DEC_WARPS][NR][D] the warps' accumulators
    float *wm = wo + DEC_WARPS * NR * D;     // [DEC_WARPS][NR] their maxima
    float *wl = wm + DEC_WARPS * NR;         // [DEC_WARPS][NR] their sums
    if (kg == 0) {
#pragma unroll
        for (int r = 0; r < NR; r++) {
#pragma unroll
            for (int i = 0; i < 8; i++) wo[(warp * NR + r) * D + dl * 8 + i] = o[r][i];
            if (dl == 0) wm[warp * NR + r] = m[r], wl[warp * NR + r] = l[r];
        }
    }
    __syncthreads();

    // the block's rows: warps merged in order 0..DEC_WARPS−1; out directly, or the split's partial
    const size_t R = (size_t)p.T * p.Hq;
    for (int e = threadIdx.x; e < nr * D; e += DEC_THREADS) {
        const int r = e / D, d = e % D;
        float mx = -INFINITY;
#pragma unroll
        for (int w = 0; w < DEC_WARPS; w++) mx = fmaxf(mx, wm[w * NR + r]);
        const float base = attn_base(mx);
        float acc = 0.0f, sum = 0.0f;
#pragma unroll
        for (int w = 0; w < DEC_WARPS; w++) {
            const float f = exp2f(wm[w * NR + r] - base); // 0 for a warp that saw no key
            acc += f * wo[(w * NR + r) * D + d];
            sum += f * wl[w * NR + r];
        }
        const size_t row = (size_t)t * p.Hq + h0 + r;
        if (S == 1) {
            const int has_sink = p.sinks != nullptr;
            const float sink2 = has_sink ? p.sinks[h0 + r] * AE_ATTN_LOG2E : 0.0f;
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
    unsigned *ticket = tickets + (size_t)t * gridDim.x + blockIdx.x;
    if (threadIdx.x == 0) s_last = atomicAdd(ticket, 1u) == (unsigned)(S - 1);
    __syncthreads();
    if (!s_last) return;
    __threadfence(); // the other blocks' partials are read after their tickets
    dec_merge<D, NR>(p, t, h0, nr, dec_sm);
    if (threadIdx.x == 0) *ticket = 0u; // every block of this launch has counted: ready for the next
}

// ---- host ---------------------------------------------------------------------------------------

// This backend's slot of g_dec_tickets; NULL with the error kept when the symbol is not found.
// A slot is taken per backend (first come); a ninth backend shares slot 0..7 round-robin, which
// is safe as long as two backends sharing a slot do not run this kernel at the same time.
static unsigned *dec_tickets(const ae_backend *be) {
    static const ae_backend *owner[DEC_SLOTS];
    static unsigned *addr[DEC_SLOTS];
    static int next;
    for (int i = 0; i < DEC_SLOTS; i++)
        if (owner[i] == be) return addr[i];
    void *base = NULL;
    cudaError_t e = cudaGetSymbolAddress(&base, g_dec_tickets);
    if (e != cudaSuccess) {
        cuda_check(be, e, "attention (decode tickets)");
        return NULL;
    }
    const int i = next++ % DEC_SLOTS;
    owner[i] = be;
    addr[i] = (unsigned *)base + (size_t)i * DEC_TICKETS;
    return addr[i];
}

// The split count of a launch of `blocks` blocks (per split) of which `per_sm` fit on an SM: the
// one heuristic of this kernel (attn_pick_splits: AE_ATTN_DEC_SPLIT overrides it at T = 1).
// Enough splits that the GPU holds up to DEC_PER_SM blocks an SM (more only adds merge work),
// each split at least DEC_MIN_KEYS keys: 1K keys over Qwen3-8B's 8 kv heads -> 16 splits, 128
// blocks; 4K -> 64 splits; 32K -> 66 (132 SMs x 4 blocks / 8 kv heads, at G = 4).
static int dec_pick_splits(const ae_backend *be, const attn_params *p, int blocks, int per_sm) {
    const int keys = attn_tile_keys(p, p->T * p->G); // the longest range of the T tokens
    return attn_pick_splits(be, blocks, per_sm < DEC_PER_SM ? per_sm : DEC_PER_SM, keys,
                            DEC_MIN_KEYS);
}

template <int D, int NR> static int dec_launch(const ae_backend *be, const attn_params *p0) {
    attn_params p = *p0;
    const int nhg = (p.G + NR - 1) / NR, gx = p.Hkv * nhg;
    if ((long)gx * p.T > DEC_TICKETS) return 0; // more counters than a slot has: kernel B
    unsigned *tickets = dec_tickets(be);
    if (!tickets) return 1;
    const size_t warp_smem = sizeof(float) * (size_t)DEC_WARPS * NR * (D + 2);
    int per_sm = 1;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, k_attn_decode<D, NR>, DEC_THREADS,
                                                      warp_smem) != cudaSuccess) {
        cudaGetLastError();
        per_sm = 1;
    }
    p.splits = dec_pick_splits(be, &p, gx * p.T, per_sm);
    const size_t merge_smem = sizeof(float) * (size_t)NR * p.splits; // the merge's split weights
    const size_t smem = warp_smem > merge_smem ? warp_smem : merge_smem;
    if (!attn_set_smem(be, (const void *)k_attn_decode<D, NR>, smem)) return 0;
    void *buf = NULL;
    if (p.splits > 1 && !(buf = attn_partials_alloc(be, &p))) return 1;
    dim3 grid((unsigned)gx, (unsigned)p.splits, (unsigned)p.T);
    k_attn_decode<D, NR><<<grid, DEC_THREADS, smem, stream_of(be)>>>(p, tickets);
    cuda_check(be, cudaGetLastError(), "attention");
    if (buf) cuda_tmp_free(be, buf);
    return 1;
}

// NR: the fewest rows (1, 2, 4, 8) covering a kv head's G query heads; G > 8: groups of 8.
template <int D> static int dec_pick_rows(const ae_backend *be, const attn_params *p) {
    if (p->G <= 1) return dec_launch<D, 1>(be, p);
    if (p->G <= 2) return dec_launch<D, 2>(be, p);
    if (p->G <= 4) return dec_launch<D, 4>(be, p);
    return dec_launch<D, 8>(be, p);
}

int attn_decode_enabled(void) {
    const char *env = getenv("AE_ATTN_DECODE");
    if (!env || !*env) return DECODE_KERNEL_DEFAULT_ON;
    return strcmp(env, "0") != 0;
}

int attn_decode_run(const ae_backend *be, const attn_params *p, const float *lse2) {
    if (lse2 || p->pages || !attn_decode_enabled()) return 0;
    if (p->T * p->G > DEC_MAX_ROWS || p->dk != p->dv) return 0;
    if (p->dk == 128) return dec_pick_rows<128>(be, p);
    if (p->dk == 64) return dec_pick_rows<64>(be, p);
    return 0;
}
