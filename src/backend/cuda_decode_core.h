// Private to the two decode kernels of the CUDA backend: the block body they share.
//   kernel G, k_attn_decode (cuda_attention_decode.cu): contiguous / ring caches (attn_key_off);
//   k_paged_decode (cuda_paged_decode.cu): the serving engine's rows through the block table.
// Each kernel keeps what differs: its parameters, where a row's keys are (a key-address functor),
// its key range and split count, its ticket table and its host launcher. Everything from the
// query load to the split merge is here, once, so the two cannot drift apart: the same
// operations in the same order give the same bits in both (the GPU tests compare both against
// the CPU reference and check the bits are stable over calls).
//
// Block (DEC_WARPS warps) of kv head kvh, query heads h0 .. h0 + nr − 1 (nr <= NR, the rows past
// nr are zeros, never written), token / row z (grid z) and split `split` of S, keys [kb, ke):
// warp w takes the key batches w, w + DEC_WARPS, ... of BK keys. A K or V row is D/8 lanes x 16
// bytes (LPK lanes per key; the warp's 32 lanes read KG = 32 / LPK keys at once), U such steps
// per batch: 2U 16-byte loads in flight per lane. Each lane keeps all NR query rows for its 8 dims
// in registers; a score is the lane's 8-dim partial dot summed over the LPK lanes of its key (xor
// butterfly). Online softmax per row in fp32, log2 units (P never rounded to bf16), the running
// max uniform over the warp (batch max over the KG key groups), sums and accumulators per key
// group until the end, then added over the key groups (butterfly). The warps' (m, l, o) are
// merged through shared memory in warp order 0..DEC_WARPS−1, into `out` (S = 1) or the split's
// partial (cuda_attention.h's format, R rows). S > 1: the block takes a ticket (atomicAdd on the
// counter of its (z, head group)); the block drawing ticket S − 1 merges the S partials in split
// order 0..S−1 (the same arithmetic whichever block is last), adds the sink, writes `out` and
// sets the counter back to 0 (the next launch or graph replay finds zeros).
//
// Two key loops fill the same (o, m, l) (AE_DEC_PIPE, dec_pipe_enabled; a template flag PIPE of
// both kernels): the batched loop above (PIPE = false: a batch's loads, then its compute, then the
// next batch's loads) and the pipelined one (PIPE = true, dec_keys_pipe): each warp copies its key
// batches by cp.async into its own ring of DEC_PIPE_ST shared-memory stages (ST − 1 batches in
// flight while it computes one, no registers held for them), scores on the tensor cores (the q
// rows as the A operand, a batch of 8 keys as B: one 16-byte chunk per lane is a B fragment
// when q uses the same order of dims) and P·V in fp32 as before (P never rounded).
//
// The parameter block P of either kernel must have: q (rows of Hq·D), k, v (bf16 caches), out,
// sinks (or null), opart / mpart / lpart (S > 1), Hq, G, scale_log2 (scale · log2 e).
#ifndef AE_BACKEND_CUDA_DECODE_CORE_H
#define AE_BACKEND_CUDA_DECODE_CORE_H

#include <stdlib.h>
#include <string.h>

#include "backend/cuda_attention.h"

#define DEC_WARPS 4
#define DEC_THREADS (DEC_WARPS * 32)

template <int D> struct dec_cfg {
    static constexpr int LPK = D / 8;     // lanes per key row (16-byte chunks)
    static constexpr int KG = 32 / LPK;   // keys a warp reads at once
    static constexpr int U = 4;           // steps per batch
    static constexpr int BK = KG * U;     // keys per warp batch
    static_assert(D % 8 == 0 && 32 % LPK == 0, "a key row must split evenly over the lanes");
};

