// B. FlashAttention-2 style attention on tensor cores (mma.sync m16n8k16 bf16 -> fp32), for the
// head dims of the instantiations below. See cuda_attention.cu for when it runs.
//
// Block: 4 warps, ROWS = 64·MW query rows of ONE kv head (GQA packing). Packed row pr = t·G + i
// (token t, query head kvh·G + i) for pr < T·G; a block owns pr = ROWS·tile .. ROWS·tile +
// ROWS − 1 (rows past T·G are padding: computed on zeros, never written). Warp w owns rows
// 16·MW·w .. as MW m-atoms of 16 rows; in m-atom m, lane holds rows g = lane/4 and g + 8 (the
// mma accumulator layout, cuda_attention.h). MW = 2 (prefill) lets every K/V fragment loaded
// from shared memory feed two m-atoms; MW = 1 (decode, short chunks) keeps Q in registers.
//
// Per key tile of BN keys (j0 .. j0 + BN − 1), all in the warp's registers:
//   S (16 x BN fp32 per m-atom) = Q·Kᵀ: Q fragments from shared memory (MW = 1: once, kept in
//     registers); K fragments by ldmatrix from the K tile stored [key][d] (a K row is exactly
//     the "col" B operand).
//   mask (only on tiles not fully visible to every row): key j of row (position pos, first
//     visible lo) is kept when j < key end, j <= pos and j >= lo; others become −inf.
//   online softmax per row in log2 units (quad shuffles give the row max across the 4 lanes that
//     share a row), P = exp2(S − m) rounded to bf16: n8 tiles 2i, 2i+1 of S form the A fragment
//     of k-step i of P·V directly (a0,a1 = tile 2i rows g, g+8; a2,a3 = tile 2i+1).
//   O (16 x DV fp32 per m-atom) += P·V: V fragments by ldmatrix.trans from the V tile [key][d].
// K/V tiles are fetched with cp.async (16-byte chunks, each key row addressed on its own by
// attn_key_off: contiguous, ring buffer or pages; row strides) into two buffers: tile i+1 is in
// flight while tile i is computed. Keys past the block's range are zero-filled. Shared rows are padded by 8 elements (16 bytes), so
// the 8 row addresses of an ldmatrix hit distinct bank groups.
//
// Optional output for the backward (attn_flash_run_lse, cuda_attention.h): lse2 (T·Hq, F32,
// row t·Hq + h) = log2 of the row's softmax denominator in log2 units (sink included), so that
// p_j = exp2(s2_j − lse2): ae_attn_args.lse of a training forward, or the backward's own
// recomputation (cuda_attention_bwd_tc.cu) — the same launch either way (unsplit; the same MW
// choice), so the two give the same bits. `out` is computed exactly as without it.
#include "backend/cuda_attention.h"

template <int DK, int DV, int BN, int MW> struct flash_cfg {
    static constexpr int ROWS = 64 * MW, THREADS = 128;
    static constexpr int QLD = DK + 8, KLD = DK + 8, VLD = DV + 8; // shared row strides (elements)
    static constexpr size_t SMEM =
        sizeof(bf16) * ((size_t)ROWS * QLD + 2 * (size_t)BN * KLD + 2 * (size_t)BN * VLD);
    static_assert(DK % 16 == 0 && DV % 16 == 0 && BN % 16 == 0, "tile shapes");
    static_assert((BN * (DK / 8)) % THREADS == 0 && (BN * (DV / 8)) % THREADS == 0 &&
                      (ROWS * (DK / 8)) % THREADS == 0, "whole 16-byte chunks per thread");
};

