// D. Absorbed MLA attention (decode, short query chunks) on tensor cores: one kv head (the
// latent cache), v = the first DV values of each k row (k and v are the same rows), large head
// dims (576/512, 288/256). See cuda_attention.cu for when it runs.
//
// Rows are (token, head) pairs of the single kv head: packed row pr = t·Hq + h (which is also
// the output row). A block owns ROWS = 16·RG consecutive packed rows (RG = 1, 2 or 4 row groups
// picked from T·Hq, so small decode batches do not compute padding) and has RG·NC warps:
// warp w = NC·rg + ch works on the 16 rows of group rg and on part ch (of NC) of both products:
//   S = Q·Kᵀ: keys ch·BN/NC .. of the BN = 32 key tile (K and Q fragments come from shared
//             memory at every tile: Q of 16 rows x 576 would not fit in registers next to O);
//   row max: each warp's partial row maxima meet in shared memory (red_max) so all NC warps of
//            a group see the same running max; P = exp2(S − m) (bf16) goes to shared memory (Ps);
//   O += P·V: all BN keys, columns ch·DV/NC .. (16 rows x DV/NC fp32 in registers), V
//             fragments by ldmatrix.trans from the same K tile (v is the first DV values).
// Row sums l are kept per warp (own keys) and added across the group at the end (red_sum).
// NC = 4 for small row counts (decode of 16-32 heads: 4 warps per group keep all tensor-core
// partitions busy), NC = 2 for 64 rows (O of DV/2 columns per warp).
// Tiles are double buffered with cp.async like kernel B; with split-KV (grid.z) every latent row
// is read once per split (per row tile). Latent rows are addressed by attn_key_off (contiguous,
// ring buffer or pages: attention_paged's prefill runs), in D and E alike.
// Fragment layouts and ldmatrix lane addressing are those of cuda_attention_flash.cu.
//
// E (k_attn_mla_dec, below) is the decode kernel for T·Hq <= 64; D serves more rows and
// AE_CUDA_MLA_KERNEL=old (see mla_pick).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda_attention.h"
#include "backend/cuda_mla.h"


template <int DK, int DV, int RG, int NC, int NS> struct mla_cfg {
    static constexpr int ROWS = 16 * RG, THREADS = 32 * RG * NC, BN = 32;
    static constexpr int KW = BN / NC, DW = DV / NC; // keys of S, columns of O per warp
    static constexpr int LD = DK + 8, PLD = BN + 8;  // shared row strides (elements)
    static constexpr size_t SMEM =
        sizeof(bf16) * ((size_t)ROWS * LD + NS * (size_t)BN * LD + (size_t)ROWS * PLD) +
        sizeof(float) * 2 * NC * ROWS;
    static_assert(DK % 32 == 0 && DW % 16 == 0 && DV <= DK && (KW == 8 || KW == 16) && NS >= 2,
                  "shapes");
};

// Copies `rows` rows of DK values (16-byte chunks) with the block's threads; src_of(r) is the
// row's source or null (zero fill; `any` is then passed as a valid but unread global address).
template <int DK, int THREADS, typename F>
__device__ __forceinline__ void mla_copy_rows(bf16 *dst, int ld, int rows, const bf16 *any,
                                              F src_of) {
    constexpr int CH = DK / 8;
    const int total = rows * CH;
    for (int c = threadIdx.x; c < total; c += THREADS) {
        const int r = c / CH, cc = c % CH;
        const bf16 *src = src_of(r);
        cp_async16(dst + r * ld + cc * 8, src ? src + cc * 8 : any, src != nullptr);
    }
}