// The pipelined loop (dec_keys_pipe). Batch: 8 keys (the mma's n). Lane (g = lane / 4, c = lane
// % 4) copies K of key g of the batch, dims 32s + 8c .. + 7 for each span s (KS chunks: the B
// fragments of 2·KS k16-slices); lane (kg, dl) as in dec_cfg copies V of VU keys (dims 8·dl ..
// + 7): NCH 16-byte chunks a lane per batch, in stage slots [chunk][lane] (a warp's LDS.128 of
// one chunk reads 512 contiguous bytes: no bank conflicts).
#ifndef DEC_PIPE_ST
#define DEC_PIPE_ST 4 // ring stages per warp: 3 batches in flight while one is computed
#endif
template <int D> struct dec_pipe_cfg {
    static constexpr int KB = 8;                        // keys per warp batch
    static constexpr int KS = D / 32;                   // K chunks per lane (32-dim spans)
    static constexpr int LPK = D / 8, KG = 32 / LPK;    // V: as dec_cfg (lanes per key, keys a step)
    static constexpr int VU = KB / KG;                  // V chunks per lane
    static constexpr int NCH = KS + VU;                 // chunks a lane copies per batch
    static constexpr int STAGE = NCH * 32 * 16;         // bytes of one stage of a warp
    static constexpr int WARP = DEC_PIPE_ST * STAGE;    // bytes of a warp's ring
    static_assert(D % 32 == 0 && VU % 2 == 0 && KG * VU == KB, "decode pipe: D 64 or 128");
};

// Shared memory of the block body (bytes): the warps' accumulators, maxima and sums, and with
// PIPE the warps' rings after them (the rings must not overlap what a warp that is done writes
// while others still copy); the launcher takes the larger of this and dec_merge_smem.
template <int D, int NR> constexpr size_t dec_warp_smem() {
    return sizeof(float) * (size_t)DEC_WARPS * NR * (D + 2);
}
template <int D, int NR, bool PIPE> constexpr size_t dec_block_smem() {
    return dec_warp_smem<D, NR>() + (PIPE ? (size_t)DEC_WARPS * dec_pipe_cfg<D>::WARP : 0);
}
// The merge's NR x S split maxima, then weights, and NR x S sums (bytes).
inline size_t dec_merge_smem(int NR, int S) { return 2 * sizeof(float) * (size_t)NR * S; }

// Where a block is: kv head, first query head h0 and real rows nr of its head group (NR rows,
// G / NR groups per kv head, rounded up), its split (grid y) and token / row z (grid z).
struct dec_where {
    int kvh, h0, nr, split, z;
};

template <int NR> __device__ __forceinline__ dec_where dec_where_of(int G) {
    const int nhg = (G + NR - 1) / NR;
    const int kvh = blockIdx.x / nhg, hg = blockIdx.x % nhg;
    dec_where b;
    b.kvh = kvh;
    b.h0 = kvh * G + hg * NR;
    b.nr = G - hg * NR < NR ? G - hg * NR : NR;
    b.split = blockIdx.y;
    b.z = blockIdx.z;
    return b;
}

// Split `split` of S of the keys [kb, ke): chunks of ⌈n / S⌉ rounded up to a multiple of
// DEC_SPLIT_ALIGN keys (whole 32-key tiles: a split's batches start on the same key offsets as an
// unsplit walk; bench_attn --decode at Qwen3-8B heads, 4K keys: 32 splits of 128 keys 14.8 µs
// against 33 of 125 keys 15.7 µs, 2026-11-30), trailing ones possibly empty (their partial then
// m = −inf, l = 0: weight 0 in the merge).
#define DEC_SPLIT_ALIGN 32
__device__ __forceinline__ void dec_split_range(int S, int split, int &kb, int &ke) {
    if (S > 1) {
        const int chunk = ((ke - kb + S - 1) / S + DEC_SPLIT_ALIGN - 1) / DEC_SPLIT_ALIGN *
                          DEC_SPLIT_ALIGN;
        const long b = (long)kb + (long)split * chunk;
        kb = b < ke ? (int)b : ke;
        if (ke - kb > chunk) ke = kb + chunk;
    }
}

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
    // dst is 4 elements into a row of D of out (4-byte aligned or better): bf16x2 stores
    *reinterpret_cast<uint32_t *>(dst) = pack_bf16(x.x, x.y);
    *reinterpret_cast<uint32_t *>(dst + 2) = pack_bf16(x.z, x.w);
}