template <int DK, int DV, int BN, int MW>
__global__ void __launch_bounds__(128) k_attn_flash(const attn_params p, float *lse2) {
    typedef flash_cfg<DK, DV, BN, MW> C;
    constexpr bool QREG = MW == 1; // Q fragments kept in registers
    extern __shared__ __align__(16) unsigned char smem_raw[];
    bf16 *Qs = reinterpret_cast<bf16 *>(smem_raw);
    bf16 *Ks = Qs + C::ROWS * C::QLD; // 2 buffers of BN x KLD
    bf16 *Vs = Ks + 2 * BN * C::KLD;  // 2 buffers of BN x VLD

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int gq = lane >> 2, tq = lane & 3;
    const int kvh = blockIdx.y, split = blockIdx.z;
    const int tile = gridDim.x - 1 - blockIdx.x; // longest (latest) row tiles first
    const int G = p.G, nrows = p.T * G, R0 = tile * C::ROWS;
    const int last = R0 + C::ROWS - 1 < nrows - 1 ? R0 + C::ROWS - 1 : nrows - 1;
    const int t_first = R0 / G, t_last = last / G;
    const int pos_min = p.pos0 + t_first;                  // smallest query position of the block
    const int lo_max = attn_lo(p.pos0 + t_last, p.window); // largest first-visible key

    // Key range of the block (and of its split).
    int kb = attn_lo(pos_min, p.window), ke = p.pos0 + t_last + 1;
    if (p.splits > 1) {
        int chunk = ((ke - kb + p.splits - 1) / p.splits + BN - 1) / BN * BN;
        long b = (long)kb + (long)split * chunk;
        kb = b < ke ? (int)b : ke;
        if (ke - kb > chunk) ke = kb + chunk;
    }
    // Tiles with lo_max <= j0 <= full_hi are visible to every row: no masking.
    const int full_hi = (pos_min < ke - 1 ? pos_min : ke - 1) - (BN - 1);

    // This lane's rows are wr0 + gq + 8·i, i = 2m + half (row g or g + 8 of m-atom m). Their
    // query positions, as offsets from pos_min (< ROWS <= 128), are packed as bytes into one
    // register (registers are the limit here); padding rows borrow the last real row's.
    static_assert(C::ROWS <= 128 && MW <= 2, "position offsets must fit the packed bytes");
    const int wr0 = R0 + warp * 16 * MW; // first packed row of the warp
    uint32_t dpos = 0;
#pragma unroll
    for (int i = 0; i < 2 * MW; i++) {
        const int r = wr0 + gq + 8 * i;
        dpos |= (uint32_t)((r < nrows ? r : nrows - 1) / G - t_first) << (8 * i);
    }
    auto row_pos = [&](int i) { return pos_min + (int)((dpos >> (8 * i)) & 0xffu); };
    // A warp whose rows are all padding (decode: T·G < 64) only helps with the copies.
    const bool active = wr0 < nrows;

    // Q tile: ROWS x DK, zero rows for padding.
#pragma unroll
    for (int it = 0; it < C::ROWS * (DK / 8) / C::THREADS; it++) {
        const int c = tid + it * C::THREADS;
        const int r = c / (DK / 8), cc = c % (DK / 8), pr = R0 + r;
        const bool ok = pr < nrows;
        const bf16 *src = p.q;
        if (ok) src = p.q + ((size_t)(pr / G) * p.Hq + kvh * G + pr % G) * DK + cc * 8;
        cp_async16(Qs + r * C::QLD + cc * 8, src, ok);
    }
    auto load_kv = [&](int j0, int buf) {
        bf16 *kd = Ks + buf * BN * C::KLD, *vd = Vs + buf * BN * C::VLD;
#pragma unroll
        for (int it = 0; it < BN * (DK / 8) / C::THREADS; it++) {
            const int c = tid + it * C::THREADS;
            const int r = c / (DK / 8), cc = c % (DK / 8), j = j0 + r;
            const bool ok = j < ke;
            const bf16 *src = p.k;
            if (ok) src = p.k + attn_key_off(p, j, p.k_stride) + (size_t)kvh * DK + cc * 8;
            cp_async16(kd + r * C::KLD + cc * 8, src, ok);
        }
#pragma unroll
        for (int it = 0; it < BN * (DV / 8) / C::THREADS; it++) {
            const int c = tid + it * C::THREADS;
            const int r = c / (DV / 8), cc = c % (DV / 8), j = j0 + r;
            const bool ok = j < ke;
            const bf16 *src = p.v;
            if (ok) src = p.v + attn_key_off(p, j, p.v_stride) + (size_t)kvh * DV + cc * 8;
            cp_async16(vd + r * C::VLD + cc * 8, src, ok);
        }
    };
    if (kb < ke) load_kv(kb, 0);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();

    // Q fragments (A operand, k-step kk): 8x8 matrices {rows 0-7, rows 8-15} x {d 0-7, d 8-15}
    // of the k-step; lane l addresses row (l & 7) + 8·((l >> 3) & 1), column 8·(l >> 4).
    const bf16 *q_lane = Qs + (warp * 16 * MW + (lane & 7) + ((lane >> 3) & 1) * 8) * C::QLD +
                         (lane >> 4) * 8;
    uint32_t qf[QREG ? DK / 16 : 1][4];
    if (QREG) {
#pragma unroll
        for (int kk = 0; kk < (QREG ? DK / 16 : 0); kk++) ldsm_x4(qf[kk], q_lane + kk * 16);
    }

    float o[MW][DV / 8][4];
#pragma unroll
    for (int m = 0; m < MW; m++)
#pragma unroll
        for (int i = 0; i < DV / 8; i++) o[m][i][0] = o[m][i][1] = o[m][i][2] = o[m][i][3] = 0.0f;
    float mrow[MW][2], lrow[MW][2]; // running max (log2 units) and this lane's part of the sum
#pragma unroll
    for (int m = 0; m < MW; m++) mrow[m][0] = mrow[m][1] = -INFINITY, lrow[m][0] = lrow[m][1] = 0.0f;

    // ldmatrix lane offsets within a tile:
    //   K (non-trans, B of S): matrices {keys 0-7, 8-15} x {d 0-7, d 8-15} ordered
    //     (k0-7,d0-7), (k0-7,d8-15), (k8-15,d0-7), (k8-15,d8-15) -> b0,b1 of key n-tile 0 then
    //     of n-tile 1; lane l: key (l & 7) + 8·(l >> 4), d 8·((l >> 3) & 1).
    //   V (trans, B of P·V): matrices (k0-7,d0-7), (k8-15,d0-7), (k0-7,d8-15), (k8-15,d8-15) ->
    //     b0,b1 of d n-tile 0 then of n-tile 1; lane l: key (l & 7) + 8·((l >> 3) & 1),
    //     d 8·(l >> 4).
    const int k_off = ((lane & 7) + (lane >> 4) * 8) * C::KLD + ((lane >> 3) & 1) * 8;
    const int v_off = ((lane & 7) + ((lane >> 3) & 1) * 8) * C::VLD + (lane >> 4) * 8;

    for (int j0 = kb, buf = 0; j0 < ke; j0 += BN, buf ^= 1) {
        if (j0 + BN < ke) {
            load_kv(j0 + BN, buf ^ 1);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads(); // tile i visible to all warps
        if (!active) {
            __syncthreads();
            continue;
        }
        const bf16 *kt = Ks + buf * BN * C::KLD + k_off;
        const bf16 *vt = Vs + buf * BN * C::VLD + v_off;

        // S = Q·Kᵀ
        float s[MW][BN / 8][4];
#pragma unroll
        for (int m = 0; m < MW; m++)
#pragma unroll
            for (int n = 0; n < BN / 8; n++) s[m][n][0] = s[m][n][1] = s[m][n][2] = s[m][n][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < DK / 16; kk++) {
            uint32_t a[MW][4];
#pragma unroll
            for (int m = 0; m < MW; m++) {
                if (QREG) {
#pragma unroll
                    for (int x = 0; x < 4; x++) a[m][x] = qf[QREG ? kk : 0][x];
                } else {
                    ldsm_x4(a[m], q_lane + m * 16 * C::QLD + kk * 16);
                }
            }
#pragma unroll
            for (int n2 = 0; n2 < BN / 16; n2++) {
                uint32_t b[4];
                ldsm_x4(b, kt + n2 * 16 * C::KLD + kk * 16);
#pragma unroll
                for (int m = 0; m < MW; m++) {
                    mma_bf16(s[m][2 * n2], a[m], b[0], b[1]);
                    mma_bf16(s[m][2 * n2 + 1], a[m], b[2], b[3]);
                }
            }
        }

        // scale, mask (s[m][n][e] is key j0 + 8n + 2·tq + (e & 1) of row half e >> 1), online
        // softmax, P·V operands
        const bool full = j0 >= lo_max && j0 <= full_hi;
        uint32_t pf[MW][BN / 16][4];
#pragma unroll
        for (int m = 0; m < MW; m++) {
            float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
            for (int n = 0; n < BN / 8; n++) {
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    float x = s[m][n][e] * p.scale_log2;
                    if (!full) {
                        const int j = j0 + n * 8 + 2 * tq + (e & 1), ps = row_pos(2 * m + (e >> 1));
                        if (j >= ke || j > ps || j < attn_lo(ps, p.window)) x = -INFINITY;
                    }
                    s[m][n][e] = x;
                    mx[e >> 1] = fmaxf(mx[e >> 1], x);
                }
            }
            float base[2];
#pragma unroll
            for (int hf = 0; hf < 2; hf++) {
                const float mn = fmaxf(mrow[m][hf], quad_max(mx[hf]));
                base[hf] = attn_base(mn);
                const float al = exp2f(mrow[m][hf] - base[hf]); // 0 while nothing was seen
                mrow[m][hf] = mn;
                lrow[m][hf] *= al;
#pragma unroll
                for (int d = 0; d < DV / 8; d++) {
                    o[m][d][2 * hf] *= al;
                    o[m][d][2 * hf + 1] *= al;
                }
            }
#pragma unroll
            for (int n = 0; n < BN / 8; n++) {
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    s[m][n][e] = exp2f(s[m][n][e] - base[e >> 1]);
                    lrow[m][e >> 1] += s[m][n][e]; // this lane's columns; quad-summed at the end
                }
            }
#pragma unroll
            for (int k2 = 0; k2 < BN / 16; k2++) {
                pf[m][k2][0] = pack_bf16(s[m][2 * k2][0], s[m][2 * k2][1]);
                pf[m][k2][1] = pack_bf16(s[m][2 * k2][2], s[m][2 * k2][3]);
                pf[m][k2][2] = pack_bf16(s[m][2 * k2 + 1][0], s[m][2 * k2 + 1][1]);
                pf[m][k2][3] = pack_bf16(s[m][2 * k2 + 1][2], s[m][2 * k2 + 1][3]);
            }
        }

        // O += P·V
#pragma unroll
        for (int k2 = 0; k2 < BN / 16; k2++) {
#pragma unroll
            for (int d2 = 0; d2 < DV / 16; d2++) {
                uint32_t b[4];
                ldsm_x4_t(b, vt + k2 * 16 * C::VLD + d2 * 16);
#pragma unroll
                for (int m = 0; m < MW; m++) {
                    mma_bf16(o[m][2 * d2], pf[m][k2], b[0], b[1]);
                    mma_bf16(o[m][2 * d2 + 1], pf[m][k2], b[2], b[3]);
                }
            }
        }
        __syncthreads(); // buffer `buf` is refilled by the next iteration's prefetch
    }

    // epilogue: full row sums, then out (normalised, sink added) or the split's partials. Row
    // indices are recomputed from blockIdx and the parameters (nothing kept live across the loop).
    const int er0 = (gridDim.x - 1 - blockIdx.x) * C::ROWS + (threadIdx.x >> 5) * 16 * MW +
                    ((threadIdx.x & 31) >> 2);