template <int DK, int DV, int RG, int NC, int NS>
__global__ void __launch_bounds__(32 * RG * NC) k_attn_mla(const attn_params p) {
    typedef mla_cfg<DK, DV, RG, NC, NS> C;
    constexpr int BN = C::BN, ROWS = C::ROWS, LD = C::LD, PLD = C::PLD, KW = C::KW, DW = C::DW;
    constexpr int NT = KW / 8; // n8 tiles of S per warp
    extern __shared__ __align__(16) unsigned char smem_raw[];
    bf16 *Qs = reinterpret_cast<bf16 *>(smem_raw);                // ROWS x LD
    bf16 *Ks = Qs + ROWS * LD;                                      // NS buffers of BN x LD
    bf16 *Ps = Ks + NS * BN * LD;                                   // ROWS x PLD
    float *red_max = reinterpret_cast<float *>(Ps + ROWS * PLD);    // [NC][ROWS]
    float *red_sum = red_max + NC * ROWS;                           // [NC][ROWS]

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int gq = lane >> 2, tq = lane & 3, rg = warp / NC, ch = warp % NC;
    const int split = blockIdx.z;
    const int tile = gridDim.x - 1 - blockIdx.x;
    const int Hq = p.Hq, nrows = p.T * Hq, R0 = tile * ROWS;
    const int last = R0 + ROWS - 1 < nrows - 1 ? R0 + ROWS - 1 : nrows - 1;
    const int t_first = R0 / Hq, t_last = last / Hq;
    const int pos_min = p.pos0 + t_first;
    const int lo_max = attn_lo(p.pos0 + t_last, p.window);

    int kb = attn_lo(pos_min, p.window), ke = p.pos0 + t_last + 1;
    if (p.splits > 1) {
        int chunk = ((ke - kb + p.splits - 1) / p.splits + BN - 1) / BN * BN;
        long b = (long)kb + (long)split * chunk;
        kb = b < ke ? (int)b : ke;
        if (ke - kb > chunk) ke = kb + chunk;
    }
    const int ntiles = (ke - kb + BN - 1) / BN;

    // This lane's two rows (local index in the block, packed index, position, first key).
    const int ra_l = rg * 16 + gq, rb_l = ra_l + 8;
    const int ra = R0 + ra_l, rb = R0 + rb_l;
    const int pa = p.pos0 + (ra < nrows ? ra : nrows - 1) / Hq;
    const int pb = p.pos0 + (rb < nrows ? rb : nrows - 1) / Hq;
    const int la = attn_lo(pa, p.window), lb = attn_lo(pb, p.window);
    // A group whose 16 rows are all padding skips the products (it still joins the copies and
    // barriers); its results are never written.
    const bool active = R0 + rg * 16 < nrows;

    mla_copy_rows<DK, C::THREADS>(Qs, LD, ROWS, p.q, [&](int r) -> const bf16 * {
        return R0 + r < nrows ? p.q + (size_t)(R0 + r) * DK : nullptr;
    });
    auto load_k = [&](int i, int buf) {
        const int j0 = kb + i * BN;
        mla_copy_rows<DK, C::THREADS>(Ks + buf * BN * LD, LD, BN, p.k, [&](int r) -> const bf16 * {
            return j0 + r < ke ? p.k + attn_key_off(p, j0 + r, p.k_stride) : nullptr;
        });
    };
    // Pipeline of NS buffers: tiles 0 .. NS − 2 are requested up front (one commit group per
    // tile, empty groups past the last tile keep the count uniform); iteration i requests tile
    // i + NS − 1 into the buffer of tile i − 1 and waits for tile i (all but NS − 1 groups done).
#pragma unroll
    for (int st = 0; st < NS - 1; st++) {
        if (st < ntiles) load_k(st, st);
        cp_async_commit(); // group 0 also holds Q
    }

    // Lane offsets of the ldmatrix addresses (see cuda_attention_flash.cu):
    const int a_row = (lane & 7) + ((lane >> 3) & 1) * 8, a_col = (lane >> 4) * 8; // A operands
    const bf16 *q_lane = Qs + (rg * 16 + a_row) * LD + a_col;
    const bf16 *p_lane = Ps + (rg * 16 + a_row) * PLD + a_col;
    // K (B of S): NT = 2: x4 = (keys 0-7 | 8-15) x (d 0-7 | 8-15) as in kernel B; NT = 1: x4 =
    // keys 0-7 x (d 0-7, 8-15 of k-step kk, then of kk + 1): b0,b1 of kk, then of kk + 1.
    const int k_off = NT == 2
        ? (ch * KW + (lane & 7) + (lane >> 4) * 8) * LD + ((lane >> 3) & 1) * 8
        : (ch * KW + (lane & 7)) * LD + (lane >> 4) * 16 + ((lane >> 3) & 1) * 8;
    const int v_off = a_row * LD + ch * DW + a_col; // trans: key a_row, column a_col

    float o[DW / 8][4];
#pragma unroll
    for (int i = 0; i < DW / 8; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
    float m_a = -INFINITY, m_b = -INFINITY, l_a = 0.0f, l_b = 0.0f;

    for (int i = 0; i < ntiles; i++) {
        const int j0 = kb + i * BN;
        // buffer (i + NS − 1) % NS held tile i − 1, finished by every warp (trailing barrier)
        if (i + NS - 1 < ntiles) load_k(i + NS - 1, (i + NS - 1) % NS);
        cp_async_commit();
        cp_async_wait<NS - 1>();
        __syncthreads(); // Q and tile i visible to all warps
        const bf16 *kt = Ks + (i % NS) * BN * LD;

        // S (16 rows x this warp's KW keys) = Q·Kᵀ, over DK/16 k-steps spread round-robin on
        // NACC independent accumulators (one chain of 36 dependent mma would leave the tensor
        // cores waiting on mma latency), summed afterwards.
        constexpr int NACC = NT == 2 ? 3 : 4;
        static_assert((DK / 16) % NACC == 0 || NT == 1, "k-steps per accumulator");
        float sa[NACC][NT][4];
#pragma unroll
        for (int c = 0; c < NACC; c++)
#pragma unroll
            for (int n = 0; n < NT; n++) sa[c][n][0] = sa[c][n][1] = sa[c][n][2] = sa[c][n][3] = 0.0f;
        if (active) {
            if (NT == 2) {
#pragma unroll
                for (int kk = 0; kk < DK / 16; kk++) {
                    uint32_t a[4], b[4];
                    ldsm_x4(a, q_lane + kk * 16);
                    ldsm_x4(b, kt + k_off + kk * 16);
                    mma_bf16(sa[kk % NACC][0], a, b[0], b[1]);
                    mma_bf16(sa[kk % NACC][NT - 1], a, b[2], b[3]);
                }
            } else {
#pragma unroll
                for (int kk = 0; kk < DK / 16; kk += 2) {
                    uint32_t a0[4], a1[4], b[4];
                    ldsm_x4(a0, q_lane + kk * 16);
                    ldsm_x4(a1, q_lane + kk * 16 + 16);
                    ldsm_x4(b, kt + k_off + kk * 16);
                    mma_bf16(sa[kk % NACC][0], a0, b[0], b[1]);
                    mma_bf16(sa[(kk + 1) % NACC][0], a1, b[2], b[3]);
                }
            }
        }
        float s[NT][4];
#pragma unroll
        for (int n = 0; n < NT; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                float x = sa[0][n][e];
#pragma unroll
                for (int c = 1; c < NACC; c++) x += sa[c][n][e];
                s[n][e] = x;
            }
        // scale, mask: s[n][e] is key j0 + KW·ch + 8n + 2·tq + (e & 1) of row a (e < 2) or b
        const bool full = j0 + BN <= ke && j0 + BN - 1 <= pos_min && j0 >= lo_max;
        float mx_a = -INFINITY, mx_b = -INFINITY;
#pragma unroll
        for (int n = 0; n < NT; n++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                float x = s[n][e] * p.scale_log2;
                if (!full) {
                    const int j = j0 + ch * KW + n * 8 + 2 * tq + (e & 1);
                    const int pp = e < 2 ? pa : pb, ll = e < 2 ? la : lb;
                    if (j >= ke || j > pp || j < ll) x = -INFINITY;
                }
                s[n][e] = x;
                if (e < 2) mx_a = fmaxf(mx_a, x);
                else mx_b = fmaxf(mx_b, x);
            }
        }
        mx_a = quad_max(mx_a);
        mx_b = quad_max(mx_b);
        if (tq == 0) {
            red_max[ch * ROWS + ra_l] = mx_a;
            red_max[ch * ROWS + rb_l] = mx_b;
        }
        __syncthreads();
        // all NC warps of the group now agree on the tile max of each row
#pragma unroll
        for (int c = 0; c < NC; c++) {
            mx_a = fmaxf(mx_a, red_max[c * ROWS + ra_l]);
            mx_b = fmaxf(mx_b, red_max[c * ROWS + rb_l]);
        }
        const float mn_a = fmaxf(m_a, mx_a), mn_b = fmaxf(m_b, mx_b);
        const float base_a = attn_base(mn_a), base_b = attn_base(mn_b);
        const float al_a = exp2f(m_a - base_a), al_b = exp2f(m_b - base_b);
        m_a = mn_a;
        m_b = mn_b;
        float sum_a = 0.0f, sum_b = 0.0f;
#pragma unroll
        for (int n = 0; n < NT; n++) {
            const float p0 = exp2f(s[n][0] - base_a), p1 = exp2f(s[n][1] - base_a);
            const float p2 = exp2f(s[n][2] - base_b), p3 = exp2f(s[n][3] - base_b);
            sum_a += p0 + p1;
            sum_b += p2 + p3;
            const int col = ch * KW + n * 8 + 2 * tq;
            *reinterpret_cast<uint32_t *>(Ps + ra_l * PLD + col) = pack_bf16(p0, p1);
            *reinterpret_cast<uint32_t *>(Ps + rb_l * PLD + col) = pack_bf16(p2, p3);
        }
        l_a = l_a * al_a + sum_a; // own keys and lane columns; summed at the end
        l_b = l_b * al_b + sum_b;
#pragma unroll
        for (int d = 0; d < DW / 8; d++) {
            o[d][0] *= al_a;
            o[d][1] *= al_a;
            o[d][2] *= al_b;
            o[d][3] *= al_b;
        }
        __syncthreads(); // P of all parts visible

        // O (16 rows x this warp's DW columns) += P (16 x BN) · V (BN x DW)
        if (active) {
#pragma unroll
            for (int k2 = 0; k2 < BN / 16; k2++) {
                uint32_t a[4];
                ldsm_x4(a, p_lane + k2 * 16);
                const bf16 *vt = kt + v_off + k2 * 16 * LD;
#pragma unroll
                for (int d2 = 0; d2 < DW / 16; d2++) {
                    uint32_t b[4];
                    ldsm_x4_t(b, vt + d2 * 16);
                    mma_bf16(o[2 * d2], a, b[0], b[1]);
                    mma_bf16(o[2 * d2 + 1], a, b[2], b[3]);
                }
            }
        }
        __syncthreads(); // K buffer, Ps and red_max are rewritten next tile
    }
    cp_async_wait<0>(); // (the Q copy is still in flight when the block saw no tile)

    // row sums over the NC key parts
    l_a = quad_sum(l_a);
    l_b = quad_sum(l_b);
    if (tq == 0) {
        red_sum[ch * ROWS + ra_l] = l_a;
        red_sum[ch * ROWS + rb_l] = l_b;
    }
    __syncthreads();
    l_a = l_b = 0.0f;
#pragma unroll
    for (int c = 0; c < NC; c++) {
        l_a += red_sum[c * ROWS + ra_l];
        l_b += red_sum[c * ROWS + rb_l];
    }

#pragma unroll
    for (int half = 0; half < 2; half++) {
        const int r = half ? rb : ra;
        if (r >= nrows) continue;
        const float m = half ? m_b : m_a, l = half ? l_b : l_a;
        if (p.splits == 1) {
            const int h = r % Hq, has_sink = p.sinks != nullptr;
            const float f = attn_out_scale(m, l, has_sink, has_sink ? p.sinks[h] * AE_ATTN_LOG2E : 0.0f);
            bf16 *dst = p.out + (size_t)r * DV + ch * DW + 2 * tq;
#pragma unroll
            for (int d = 0; d < DW / 8; d++)
                *reinterpret_cast<uint32_t *>(dst + d * 8) =
                    pack_bf16(o[d][2 * half] * f, o[d][2 * half + 1] * f);
        } else {
            const size_t pr = (size_t)split * nrows + r;
            float *dst = p.opart + pr * DV + ch * DW + 2 * tq;
#pragma unroll
            for (int d = 0; d < DW / 8; d++)
                *reinterpret_cast<float2 *>(dst + d * 8) =
                    make_float2(o[d][2 * half], o[d][2 * half + 1]);
            if (tq == 0 && ch == 0) {
                p.mpart[pr] = m;
                p.lpart[pr] = l;
            }
        }
    }
}