// The last block of a (z, head group): merges the S partials of its nr rows in split order,
// writes out. R: rows of a partial (grid z · Hq); wts: dec_merge_smem bytes of shared memory.
template <int D, int NR, class P>
__device__ __forceinline__ void dec_merge(const P &p, size_t R, int z, int h0, int nr, int S,
                                          float *wts) {
    __shared__ float s_inv[NR];
    float *sums = wts + NR * S; // [NR][S] the splits' sums
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int i = warp; i < nr; i += DEC_WARPS) {
        const size_t row = (size_t)z * p.Hq + h0 + i;
        // the splits' maxima and sums in one round of L2 loads (the tail's latency), kept in
        // shared memory by the lane that loaded them (it alone reads them back: no barrier)
        float mx = -INFINITY;
        for (int s = lane; s < S; s += 32) {
            const float ms = __ldcg(p.mpart + s * R + row);
            wts[i * S + s] = ms;
            sums[i * S + s] = __ldcg(p.lpart + s * R + row);
            mx = fmaxf(mx, ms);
        }
        for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
        const int has_sink = p.sinks != nullptr;
        const float sink2 = has_sink ? p.sinks[h0 + i] * AE_ATTN_LOG2E : -INFINITY;
        const float base = attn_base(has_sink ? fmaxf(mx, sink2) : mx);
        float den = 0.0f;
        for (int s = lane; s < S; s += 32) {
            const float ws = exp2f(wts[i * S + s] - base); // 0: split saw no key
            wts[i * S + s] = ws;
            den += ws * sums[i * S + s];
        }
        for (int o = 16; o > 0; o >>= 1) den += __shfl_xor_sync(0xffffffffu, den, o);
        if (has_sink) den += exp2f(sink2 - base);
        if (lane == 0) s_inv[i] = den > 0.0f ? 1.0f / den : 0.0f;
    }
    __syncthreads();
    // thread: 4 consecutive columns of one row; splits summed in order 0..S−1, 16 loads in flight
    // (the merge is the launch's serial tail: its L2 latency, not its bytes, is the cost)
    for (int e = threadIdx.x; e < nr * (D / 4); e += DEC_THREADS) {
        const int i = e / (D / 4), c = (e % (D / 4)) * 4;
        const size_t row = (size_t)z * p.Hq + h0 + i;
        const float *src = p.opart + row * D + c;
        const float *w = wts + i * S;
        float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll 16
        for (int s = 0; s < S; s++) {
            const float4 x = __ldcg(reinterpret_cast<const float4 *>(src + (size_t)s * R * D));
            acc.x += w[s] * x.x, acc.y += w[s] * x.y, acc.z += w[s] * x.z, acc.w += w[s] * x.w;
        }
        const float f = s_inv[i];
        dec_store_bf16x4(p.out + row * D + c, make_float4(acc.x * f, acc.y * f, acc.z * f, acc.w * f));
    }
}

// The batched key loop (AE_DEC_PIPE=0): warp w takes the batches w, w + DEC_WARPS, ... of BK keys
// of [kb, ke), loads a batch (2U 16-byte loads a lane), then computes it. Leaves o[i][·]: the
// lane's key group's accumulator of row i, dims 8·dl .. + 7 (summed over the key groups by the
// caller); m[i], l[i]: the warp's max and sum of row i, the same in every lane.
template <int D, int NR, class P, class K>
__device__ __forceinline__ void dec_keys_batched(const P &p, const K &key, const dec_where &b,
                                                 int kb, int ke, float (&o)[NR][8], float (&m)[NR],
                                                 float (&l)[NR]) {
    typedef dec_cfg<D> C;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int kg = lane / C::LPK, dl = lane % C::LPK; // key group, 8-dim chunk of the lane
    const int h0 = b.h0, nr = b.nr, z = b.z;

    float q[NR][8]; // q[i][e]: dim 8·dl + e of query head h0 + i
#pragma unroll
    for (int i = 0; i < NR; i++) {
        uint4 u = make_uint4(0u, 0u, 0u, 0u);
        if (i < nr)
            u = __ldg(reinterpret_cast<const uint4 *>(p.q + ((size_t)z * p.Hq + h0 + i) * D + dl * 8));
        dec_unpack(u, q[i]);
    }
#pragma unroll
    for (int i = 0; i < NR; i++) {
        m[i] = -INFINITY, l[i] = 0.0f;
#pragma unroll
        for (int e = 0; e < 8; e++) o[i][e] = 0.0f;
    }
    const bf16 *kh = p.k + (size_t)b.kvh * D + dl * 8, *vh = p.v + (size_t)b.kvh * D + dl * 8;

    for (int j0 = kb + warp * C::BK; j0 < ke; j0 += DEC_WARPS * C::BK) {
        uint4 kr[C::U], vr[C::U]; // all loads of the batch first: 2U in flight per lane
#pragma unroll
        for (int u = 0; u < C::U; u++) {
            const int j = j0 + u * C::KG + kg;
            kr[u] = vr[u] = make_uint4(0u, 0u, 0u, 0u);
            if (j < ke) { // keys past the range are never read (unwritten cache rows / page slots)
                typename K::off_t ko, vo;
                key(j, ko, vo);
                kr[u] = __ldg(reinterpret_cast<const uint4 *>(kh + ko));
                vr[u] = __ldg(reinterpret_cast<const uint4 *>(vh + vo));
            }
        }
        float s[NR][C::U]; // scores of the lane's keys (log2 units), then their weights
#pragma unroll
        for (int u = 0; u < C::U; u++) {
            float kf[8];
            dec_unpack(kr[u], kf);
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
            dec_unpack(vr[u], vf);
#pragma unroll
            for (int i = 0; i < NR; i++)
#pragma unroll
                for (int e = 0; e < 8; e++) o[i][e] = fmaf(s[i][u], vf[e], o[i][e]);
        }
    }
    // the warp's sums over its key groups (xor butterfly: every lane gets the same bits)
#pragma unroll
    for (int i = 0; i < NR; i++)
#pragma unroll
        for (int x = C::LPK; x < 32; x <<= 1) l[i] += __shfl_xor_sync(0xffffffffu, l[i], x);
}