#pragma unroll
    for (int m = 0; m < MW; m++) {
#pragma unroll
        for (int hf = 0; hf < 2; hf++) {
            const int r = er0 + m * 16 + hf * 8;
            const float l = quad_sum(lrow[m][hf]);
            if (r >= p.T * p.G) continue;
            const int t = r / p.G, h = blockIdx.y * p.G + r % p.G;
            const float mr = mrow[m][hf];
            const size_t orow = (size_t)t * p.Hq + h;
            if (p.splits == 1) {
                const int has_sink = p.sinks != nullptr;
                const float f =
                    attn_out_scale(mr, l, has_sink, has_sink ? p.sinks[h] * AE_ATTN_LOG2E : 0.0f);
                bf16 *dst = p.out + orow * DV + 2 * tq;
#pragma unroll
                for (int d = 0; d < DV / 8; d++)
                    *reinterpret_cast<uint32_t *>(dst + d * 8) =
                        pack_bf16(o[m][d][2 * hf] * f, o[m][d][2 * hf + 1] * f);
                if (lse2 && tq == 0) // every row sees its own key: mr is finite, l >= 1
                    lse2[orow] = attn_lse2(mr, l, has_sink,
                                           has_sink ? p.sinks[h] * AE_ATTN_LOG2E : 0.0f);
            } else {
                const size_t pr = (size_t)blockIdx.z * p.T * p.Hq + orow;
                float *dst = p.opart + pr * DV + 2 * tq;
#pragma unroll
                for (int d = 0; d < DV / 8; d++)
                    *reinterpret_cast<float2 *>(dst + d * 8) =
                        make_float2(o[m][d][2 * hf], o[m][d][2 * hf + 1]);
                if (tq == 0) {
                    p.mpart[pr] = mr;
                    p.lpart[pr] = l;
                }
            }
        }
    }
}