// ---- E. decode kernel for few rows (T·Hq <= 64): Q in registers, the dot split over dims ----------
//
// Block: 8 warps, ROWS = 16·RG packed rows (RG = 1, 2), key tiles of BN (32 or 64) keys in an
// NS-stage cp.async ring. The old kernel reloads the 16 x 576 Q fragments of its rows from shared
// memory for every key tile in every warp, which costs more shared-memory bandwidth than the K
// tile itself; here each warp keeps a quarter of the dims of all ROWS query rows in registers.
//   S:   warp w = 4·kh + dg computes the partial dot products over dims group dg (k-steps
//        dg·KSG ..) of all ROWS rows with the BN/2 keys of half kh of the tile (RG·NT independent
//        accumulators), and stores them (fp32) in Sp[dg]. Each K element is read from shared
//        memory once per block.
//   softmax: thread (row rr, part cc) adds the four dims groups of its KPT keys in a fixed order,
//        scales, masks, and keeps the row's online softmax state (the TPR threads of a row agree
//        on the running max through shuffles; row sums stay per thread until the end). P
//        (bf16) and the row's rescale factor alpha go to shared memory.
//   O += P·V: warp w owns the DV/8 columns w·DW .. of all ROWS rows (V fragments by
//        ldmatrix.trans from the K tile: v is the first DV values of each row).
// Three barriers per tile (tile ready, S partials ready, P ready). Split-KV as kernel D (whole
// tiles per split; partials in the format of cuda_attention.h, merged by the combine kernel).
template <int DK, int DV, int RG, int BN, int NS> struct mlad_cfg {
    static constexpr int ROWS = 16 * RG, NW = 8, THREADS = 32 * NW;
    static constexpr int NDG = 4, KPW = BN / 2, NT = KPW / 8; // dims groups, keys/n-tiles per warp
    static constexpr int KS = DK / 16, KSG = (KS + NDG - 1) / NDG; // k-steps, per dims group
    static constexpr int DW = DV / NW;                              // O columns per warp
    static constexpr int TPR = THREADS / ROWS, KPT = BN / TPR;      // softmax threads per row, keys
    static constexpr int LD = DK + 8, PLD = BN + 8, SLD = BN + 8;   // shared row strides
    static constexpr size_t SMEM = sizeof(bf16) * ((size_t)NS * BN * LD + (size_t)ROWS * PLD) +
                                   sizeof(float) * ((size_t)NDG * ROWS * SLD + 3 * (size_t)ROWS);
    static_assert(DK % 16 == 0 && DV <= DK && DW % 16 == 0 && NT % 2 == 0 && NS >= 2, "shapes");
    static_assert(ROWS <= BN && (KPT == 2 || KPT == 4 || KPT == 8) && TPR <= 32, "layout");
};

