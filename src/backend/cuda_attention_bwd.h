// Private to the attention backward of the CUDA backend (cuda_attention_bwd*.cu, and the LSE
// output of cuda_attention_flash.cu): the interface between the dispatcher
// (cuda_attention_bwd.cu) and the tensor-core kernels (cuda_attention_bwd_tc.cu, and the
// Hopper ones in cuda_attention_bwd_wgmma.cu).
//
// Units as cuda_attention.h: scores in log2 units, s2 = scale·log2(e)·q·k; a row's probabilities
// are p_j = exp2(s2_j − lse2) with lse2 the log2 of its softmax denominator (sink included).
#ifndef AE_BACKEND_CUDA_ATTENTION_BWD_H
#define AE_BACKEND_CUDA_ATTENTION_BWD_H

#include "backend/cuda_attention.h"

// Arguments of the tensor-core backward. Rows r = t·Hq + h; packed rows pr = t·G + i of kv head
// g are query head g·G + i of token t (as the forward's GQA packing).
typedef struct {
    const bf16 *q;      // (T, Hq, dk)
    const bf16 *k, *v;  // key / value of position j, kv head g at k + j·k_stride + g·dk, v ditto
    const bf16 *dout;   // (T, Hq, dv) bf16 (a converted copy when the op's dout is F32)
    void *dq;           // (T, Hq, dk) F32 or BF16 (dq_bf), overwritten
    void *dk, *dv;      // layouts of k, v; F32 or BF16 (dk_bf, dv_bf); added into, or set
    int dq_bf, dk_bf, dv_bf;
    int dkv_set;        // dk, dv written instead of added into (the old values never loaded)
    // fused kernel only, set by its launch: the fp32 partial sums of dq (T, Hq, dk) (dq itself
    // when F32 and 8-byte aligned) and the counters (a ticket, then one per (kv head, query
    // tile)), zeroed
    float *dq_acc;
    int *sem;
    // Hopper dQ from stored dS (cuda_attention_bwd_wgmma.cu, "ds"), set by its launch: the dS
    // tiles of kv heads ds_h0 .. (64 query rows x 64 keys bf16, 8 KB each, query tile qi and
    // key tile kj <= qi at tile (h − ds_h0)·ds_nq·(ds_nq + 1)/2 + qi·(qi + 1)/2 + kj), ds_nq
    // query tiles a head
    bf16 *ds_tiles;
    int ds_h0, ds_nq;
    const float *lse2;  // (T·Hq)
    const float *delta; // (T·Hq) D = Σ_d dout·out (= Σ_j p_j dp_j)
    int T, pos0, Hq, Hkv, G, dk_dim, dv_dim;
    int k_stride, v_stride, window;
    float scale, scale_log2;
} attn_bwd_tc_params;

#ifdef __CUDACC__
// ---- device helpers shared by the tensor-core kernels (split and fused: cuda_attention_bwd_tc.cu;
// wgmma: cuda_attention_bwd_wgmma.cu): how a block finds its rows and keys ----

// Global row t·Hq + h of packed row pr (< T·G) of kv head kvh.
__device__ __forceinline__ int attn_bwd_grow(const attn_bwd_tc_params &p, int kvh, int pr) {
    return (pr / p.G) * p.Hq + kvh * p.G + pr % p.G;
}

// attn_bwd_grow for G = 2^lg (lg >= 0) by shifts; lg < 0: attn_bwd_grow (a division by G).
__device__ __forceinline__ int attn_bwd_grow_lg(const attn_bwd_tc_params &p, int kvh, int pr, int lg) {
    return lg >= 0 ? (pr >> lg) * p.Hq + kvh * p.G + (pr & (p.G - 1)) : attn_bwd_grow(p, kvh, pr);
}
// lg of attn_bwd_grow_lg for the group size G: log2 G when G is a power of two, else −1.
__device__ __forceinline__ int attn_bwd_lg(int G) { return (G & (G - 1)) == 0 ? __ffs(G) - 1 : -1; }

// Row pointers for the tile loaders (nullptr: the loader writes a zero row): key j's k and v of
// kv head kvh (j < end), packed row pr's q and dout (pr < T·G).
template <int DK>
__device__ __forceinline__ const bf16 *attn_bwd_k_row(const attn_bwd_tc_params &p, int kvh, int j,
                                                      int end) {
    return j < end ? p.k + (size_t)j * p.k_stride + (size_t)kvh * DK : nullptr;
}
template <int DV>
__device__ __forceinline__ const bf16 *attn_bwd_v_row(const attn_bwd_tc_params &p, int kvh, int j,
                                                      int end) {
    return j < end ? p.v + (size_t)j * p.v_stride + (size_t)kvh * DV : nullptr;
}
template <int DK>
__device__ __forceinline__ const bf16 *attn_bwd_q_row(const attn_bwd_tc_params &p, int kvh, int pr) {
    return pr < p.T * p.G ? p.q + (size_t)attn_bwd_grow(p, kvh, pr) * DK : nullptr;
}
template <int DV>
__device__ __forceinline__ const bf16 *attn_bwd_dout_row(const attn_bwd_tc_params &p, int kvh,
                                                         int pr) {
    return pr < p.T * p.G ? p.dout + (size_t)attn_bwd_grow(p, kvh, pr) * DV : nullptr;
}