// ---- launch -------------------------------------------------------------------------------------

template <int DK, int DV, int BN, int MW>
static int flash_launch(const ae_backend *be, const attn_params *p0, float *lse2) {
    typedef flash_cfg<DK, DV, BN, MW> C;
    const void *kern = (const void *)k_attn_flash<DK, DV, BN, MW>;
    if (!attn_set_smem(be, kern, C::SMEM)) return 0;
    attn_params p = *p0;
    const int tiles = (p.T * p.G + C::ROWS - 1) / C::ROWS;
    const int blocks = tiles * p.Hkv;
    int per_sm = 1;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, k_attn_flash<DK, DV, BN, MW>,
                                                      C::THREADS, C::SMEM) != cudaSuccess) {
        cudaGetLastError();
        per_sm = 1;
    }
    // splits of >= 2 tiles; a single-token call of a wide GQA group (attn_dec_wide, e.g.
    // Qwen3-30B-A3B's 8 query heads a kv head, which kernel G leaves to this one) >= 1 tile, and
    // no more splits than whole-tile chunks need (the kernel's split ranges: none left empty)
    const int keys = attn_tile_keys(&p, C::ROWS), wide_dec = attn_dec_wide(&p, lse2);
    p.splits = lse2 ? 1 : attn_pick_splits(be, blocks, per_sm, keys, wide_dec ? BN : 2 * BN);
    if (wide_dec) p.splits = attn_align_splits(p.splits, keys, BN);
    void *buf = NULL;
    if (p.splits > 1 && !(buf = attn_partials_alloc(be, &p))) return 1;
    dim3 grid((unsigned)tiles, (unsigned)p.Hkv, (unsigned)p.splits);
    k_attn_flash<DK, DV, BN, MW><<<grid, C::THREADS, C::SMEM, stream_of(be)>>>(p, lse2);
    cuda_check(be, cudaGetLastError(), "attention");
    if (buf) attn_partials_finish(be, &p, buf);
    return 1;
}