// V chunk u of lane (key group kg) in a batch, and the lane of each quad whose scores hold its key.
// Scores: lane c of row i's quad holds keys 2c (x0 when c is even) and 2c + 1. With b = u % 2,
// a = u / 2: the lane takes key 2·vsrc + (kg & 1) from quad lane vsrc = (a·KG + kg) ^ b, and a
// source offers in shuffle b the element (c & 1) ^ b: (vsrc & 1) ^ b = kg & 1, the one asked
// for. Over (kg, u) the keys 0..7 come once each (D 128: kg 0 takes 0 4 2 6, kg 1 takes 3 7 1 5).
template <int D> __device__ __forceinline__ int dec_pipe_vsrc(int u, int kg) {
    return ((u >> 1) * dec_pipe_cfg<D>::KG + kg) ^ (u & 1);
}
template <int D> __device__ __forceinline__ int dec_pipe_vkey(int u, int kg) {
    return 2 * dec_pipe_vsrc<D>(u, kg) + (kg & 1);
}

// Queues the copies of the batch of keys j0 .. j0 + 7 (those < ke; the others zero-filled, never
// read) into `stage` (cp.async, one commit group by the caller). k, v: the kv head's columns.
template <int D, class K>
__device__ __forceinline__ void dec_pipe_issue(const K &key, const bf16 *k, const bf16 *v, int j0,
                                               int ke, char *stage, int lane) {
    typedef dec_pipe_cfg<D> C;
    const int g = lane >> 2, c = lane & 3, kg = lane / C::LPK, dl = lane % C::LPK;
    {
        const int j = j0 + g;
        typename K::off_t ko = 0, vo = 0;
        if (j < ke) key(j, ko, vo);
        const bf16 *src = k + ko + 8 * c; // (KS spans of 32 dims) key g's dims 32s + 8c ..
#pragma unroll
        for (int s = 0; s < C::KS; s++) cp_async16(stage + (s * 32 + lane) * 16, src + 32 * s, j < ke);
    }
#pragma unroll
    for (int u = 0; u < C::VU; u++) {
        const int j = j0 + dec_pipe_vkey<D>(u, kg);
        typename K::off_t ko = 0, vo = 0;
        if (j < ke) key(j, ko, vo);
        cp_async16(stage + ((C::KS + u) * 32 + lane) * 16, v + vo + 8 * dl, j < ke);
    }
}