// The tokens whose queries can see a key of the n keys from j0: t_lo .. t_hi (a window ends
// the range at the last query that sees key j0 + n − 1, at position j0 + n − 1 + W − 1).
__device__ __forceinline__ void attn_bwd_key_tile_tokens(const attn_bwd_tc_params &p, int j0, int n,
                                                         int *t_lo, int *t_hi) {
    *t_lo = j0 - p.pos0 > 0 ? j0 - p.pos0 : 0;
    *t_hi = p.T - 1;
    if (p.window > 0) {
        const long t_w = (long)j0 + n - 1 + p.window - 1 - p.pos0;
        if (t_w < *t_hi) *t_hi = (int)t_w;
    }
}

// Packed row pr's position, lse2 and D; a padding row (pr >= T·G) gets position pad_pos and
// lse2 = D = 0 (the dK/dV kernels give it −1, masking it; the dQ kernels the last real row's
// position: it is never written).
struct attn_bwd_row_state {
    int pos;
    float lse2, delta;
};
__device__ __forceinline__ attn_bwd_row_state attn_bwd_row(const attn_bwd_tc_params &p, int kvh,
                                                           int pr, int pad_pos) {
    if (pr >= p.T * p.G) return {pad_pos, 0.0f, 0.0f};
    const int gr = attn_bwd_grow(p, kvh, pr);
    return {p.pos0 + pr / p.G, p.lse2[gr], p.delta[gr]};
}
#endif

// The kernels attn_bwd_tc_run queues after D: split (the dK/dV kernel, then the dQ kernel, on
// mma.sync), fused (one mma.sync kernel adding dQ over key tiles in order), or wgmma (the split
// backward on Hopper's warpgroup multiplies, cuda_attention_bwd_wgmma.cu).
// wgfused: the Hopper dK/dV kernel also adding dQ over key tiles in a fixed order (one kernel, 5
// products), then dq = scale·sums.
typedef enum { ATTN_BWD_SPLIT, ATTN_BWD_FUSED, ATTN_BWD_WGMMA, ATTN_BWD_WGFUSED } attn_bwd_kernels;

// 1 when the tensor-core backward has kernels for these head dims.
int attn_bwd_tc_has(int dk, int dv);

// The whole fast path of attention_bwd for arguments the dispatcher has checked (no ring,
// Hq % Hkv == 0, dk != dv memory, 16-byte aligned q, k, v, strides multiples of 8). out null:
// the forward runs first (out into scratch, lse2 written: the launch `attention` makes when
// asked for lse); out non-null: the saved forward output (T, Hq, dv), lse2 its log-sum-exp
// (read only). Then D (and dsink_row when non-null: −p_sink·D per row), then the kernels: fused
// (one kernel: dK, dV and dQ, dQ summed over key tiles in a fixed order) or split (the dK/dV
// kernel, then the dQ kernel). `dout` is the op's (F32 or BF16, dout_bf). Returns 0 without
// queueing anything when a kernel's shared memory does not fit the device (the caller falls
// back), 1 otherwise (an error may be kept).
int attn_bwd_tc_run(const ae_backend *be, const ae_attn_args *a, attn_bwd_tc_params *p,
                    const void *dout, int dout_bf, const bf16 *out, float *lse2, float *delta,
                    float *dsink_row, attn_bwd_kernels kernels);

// The Hopper (wgmma) split backward, cuda_attention_bwd_wgmma.cu. takes: the device is compute
// capability 9.0 and (dk, dv) is (128, 128) or (192, 128) (any window, G, pos0). loaded: this
// build's sm_90a code of its kernels is what runs on the device (see wg_kernel_loaded).
// prepare: raises the shared memory limits (0: they do not fit). launch: the dK/dV kernel, then
// the dQ kernel, for parameters attn_bwd_tc_run has completed (lse2, delta, bf16 dout); fused:
// the fused dK/dV/dQ kernel instead (p's dq_acc and sem set by the launch), then dq from its sums.
int attn_bwd_wgmma_takes(const ae_backend *be, int dk, int dv);
int attn_bwd_wgmma_loaded(int dk, int dv);
int attn_bwd_wgmma_prepare(const ae_backend *be, int dk, int dv, int fused);
void attn_bwd_wgmma_launch(const ae_backend *be, attn_bwd_tc_params *p, int fused);

// Queues k_attn_bwd_delta (cuda_attention_bwd_tc.cu) over `rows` rows of dv values: delta[r] =
// Σ dout·out, dsink_row[r] = −exp2(sinks[r % Hq]·log2 e − lse2[r])·delta[r] when dsink_row is
// non-null. dout F32 (dout_bf 0) or BF16; an F32 dout is rounded to bf16 into dout_copy when that
// is non-null (D then uses the rounded values), else used as is.
void attn_bwd_delta_run(const ae_backend *be, const bf16 *out, const void *dout, int dout_bf,
                        bf16 *dout_copy, const float *lse2, const float *sinks, float *delta,
                        float *dsink_row, int rows, int Hq, int dv);

#endif