template <int N> struct mlad_vec;
template <> struct mlad_vec<2> { typedef float2 F; typedef uint32_t P; };
template <> struct mlad_vec<4> { typedef float4 F; typedef uint2 P; };
template <> struct mlad_vec<8> { typedef float4 F; typedef uint4 P; };

template <int DK, int DV, int RG, int BN, int NS>
__global__ void __launch_bounds__(256, 1) k_attn_mla_dec(const attn_params p) {
    typedef mlad_cfg<DK, DV, RG, BN, NS> C;
    constexpr int ROWS = C::ROWS, LD = C::LD, PLD = C::PLD, SLD = C::SLD, NT = C::NT;
    constexpr int KS = C::KS, KSG = C::KSG, DW = C::DW, TPR = C::TPR, KPT = C::KPT;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    bf16 *Ks = reinterpret_cast<bf16 *>(smem_raw);                   // NS buffers of BN x LD
    bf16 *Ps = Ks + NS * BN * LD;                                     // ROWS x PLD
    float *Sp = reinterpret_cast<float *>(Ps + ROWS * PLD);           // [NDG][ROWS][SLD]
    float *alpha_s = Sp + C::NDG * ROWS * SLD;                        // [ROWS]
    float *m_s = alpha_s + ROWS, *l_s = m_s + ROWS;                   // [ROWS] each
    bf16 *Qs = Ks + (NS - 1) * BN * LD; // Q staged in the last buffer before its first tile

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int gq = lane >> 2, tq = lane & 3, dg = warp % C::NDG, kh = warp / C::NDG;
    const int Hq = p.Hq, nrows = p.T * Hq, R0 = blockIdx.x * ROWS;
    const int last = R0 + ROWS - 1 < nrows - 1 ? R0 + ROWS - 1 : nrows - 1;
    const int pos_min = p.pos0 + R0 / Hq;
    int kb = attn_lo(pos_min, p.window), ke = p.pos0 + last / Hq + 1;
    if (p.splits > 1) {
        int chunk = ((ke - kb + p.splits - 1) / p.splits + BN - 1) / BN * BN;
        long b = (long)kb + (long)blockIdx.z * chunk;
        kb = b < ke ? (int)b : ke;
        if (ke - kb > chunk) ke = kb + chunk;
    }
    const int ntiles = (ke - kb + BN - 1) / BN;

    mla_copy_rows<DK, C::THREADS>(Qs, LD, ROWS, p.q, [&](int r) -> const bf16 * {
        return R0 + r < nrows ? p.q + (size_t)(R0 + r) * DK : nullptr;
    });
    cp_async_commit();
    auto load_k = [&](int i, int buf) {
        const int j0 = kb + i * BN;
        mla_copy_rows<DK, C::THREADS>(Ks + buf * BN * LD, LD, BN, p.k, [&](int r) -> const bf16 * {
            return j0 + r < ke ? p.k + attn_key_off(p, j0 + r, p.k_stride) : nullptr;
        });
    };
#pragma unroll
    for (int st = 0; st < NS - 1; st++) {
        if (st < ntiles) load_k(st, st);
        cp_async_commit();
    }
    cp_async_wait<NS - 1>(); // Q
    __syncthreads();

    // this warp's Q fragments: rows m·16 .. (A operand), k-steps dg·KSG + kk
    const int a_row = (lane & 7) + ((lane >> 3) & 1) * 8, a_col = (lane >> 4) * 8;
    uint32_t qf[RG][KSG][4];
#pragma unroll
    for (int m = 0; m < RG; m++)
#pragma unroll
        for (int kk = 0; kk < KSG; kk++) {
            if (KS % C::NDG == 0 || dg * KSG + kk < KS)
                ldsm_x4(qf[m][kk], Qs + (m * 16 + a_row) * LD + a_col + (dg * KSG + kk) * 16);
            else
                qf[m][kk][0] = qf[m][kk][1] = qf[m][kk][2] = qf[m][kk][3] = 0u;
        }
    // K (B of S, non-trans) as kernel B: keys (lane & 7) + 8·(lane >> 4) of this half, d 8·bit 3
    const int k_off = (kh * C::KPW + (lane & 7) + (lane >> 4) * 8) * LD + ((lane >> 3) & 1) * 8;
    // V (B of P·V, trans): key (lane & 7) + 8·bit 3, column 8·(lane >> 4) of this warp's DW
    const int v_off = ((lane & 7) + ((lane >> 3) & 1) * 8) * LD + warp * DW + (lane >> 4) * 8;

    // the softmax thread's row and keys
    const int rr = tid / TPR, cc = tid % TPR;
    const int rpos = p.pos0 + (R0 + rr < nrows ? R0 + rr : nrows - 1) / Hq;
    const int rlo = attn_lo(rpos, p.window);
    float m_run = -INFINITY, l_run = 0.0f;

    float o[RG][DW / 8][4];
#pragma unroll
    for (int m = 0; m < RG; m++)
#pragma unroll
        for (int d = 0; d < DW / 8; d++) o[m][d][0] = o[m][d][1] = o[m][d][2] = o[m][d][3] = 0.0f;

    for (int i = 0; i < ntiles; i++) {
        const int j0 = kb + i * BN;
        cp_async_wait<NS - 2>();
        __syncthreads(); // tile i visible; every warp is done with tile i − 1 (its buffer, Ps)
        if (i + NS - 1 < ntiles) load_k(i + NS - 1, (i + NS - 1) % NS);
        cp_async_commit();
        const bf16 *kt = Ks + (i % NS) * BN * LD;

        // S partial: all rows x this half's keys, this dims group
        float sa[RG][NT][4];
#pragma unroll
        for (int m = 0; m < RG; m++)
#pragma unroll
            for (int n = 0; n < NT; n++) sa[m][n][0] = sa[m][n][1] = sa[m][n][2] = sa[m][n][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < KSG; kk++) {
            if (KS % C::NDG != 0 && dg * KSG + kk >= KS) break;
#pragma unroll
            for (int n2 = 0; n2 < NT / 2; n2++) {
                uint32_t b[4];
                ldsm_x4(b, kt + k_off + n2 * 16 * LD + (dg * KSG + kk) * 16);
#pragma unroll
                for (int m = 0; m < RG; m++) {
                    mma_bf16(sa[m][2 * n2], qf[m][kk], b[0], b[1]);
                    mma_bf16(sa[m][2 * n2 + 1], qf[m][kk], b[2], b[3]);
                }
            }
        }
        float *sp = Sp + dg * ROWS * SLD;
#pragma unroll
        for (int m = 0; m < RG; m++)
#pragma unroll
            for (int n = 0; n < NT; n++) {
                const int col = kh * C::KPW + n * 8 + 2 * tq;
                *reinterpret_cast<float2 *>(sp + (m * 16 + gq) * SLD + col) =
                    make_float2(sa[m][n][0], sa[m][n][1]);
                *reinterpret_cast<float2 *>(sp + (m * 16 + gq + 8) * SLD + col) =
                    make_float2(sa[m][n][2], sa[m][n][3]);
            }
        __syncthreads(); // S partials of all dims groups

        // softmax of row rr, keys j0 + cc·KPT ..
        {
            float x[KPT];
#pragma unroll
            for (int e = 0; e < KPT; e++) x[e] = 0.0f;
#pragma unroll
            for (int g = 0; g < C::NDG; g++) {
                const float *src = Sp + (g * ROWS + rr) * SLD + cc * KPT;
                float v[KPT];
                *reinterpret_cast<typename mlad_vec<KPT>::F *>(v) =
                    *reinterpret_cast<const typename mlad_vec<KPT>::F *>(src);
                if (KPT == 8)
                    *reinterpret_cast<float4 *>(v + (KPT == 8 ? 4 : 0)) =
                        *reinterpret_cast<const float4 *>(src + (KPT == 8 ? 4 : 0));
#pragma unroll
                for (int e = 0; e < KPT; e++) x[e] += v[e];
            }
            float mx = -INFINITY;
#pragma unroll
            for (int e = 0; e < KPT; e++) {
                const int j = j0 + cc * KPT + e;
                x[e] = j < ke && j <= rpos && j >= rlo ? x[e] * p.scale_log2 : -INFINITY;
                mx = fmaxf(mx, x[e]);
            }
#pragma unroll
            for (int off = TPR / 2; off > 0; off >>= 1)
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
            const float mn = fmaxf(m_run, mx), base = attn_base(mn);
            const float al = exp2f(m_run - base);
            m_run = mn;
            uint32_t pk[KPT / 2];
            float ps = 0.0f;
#pragma unroll
            for (int e = 0; e < KPT; e += 2) {
                const float p0 = exp2f(x[e] - base), p1 = exp2f(x[e + 1] - base);
                ps += p0 + p1;
                pk[e / 2] = pack_bf16(p0, p1);
            }
            l_run = l_run * al + ps;
            *reinterpret_cast<typename mlad_vec<KPT>::P *>(Ps + rr * PLD + cc * KPT) =
                *reinterpret_cast<const typename mlad_vec<KPT>::P *>(pk);
            if (cc == 0) alpha_s[rr] = al;
        }
        __syncthreads(); // P and alpha of every row

        // O (all rows x this warp's DW columns) = alpha · O + P · V
#pragma unroll
        for (int m = 0; m < RG; m++) {
            const float al_a = alpha_s[m * 16 + gq], al_b = alpha_s[m * 16 + gq + 8];
#pragma unroll
            for (int d = 0; d < DW / 8; d++) {
                o[m][d][0] *= al_a;
                o[m][d][1] *= al_a;
                o[m][d][2] *= al_b;
                o[m][d][3] *= al_b;
            }
        }
#pragma unroll
        for (int k2 = 0; k2 < BN / 16; k2++) {
            uint32_t pa[RG][4];
#pragma unroll
            for (int m = 0; m < RG; m++)
                ldsm_x4(pa[m], Ps + (m * 16 + a_row) * PLD + a_col + k2 * 16);
            const bf16 *vt = kt + v_off + k2 * 16 * LD;
#pragma unroll
            for (int d2 = 0; d2 < DW / 16; d2++) {
                uint32_t b[4];
                ldsm_x4_t(b, vt + d2 * 16);
#pragma unroll
                for (int m = 0; m < RG; m++) {
                    mma_bf16(o[m][2 * d2], pa[m], b[0], b[1]);
                    mma_bf16(o[m][2 * d2 + 1], pa[m], b[2], b[3]);
                }
            }
        }
    }
    cp_async_wait<0>();

    // row sums over the TPR threads of each row; the rows' (m, l) for the output warps
#pragma unroll
    for (int off = TPR / 2; off > 0; off >>= 1) l_run += __shfl_xor_sync(0xffffffffu, l_run, off);
    if (cc == 0) {
        m_s[rr] = m_run;
        l_s[rr] = l_run;
    }
    __syncthreads();

#pragma unroll
    for (int m = 0; m < RG; m++)
#pragma unroll
        for (int half = 0; half < 2; half++) {
            const int lr = m * 16 + gq + 8 * half, r = R0 + lr;
            if (r >= nrows) continue;
            const float mr = m_s[lr], l = l_s[lr];
            if (!p.opart) { // unsplit (partials also at one split for mla_decode_attend)
                const int h = r % Hq, has_sink = p.sinks != nullptr;
                const float f =
                    attn_out_scale(mr, l, has_sink, has_sink ? p.sinks[h] * AE_ATTN_LOG2E : 0.0f);
                bf16 *dst = p.out + (size_t)r * DV + warp * DW + 2 * tq;
#pragma unroll
                for (int d = 0; d < DW / 8; d++)
                    *reinterpret_cast<uint32_t *>(dst + d * 8) =
                        pack_bf16(o[m][d][2 * half] * f, o[m][d][2 * half + 1] * f);
            } else {
                const size_t pr = (size_t)blockIdx.z * nrows + r;
                float *dst = p.opart + pr * DV + warp * DW + 2 * tq;
#pragma unroll
                for (int d = 0; d < DW / 8; d++)
                    *reinterpret_cast<float2 *>(dst + d * 8) =
                        make_float2(o[m][d][2 * half], o[m][d][2 * half + 1]);
                if (warp == 0 && tq == 0) {
                    p.mpart[pr] = mr;
                    p.lpart[pr] = l;
                }
            }
        }
}