// One batch (keys j0 .. j0 + 7, its chunks in `stage`) into the lane's state. Scores: S = Q·Kᵀ on
// the tensor cores, rows g of the mma = query rows (rows >= nr and 8..15 zeros), lane (g, c) gets
// the scores of row g for keys 2c, 2c + 1; mc, lc: row g's running max (the same over the quad)
// and the lane's share of its sum. P·V in fp32 in the V layout of dec_keys_batched: lane (kg, dl)
// takes p of row i for its key u from lane 4i + dec_pipe_vsrc (one shuffle: the source offers
// x0 or x1 so that every lane gets its own key; see dec_pipe_vkey).
template <int D, int NR>
__device__ __forceinline__ void dec_pipe_batch(const uint32_t (&qa)[dec_pipe_cfg<D>::KS][4],
                                               const char *stage, int j0, int ke, float scale_log2,
                                               float (&o)[NR][8], float &mc, float &lc, int lane) {
    typedef dec_pipe_cfg<D> C;
    const int c = lane & 3, kg = lane / C::LPK;
    // scores of the even / odd spans: two independent mma chains, added at the end
    float acc[2][4] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
#pragma unroll
    for (int s = 0; s < C::KS; s++) {
        const uint4 kr = *reinterpret_cast<const uint4 *>(stage + (s * 32 + lane) * 16);
        const uint32_t a0[4] = {qa[s][0], 0u, qa[s][1], 0u}, a1[4] = {qa[s][2], 0u, qa[s][3], 0u};
        mma_bf16(acc[s & 1], a0, kr.x, kr.y); // k16-slice: dims 32s + 8c + {0..3} of the quad
        mma_bf16(acc[s & 1], a1, kr.z, kr.w); //           dims 32s + 8c + {4..7}
    }
    const int jk = j0 + 2 * c;
    const float s0 = jk < ke ? (acc[0][0] + acc[1][0]) * scale_log2 : -INFINITY;
    const float s1 = jk + 1 < ke ? (acc[0][1] + acc[1][1]) * scale_log2 : -INFINITY;
    const float mn = fmaxf(mc, quad_max(fmaxf(s0, s1))), base = attn_base(mn);
    const float al = exp2f(mc - base); // 0 while nothing was seen
    mc = mn;
    const float p0 = exp2f(s0 - base), p1 = exp2f(s1 - base); // 0 for a key past the range
    lc = lc * al + p0 + p1;
    const float x0 = (c & 1) ? p1 : p0, x1 = (c & 1) ? p0 : p1; // offered in shuffles b = 0, 1
    float vf[C::VU][8];
#pragma unroll
    for (int u = 0; u < C::VU; u++)
        dec_unpack(*reinterpret_cast<const uint4 *>(stage + ((C::KS + u) * 32 + lane) * 16), vf[u]);
#pragma unroll
    for (int i = 0; i < NR; i++) {
        const float ai = __shfl_sync(0xffffffffu, al, 4 * i);
#pragma unroll
        for (int e = 0; e < 8; e++) o[i][e] *= ai;
#pragma unroll
        for (int u = 0; u < C::VU; u++) {
            const float pu = __shfl_sync(0xffffffffu, (u & 1) ? x1 : x0, 4 * i + dec_pipe_vsrc<D>(u, kg));
#pragma unroll
            for (int e = 0; e < 8; e++) o[i][e] = fmaf(pu, vf[u][e], o[i][e]);
        }
    }
}