// MW = 2 (128 rows per block) once the packed rows of one kv head fill enough blocks; MW = 1
// for decode and short chunks (less padding, and splits keep the GPU busy). BN2 = 0: MW = 1 only
// (measured on H200: MW = 2 gains ~20% for d = 128 and ~6% for 192/128, nothing for d <= 64).
#ifndef FLASH_MW2_MIN_ROWS
#define FLASH_MW2_MIN_ROWS 1024
#endif
template <int DK, int DV, int BN1, int BN2>
static int flash_pick(const ae_backend *be, const attn_params *p, float *lse2) {
    if constexpr (BN2 > 0) {
        if (p->T * p->G >= FLASH_MW2_MIN_ROWS && flash_launch<DK, DV, BN2, 2>(be, p, lse2))
            return 1;
    }
    return flash_launch<DK, DV, BN1, 1>(be, p, lse2);
}

int attn_flash_has(int dk, int dv) {
    return (dk == dv && (dk == 32 || dk == 64 || dk == 128)) || (dk == 192 && dv == 128);
}

int attn_flash_run_lse(const ae_backend *be, const attn_params *p, float *lse2) {
    if (p->dk == 32 && p->dv == 32) return flash_pick<32, 32, 64, 0>(be, p, lse2);
    if (p->dk == 64 && p->dv == 64) return flash_pick<64, 64, 64, 0>(be, p, lse2);
    if (p->dk == 128 && p->dv == 128) return flash_pick<128, 128, 64, 32>(be, p, lse2);
    if (p->dk == 192 && p->dv == 128) return flash_pick<192, 128, 32, 32>(be, p, lse2);
    return 0;
}