// ---- launch -------------------------------------------------------------------------------------

// What the last MLA launch ran (ae_cuda_mla_last): the split plan is what bench_attn
// --decode-mla prints next to each timing, so it is recorded where the launch decides it.
static struct {
    const char *kernel;
    int tiles, splits, keys, stages;
    const char *merge; // the merge kernel after E (attn_mla_note_merge), or null
} g_mla_last;

static void mla_note(const char *kernel, int tiles, int splits, int keys, int stages) {
    g_mla_last.kernel = kernel, g_mla_last.tiles = tiles, g_mla_last.splits = splits;
    g_mla_last.keys = keys, g_mla_last.stages = stages, g_mla_last.merge = NULL;
}

void attn_mla_note_merge(const char *kernel) { g_mla_last.merge = kernel; }

extern "C" const char *ae_cuda_mla_last(void) {
    static char buf[200];
    if (!g_mla_last.kernel) return "none";
    snprintf(buf, sizeof buf, "%s, %d stages, row tiles %d, splits %d, keys %d%s%s",
             g_mla_last.kernel, g_mla_last.stages, g_mla_last.tiles, g_mla_last.splits,
             g_mla_last.keys, g_mla_last.merge ? ", merge by " : "",
             g_mla_last.merge ? g_mla_last.merge : "");
    return buf;
}