// The pipelined key loop (AE_DEC_PIPE=1): the same work split and result as dec_keys_batched
// (batches of 8 keys here), through the warp's ring `ring` (dec_pipe_cfg::WARP bytes): batch
// t + ST − 1 is queued into the stage computed last before batch t is waited for, so ST − 1
// batches stay in flight. Every lane commits a group per batch slot (empty past the warp's last
// batch) so that wait_group's count holds.
template <int D, int NR, class P, class K>
__device__ __forceinline__ void dec_keys_pipe(const P &p, const K &key, const dec_where &b, int kb,
                                              int ke, char *ring, float (&o)[NR][8],
                                              float (&m)[NR], float (&l)[NR]) {
    typedef dec_pipe_cfg<D> C;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, c = lane & 3;
    const bf16 *kh = p.k + (size_t)b.kvh * D, *vh = p.v + (size_t)b.kvh * D;
    const int step = DEC_WARPS * C::KB, first = kb + warp * C::KB;
    const int nb = first < ke ? (ke - first + step - 1) / step : 0; // this warp's batches
#pragma unroll
    for (int t = 0; t < DEC_PIPE_ST - 1; t++) {
        if (t < nb) dec_pipe_issue<D>(key, kh, vh, first + t * step, ke, ring + t * C::STAGE, lane);
        cp_async_commit();
    }
    uint32_t qa[C::KS][4]; // (A fragments) row g's dims 32s + 8c .. + 7; rows >= nr zeros
#pragma unroll
    for (int s = 0; s < C::KS; s++) {
        uint4 u = make_uint4(0u, 0u, 0u, 0u);
        if (g < b.nr)
            u = __ldg(reinterpret_cast<const uint4 *>(p.q + ((size_t)b.z * p.Hq + b.h0 + g) * D +
                                                      32 * s + 8 * c));
        qa[s][0] = u.x, qa[s][1] = u.y, qa[s][2] = u.z, qa[s][3] = u.w;
    }
#pragma unroll
    for (int i = 0; i < NR; i++)
#pragma unroll
        for (int e = 0; e < 8; e++) o[i][e] = 0.0f;
    float mc = -INFINITY, lc = 0.0f;
    for (int t = 0; t < nb; t++) {
        const int tn = t + DEC_PIPE_ST - 1; // into the stage of batch t − 1, computed already
        if (tn < nb)
            dec_pipe_issue<D>(key, kh, vh, first + tn * step, ke, ring + (tn % DEC_PIPE_ST) * C::STAGE, lane);
        cp_async_commit();
        cp_async_wait<DEC_PIPE_ST - 1>(); // this lane's copies of batch t have landed
        dec_pipe_batch<D, NR>(qa, ring + (t % DEC_PIPE_ST) * C::STAGE, first + t * step, ke,
                              p.scale_log2, o, mc, lc, lane);
    }
    lc = quad_sum(lc);
#pragma unroll
    for (int i = 0; i < NR; i++) {
        m[i] = __shfl_sync(0xffffffffu, mc, 4 * i);
        l[i] = __shfl_sync(0xffffffffu, lc, 4 * i);
    }
}

// The block body. key(j, ko, vo): element offsets from k and v of key j's rows (ko, vo of the
// functor's off_t); keys outside [kb, ke) are never asked for. R: rows of a partial (grid z · Hq);
// sm: the block's dynamic shared memory (dec_block_smem<D, NR, PIPE>, and dec_merge_smem);
// tickets: the kernel's ticket slot (index z · gridDim.x + blockIdx.x), used when S > 1.
template <int D, int NR, bool PIPE, class P, class K>
__device__ __forceinline__ void dec_block(const P &p, const K &key, const dec_where &b, size_t R,
                                          int S, int kb, int ke, float *sm, unsigned *tickets) {
    typedef dec_cfg<D> C;
    __shared__ int s_last;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int kg = lane / C::LPK, dl = lane % C::LPK; // key group, 8-dim chunk of the lane
    const int h0 = b.h0, nr = b.nr, z = b.z;
    float o[NR][8], m[NR], l[NR];
    if constexpr (PIPE)
        dec_keys_pipe<D, NR>(p, key, b, kb, ke,
                             reinterpret_cast<char *>(sm) + dec_warp_smem<D, NR>() +
                                 (size_t)warp * dec_pipe_cfg<D>::WARP,
                             o, m, l);
    else
        dec_keys_batched<D, NR>(p, key, b, kb, ke, o, m, l);
    // the warp's accumulators over its key groups (xor butterfly: every lane gets the same bits)
#pragma unroll
    for (int i = 0; i < NR; i++)
#pragma unroll
        for (int x = C::LPK; x < 32; x <<= 1)
#pragma unroll
            for (int e = 0; e < 8; e++) o[i][e] += __shfl_xor_sync(0xffffffffu, o[i][e], x);
    float *wo = sm;                       // [DEC_WARPS][NR][D] the warps' accumulators
    float *wm = wo + DEC_WARPS * NR * D;  // [DEC_WARPS][NR] their maxima
    float *wl = wm + DEC_WARPS * NR;      // [DEC_WARPS][NR] their sums
    if (kg == 0) {
#pragma unroll
        for (int i = 0; i < NR; i++) {
#pragma unroll
            for (int e = 0; e < 8; e++) wo[(warp * NR + i) * D + dl * 8 + e] = o[i][e];
            if (dl == 0) wm[warp * NR + i] = m[i], wl[warp * NR + i] = l[i];
        }
    }
    __syncthreads();

    // the block's rows: warps merged in order 0..DEC_WARPS−1; out directly, or the split's partial
    for (int e = threadIdx.x; e < nr * D; e += DEC_THREADS) {
        const int i = e / D, d = e % D;
        float mx = -INFINITY;
#pragma unroll
        for (int w = 0; w < DEC_WARPS; w++) mx = fmaxf(mx, wm[w * NR + i]);
        const float base = attn_base(mx);
        float acc = 0.0f, sum = 0.0f;
#pragma unroll
        for (int w = 0; w < DEC_WARPS; w++) {
            const float f = exp2f(wm[w * NR + i] - base); // 0 for a warp that saw no key
            acc += f * wo[(w * NR + i) * D + d];
            sum += f * wl[w * NR + i];
        }
        const size_t row = (size_t)z * p.Hq + h0 + i;
        if (S == 1) {
            const int has_sink = p.sinks != nullptr;
            const float sink2 = has_sink ? p.sinks[h0 + i] * AE_ATTN_LOG2E : 0.0f;
            p.out[row * D + d] = __float2bfloat16_rn(acc * attn_out_scale(mx, sum, has_sink, sink2));
        } else {
            const size_t pr = (size_t)b.split * R + row;
            p.opart[pr * D + d] = acc;
            if (d == 0) p.mpart[pr] = mx, p.lpart[pr] = sum;
        }
    }
    if (S == 1) return;

    // ticket: the partial is visible device-wide before the count says it is there
    __threadfence();
    __syncthreads();
    unsigned *ticket = tickets + (size_t)z * gridDim.x + blockIdx.x;
    if (threadIdx.x == 0) s_last = atomicAdd(ticket, 1u) == (unsigned)(S - 1);
    __syncthreads();
    if (!s_last) return;
    __threadfence(); // the other blocks' partials are read after their tickets
    dec_merge<D, NR>(p, R, z, h0, nr, S, sm);
    if (threadIdx.x == 0) *ticket = 0u; // all S blocks of this (z, group) counted: ready again
}

