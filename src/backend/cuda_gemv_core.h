// The weight-streaming core of the CUDA backend's GEMVs, shared by the decode GEMVs of Linear
// layers (cuda_gemm.cu: k_gemv, k_gemv_set, k_gemv_swiglu) and of MoE experts
// (cuda_moe_decode.cu), so that all of them add the same products in the same order and stream
// weights the same way (~90% of the copy rate at 4096-wide rows on an H200).
#ifndef AE_BACKEND_CUDA_GEMV_CORE_H
#define AE_BACKEND_CUDA_GEMV_CORE_H

#include <stdint.h>

#include "backend/cuda_internal.h"

// 16 bytes of weights: read-only path, no L1 allocation (each byte is used once), and a hint to
// fetch the surrounding 256 bytes into L2 (the next chunks of the row, read a step later).
__device__ __forceinline__ uint4 ld_weights16(const bf16 *p) {
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    return v;
}

// d (16 x 8, fp32) += a (16 x 16, bf16, rows 8..15 zero) · b (16 x 8, bf16): a0 / a1 are the
// lane's two registers of rows 0..7, b0 / b1 its two of B.
__device__ __forceinline__ void mma_bf16_16816(float d[4], uint32_t a0, uint32_t a1, uint32_t b0,
                                               uint32_t b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
        "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(0u), "r"(a1), "r"(0u), "r"(b0), "r"(b1));
}

// One warp's share of a tile's fp32 sums, into acc (the mma accumulator, zero at the start): its
// chunks q, q + kw, .. below `chunks`, J per step; `full` chunks lie wholly inside K. wp, xp: the
// lane's weight and x row at the chunk's 8·t offset; has_x: the lane's x row exists (else zeros).
// PIPE: software pipelining, the loads of step i + 1 in flight during the mmas of step i. Shared
// by every kernel of path 1 and the MoE decode GEMVs: they all add the same products in the same
// order.
template <int J, bool PIPE>
__device__ __forceinline__ void gemv_warp_sums(float (&acc)[4], const bf16 *__restrict__ wp,
                                               const bf16 *__restrict__ xp, bool has_x, int q,
                                               int full, int chunks, int kw, int K, int t) {
    const uint4 zero = make_uint4(0, 0, 0, 0);
    // a step: the J whole chunks q, q + kw, .. (no predicates), all loads before any use
    auto load_step = [&](int q0, uint4 (&wv)[J], uint4 (&xv)[J]) {
#pragma unroll
        for (int j = 0; j < J; j++) {
            wv[j] = ld_weights16(wp + 32 * (size_t)(q0 + j * kw));
            xv[j] = __ldg((const uint4 *)(xp + 32 * (size_t)(q0 + j * kw)));
        }
    };
    auto mma_step = [&](const uint4 (&wv)[J], uint4 (&xv)[J]) {
#pragma unroll
        for (int j = 0; j < J; j++) {
            if (!has_x) xv[j] = zero;
            mma_bf16_16816(acc, xv[j].x, xv[j].y, wv[j].x, wv[j].y);
            mma_bf16_16816(acc, xv[j].z, xv[j].w, wv[j].z, wv[j].w);
        }
    };
    if (PIPE) { // the next step's loads issued before this step's mmas: same sums, same order
        if (q + (J - 1) * kw < full) {
            uint4 wv[J], xv[J];
            load_step(q, wv, xv);
            for (q += J * kw; q + (J - 1) * kw < full; q += J * kw) {
                uint4 wn[J], xn[J];
                load_step(q, wn, xn);
                mma_step(wv, xv);
#pragma unroll
                for (int j = 0; j < J; j++) wv[j] = wn[j], xv[j] = xn[j];
            }
            mma_step(wv, xv);
        }
    } else {
        for (; q + (J - 1) * kw < full; q += J * kw) {
            uint4 wv[J], xv[J];
            load_step(q, wv, xv);
            mma_step(wv, xv);
        }
    }
    for (; q < chunks; q += kw) { // the rest, one chunk at a time (the last may be partial)
        uint4 wv = zero, xv = zero;
        if (32 * q + 8 * t < K) {
            wv = ld_weights16(wp + 32 * (size_t)q);
            if (has_x) xv = __ldg((const uint4 *)(xp + 32 * (size_t)q));
        }
        mma_bf16_16816(acc, xv.x, xv.y, wv.x, wv.y);
        mma_bf16_16816(acc, xv.z, xv.w, wv.z, wv.w);
    }
}

// Warps per GEMV tile (log2, at most max_shift): more while the grid holds fewer than wps warps
// per SM and each warp keeps at least two steps of j chunks. tiles: the launch's tiles; chunks:
// 32-value chunks of a row (or of a split's share).
static inline int gemv_pick_kw_shift(int64_t tiles, int chunks, int sm_count, int wps, int j,
                                     int max_shift) {
    int shift = 0;
    while (shift < max_shift && chunks >= 2 * j * (2 << shift) &&
           (tiles << shift) < (int64_t)wps * sm_count)
        shift++;
    return shift;
}

#endif