// Key-range splits (grid.z) for `tiles` row tiles of `rows` rows each reading `keys` keys.
// Decode (T = 1: one row tile reads every key) needs splits to use the GPU. The aim is about two
// blocks per SM (the 32-row kernel is sized so that two fit an SM, 128 registers and 113 KiB of
// shared memory each: one block's loads run under the other's products and barriers), while
// each split keeps at least two key tiles (something for the two-stage pipeline to overlap)
// and writes no more fp32 partial bytes (rows x DV x 4, read again by the combine) than the
// latent bytes it reads (keys x DK x 2). Splits are whole numbers of key tiles and none is
// empty (the kernel rounds a split's range up to whole tiles). Qwen3-8B MLA (T = 1, 32 heads,
// 576/512) on an H200 (132 SMs): at 4K (4097 keys, 129 tiles) 65 splits of 2 tiles (the
// partials, 4 MiB, stay in L2 for the combine), at 32K (1025 tiles) 257 splits of 4 tiles. The
// earlier rule (partials <= a quarter of the latent, one block per SM) gave 18 and 144: at 4K
// only 18 SMs read the cache, 7 tiles each. AE_CUDA_MLA_SPLITS=n forces n splits (1..1024; for
// benchmark sweeps: results agree up to rounding).
static int mla_splits(const ae_backend *be, int tiles, int per_sm, int keys, int rows, int BN,
                      int DK, int DV) {
    const char *env = getenv("AE_CUDA_MLA_SPLITS");
    if (env && atoi(env) > 0) {
        int n = atoi(env);
        return n > 1024 ? 1024 : n;
    }
    const long want = (long)cu(be)->sm_count * (per_sm < 2 ? 2 : per_sm); // blocks
    const int key_tiles = (keys + BN - 1) / BN;
    int min_tiles = ((rows * DV * 2 + DK - 1) / DK + BN - 1) / BN; // partials <= latent read
    if (min_tiles < 2) min_tiles = 2;
    if (tiles >= want || key_tiles < 2 * min_tiles) return 1;
    const long s = (want + tiles - 1) / tiles; // splits that would reach `want`
    long per = (key_tiles + s - 1) / s;        // key tiles per split
    if (per < min_tiles) per = min_tiles;
    long n = (key_tiles + per - 1) / per;
    return n > 1024 ? 1024 : (int)n;
}