// ---- host ---------------------------------------------------------------------------------------

#ifndef DEC_PIPE_DEFAULT_ON
// AE_DEC_PIPE unset: the pipelined key loop (1) or the batched one (0). On since the H200 run of
// 2026-11-30 07:05 UTC (bench_attn --decode, Qwen3-8B heads: 1K 10.44 -> 9.51 us, 4K 16.81 ->
// 15.67, 32K 55.46 -> 48.65 (69% of copy); bench_infer's graphed Qwen3-8B decode 77.4 -> 78.8% /
// 77.4 -> 81.0% of the bandwidth limit at 4K / 32K; every GPU test passed with both loops).
#define DEC_PIPE_DEFAULT_ON 1
#endif
#define DEC_PIPE_PER_SM 2 // resident blocks per SM the split choice aims for with the pipelined loop

// AE_DEC_PIPE: the key loop of both decode kernels: 0 = batched, unset = DEC_PIPE_DEFAULT_ON, else
// pipelined. Read at every call, as AE_ATTN_DECODE (bench_attn --decode A/Bs both in one process;
// a graph keeps its recording's choice).
static inline int dec_pipe_enabled(void) {
    const char *env = getenv("AE_DEC_PIPE");
    if (!env || !*env) return DEC_PIPE_DEFAULT_ON;
    return strcmp(env, "0") != 0;
}

// Backend be's slot of a kernel's ticket table (`table`: the address of its __device__ array of
// SLOTS x PER counters, each translation unit its own; `what` names it in an error); NULL with
// the error kept when the symbol is not found. A slot is taken per backend (first come); a
// backend past SLOTS shares one round-robin, safe as long as two backends sharing a slot do not
// run the kernel at the same time. Static: each kernel's file has its own owners.
template <int SLOTS, int PER>
static unsigned *dec_ticket_slot(const ae_backend *be, const void *table, const char *what) {
    static const ae_backend *owner[SLOTS];
    static unsigned *addr[SLOTS];
    static int next;
    for (int i = 0; i < SLOTS; i++)
        if (owner[i] == be) return addr[i];
    void *base = NULL;
    cudaError_t e = cudaGetSymbolAddress(&base, table);
    if (e != cudaSuccess) {
        cuda_check(be, e, what);
        return NULL;
    }
    const int i = next++ % SLOTS;
    owner[i] = be;
    addr[i] = (unsigned *)base + (size_t)i * PER;
    return addr[i];
}

#endif