template <int DK, int DV, int RG, int NC, int NS>
static int mla_launch(const ae_backend *be, const attn_params *p0) {
    typedef mla_cfg<DK, DV, RG, NC, NS> C;
    const void *kern = (const void *)k_attn_mla<DK, DV, RG, NC, NS>;
    if (!attn_set_smem(be, kern, C::SMEM)) return 0;
    attn_params p = *p0;
    const int tiles = (p.T * p.Hq + C::ROWS - 1) / C::ROWS;
    int per_sm = 1;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, k_attn_mla<DK, DV, RG, NC, NS>,
                                                      C::THREADS, C::SMEM) != cudaSuccess) {
        cudaGetLastError();
        per_sm = 1;
    }
    const int keys = attn_tile_keys(&p, C::ROWS);
    p.splits = mla_splits(be, tiles, per_sm, keys, p.T * p.Hq < C::ROWS ? p.T * p.Hq : C::ROWS,
                          C::BN, DK, DV);
    mla_note("D (k_attn_mla)", tiles, p.splits, keys, NS);
    void *buf = NULL;
    if (p.splits > 1 && !(buf = attn_partials_alloc(be, &p))) return 1;
    dim3 grid((unsigned)tiles, 1u, (unsigned)p.splits);
    k_attn_mla<DK, DV, RG, NC, NS><<<grid, C::THREADS, C::SMEM, stream_of(be)>>>(p);
    cuda_check(be, cudaGetLastError(), "attention");
    if (buf) attn_partials_finish(be, &p, buf);
    return 1;
}

// Splits of the decode kernel E: one wave of blocks (it runs one block per SM: 8 warps holding
// Q fragments, output and S accumulators need ~170 registers each), each split at least 64 keys
// (two 32-key tiles: something for the pipeline to overlap) and at least the keys whose latent
// bytes equal its fp32 partial bytes (rows x DV x 4). Qwen3-8B MLA on 132 SMs with BN = 32:
// 4097 keys -> 65 splits of 2 tiles; 32769 keys -> 129 splits of 8 tiles. AE_CUDA_MLA_SPLITS=n
// forces n (as for kernel D).
static int mlad_splits(const ae_backend *be, int tiles, int per_sm, int keys, int rows, int BN,
                       int DK, int DV) {
    const char *env = getenv("AE_CUDA_MLA_SPLITS");
    if (env && atoi(env) > 0) {
        int n = atoi(env);
        return n > 1024 ? 1024 : n;
    }
    const long want = (long)cu(be)->sm_count * (per_sm > 0 ? per_sm : 1);
    const int key_tiles = (keys + BN - 1) / BN;
    int min_keys = (rows * DV * 2 + DK - 1) / DK;
    if (min_keys < 64) min_keys = 64;
    const int min_tiles = (min_keys + BN - 1) / BN;
    if (tiles >= want || key_tiles < 2 * min_tiles) return 1;
    const long s = want / tiles > 0 ? want / tiles : 1; // splits per row tile for one wave
    long per = (key_tiles + s - 1) / s;
    if (per < min_tiles) per = min_tiles;
    long n = (key_tiles + per - 1) / per;
    return n > 1024 ? 1024 : (int)n;
}

// parts null: E writes out (one split) or partials merged by the combine kernel. parts non-null
// (mla_decode_attend): partials at every split count, left in *parts (p0 with splits and the
// partial pointers set; the buffer starts at parts->opart, freed by the caller after its merge).
template <int DK, int DV, int RG, int BN, int NS>
static int mlad_launch(const ae_backend *be, const attn_params *p0, attn_params *parts) {
    typedef mlad_cfg<DK, DV, RG, BN, NS> C;
    const void *kern = (const void *)k_attn_mla_dec<DK, DV, RG, BN, NS>;
    if (!attn_set_smem(be, kern, C::SMEM)) return 0;
    attn_params p = *p0;
    const int nrows = p.T * p.Hq, tiles = (nrows + C::ROWS - 1) / C::ROWS;
    int per_sm = 1;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, k_attn_mla_dec<DK, DV, RG, BN, NS>,
                                                      C::THREADS, C::SMEM) != cudaSuccess) {
        cudaGetLastError();
        per_sm = 1;
    }
    const int keys = attn_tile_keys(&p, C::ROWS);
    p.splits = mlad_splits(be, tiles, per_sm, keys, nrows < C::ROWS ? nrows : C::ROWS, BN, DK, DV);
    const char *name = BN == 64 ? (parts ? "E (k_attn_mla_dec, 64-key tiles) + merge_wuv"
                                         : "E (k_attn_mla_dec, 64-key tiles)")
                                : (parts ? "E (k_attn_mla_dec) + merge_wuv" : "E (k_attn_mla_dec)");
    mla_note(name, tiles, p.splits, keys, NS);
    void *buf = NULL;
    if ((p.splits > 1 || parts) && !(buf = attn_partials_alloc(be, &p))) {
        if (parts) *parts = p, parts->opart = NULL; // the error is kept: nothing to merge
        return 1;
    }
    dim3 grid((unsigned)tiles, 1u, (unsigned)p.splits);
    k_attn_mla_dec<DK, DV, RG, BN, NS><<<grid, C::THREADS, C::SMEM, stream_of(be)>>>(p);
    cuda_check(be, cudaGetLastError(), "attention");
    if (parts) *parts = p;
    else if (buf) attn_partials_finish(be, &p, buf);
    return 1;
}

// Two pipeline stages: measured on H200, deeper pipelines (NS = 3, 4) lose more to the fewer
// blocks per SM than they gain from the bytes in flight.
template <int DK, int DV> static int mla_pick_old(const ae_backend *be, const attn_params *p) {
    const int rows = p->T * p->Hq;
    if (rows <= 16) return mla_launch<DK, DV, 1, 4, 2>(be, p);
    if (rows <= 32) return mla_launch<DK, DV, 2, 4, 2>(be, p);
    return mla_launch<DK, DV, 4, 2, 2>(be, p);
}

// Kernel E for T·Hq <= 64 rows: 16-row blocks up to 16 rows, else 32-row blocks; BN 64 in two
// stages when big (AE_CUDA_MLA_KERNEL=new64), else BN 32 in four.
template <int DK, int DV>
static int mlad_pick(const ae_backend *be, const attn_params *p, int big, attn_params *parts) {
    const int rows = p->T * p->Hq;
    if (big)
        return rows <= 16 ? mlad_launch<DK, DV, 1, 64, 2>(be, p, parts)
                          : mlad_launch<DK, DV, 2, 64, 2>(be, p, parts);
    return rows <= 16 ? mlad_launch<DK, DV, 1, 32, 4>(be, p, parts)
                      : mlad_launch<DK, DV, 2, 32, 4>(be, p, parts);
}

// AE_CUDA_MLA_KERNEL, read at every call: the choice mla_pick and attn_mla_dec_parts share.
enum { MLA_KERNEL_DEFAULT, MLA_KERNEL_OLD, MLA_KERNEL_NEW64 };
static int mla_kernel_choice(void) {
    const char *env = getenv("AE_CUDA_MLA_KERNEL");
    if (env && strcmp(env, "old") == 0) return MLA_KERNEL_OLD;
    return env && strcmp(env, "new64") == 0 ? MLA_KERNEL_NEW64 : MLA_KERNEL_DEFAULT;
}

// Kernel choice (AE_CUDA_MLA_KERNEL, for A/B runs): "old" forces kernel D; "new64" takes kernel E
// with 64-key tiles in two stages; anything else (default) kernel E with 32-key tiles in four
// stages for T·Hq <= 64 (33..64 rows: two row tiles of 32, each reading the latent once) and
// kernel D for more rows (prefill chunks, 128-head models).
template <int DK, int DV> static int mla_pick(const ae_backend *be, const attn_params *p) {
    const int rows = p->T * p->Hq, kernel = mla_kernel_choice();
    const int old = kernel == MLA_KERNEL_OLD, big = kernel == MLA_KERNEL_NEW64;
    if (!old && rows <= 64) {
        if (mlad_pick<DK, DV>(be, p, big, NULL)) return 1;
    }
    return mla_pick_old<DK, DV>(be, p);
}

int attn_mla_dec_parts(const ae_backend *be, const attn_params *p, attn_params *parts) {
    const int kernel = mla_kernel_choice(), big = kernel == MLA_KERNEL_NEW64;
    if (kernel == MLA_KERNEL_OLD || p->Hkv != 1 || p->T * p->Hq > 64 || p->pages) return 0;
    if (p->dk == 576 && p->dv == 512) return mlad_pick<576, 512>(be, p, big, parts);
    if (p->dk == 288 && p->dv == 256) return mlad_pick<288, 256>(be, p, big, parts);
    return 0;
}

int attn_mla_has(int dk, int dv) { return (dk == 576 && dv == 512) || (dk == 288 && dv == 256); }

int attn_mla_run(const ae_backend *be, const attn_params *p) {
    if (p->Hkv != 1) return 0;
    if (p->dk == 576 && p->dv == 512) return mla_pick<576, 512>(be, p);
    if (p->dk == 288 && p->dv == 256) return mla_pick<288, 256>(be, p);
    return 0;
}
