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
// Within a block: the decode core shared with kernel G (cuda_decode_core.h): DEC_WARPS warps over
// key batches, all NR query rows in registers, fp32 online softmax in log2 units (P never rounded
// to bf16), the warps merged in warp order; the batched key loop (2U 16-byte loads in flight per
// lane) or the pipelined one (AE_DEC_PIPE: a cp.async ring per warp, scores on the tensor cores;
// the split bound then aims for DEC_PIPE_PER_SM blocks an SM).
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
#include "backend/cuda_decode_core.h"

#ifndef PAGED_DECODE_FOLD_DEFAULT_ON
#define PAGED_DECODE_FOLD_DEFAULT_ON 1 // AE_PAGED_DECODE_FOLD unset: this kernel (1) or k_paged_attn (0)
#endif

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

// Splits row keys [lo, pos] uses: one per PD_MIN_KEYS keys, at most the launch's bound.
__device__ __forceinline__ int pd_row_splits(int n, int bound) {
    const int s = (n + PD_MIN_KEYS - 1) / PD_MIN_KEYS;
    return s < bound ? s : bound;
}

// Key j's rows of a sequence: row j % P of page tab[j / P] (shift and mask when P is a power of two).
struct pd_keys {
    typedef int64_t off_t;
    const pd_params &p;
    const int32_t *tab; // (max_blocks) the sequence's row of the block table
    __device__ __forceinline__ void operator()(int j, int64_t &ko, int64_t &vo) const {
        int pg, row;
        if (p.page_shift >= 0) pg = j >> p.page_shift, row = j & (p.page_size - 1);
        else pg = j / p.page_size, row = j - pg * p.page_size;
        const int64_t base = (int64_t)__ldg(tab + pg) * p.page_stride;
        ko = base + (int64_t)row * p.k_stride;
        vo = base + (int64_t)row * p.v_stride;
    }
};

// tickets: this backend's slot (PD_TICKETS counters, index r · gridDim.x + blockIdx.x).
template <int D, int NR, bool PIPE>
__global__ void __launch_bounds__(DEC_THREADS) k_paged_decode(const pd_params p, unsigned *tickets) {
    extern __shared__ __align__(16) float pd_sm[]; // dec_block_smem, or dec_merge_smem
    const dec_where b = dec_where_of<NR>(p.G);      // b.z: the row r
    // the row's visible keys, its split count, this split's share (chunks of ⌈keys / S⌉: a
    // trailing split may be empty when S > 64, its partial then m = −inf, l = 0, weight 0)
    const int pos = p.pos[b.z], lo = attn_lo(pos, p.window);
    const int S = pd_row_splits(pos - lo + 1, p.splits);
    if (b.split >= S) return; // this row needs fewer splits than the launch has
    int kb = lo, ke = pos + 1;
    dec_split_range(S, b.split, kb, ke);
    const pd_keys keys{p, p.table + (int64_t)p.seq[b.z] * p.max_blocks};
    dec_block<D, NR, PIPE>(p, keys, b, (size_t)p.N * p.Hq, S, kb, ke, pd_sm, tickets);
}

// ---- host ---------------------------------------------------------------------------------------

// This backend's slot of g_pd_tickets (dec_ticket_slot: first come; NULL with the error kept).
unsigned *pd_tickets(const ae_backend *be) {
    return dec_ticket_slot<PD_SLOTS, PD_TICKETS>(be, (const void *)g_pd_tickets,
                                                 "attention_paged (decode tickets)");
}

// The launch's split bound for `blocks` blocks per split, `per_sm` of them resident per SM:
// enough splits for up to `cap` blocks per SM (PD_PER_SM, or DEC_PIPE_PER_SM for the pipelined
// loop), at least PD_MIN_KEYS keys each of the longest range a row can have (max_blocks·page_size,
// or the window), at most PD_MAX_SPLITS; rows shorter than that use fewer (pd_row_splits, on the
// device).
int pd_pick_splits(const ae_backend *be, long keys, long blocks, int per_sm, int cap) {
    const long want = (long)cu(be)->sm_count * (per_sm < cap ? per_sm : cap);
    if (blocks >= want || keys < 2 * PD_MIN_KEYS) return 1;
    long s = (want + blocks - 1) / blocks;
    if (s > keys / PD_MIN_KEYS) s = keys / PD_MIN_KEYS;
    if (s > PD_MAX_SPLITS) s = PD_MAX_SPLITS;
    return s < 2 ? 1 : (int)s;
}

template <int D, int NR, bool PIPE> int pd_launch(const ae_backend *be, pd_params p, int *splits) {
    const int nhg = (p.G + NR - 1) / NR, gx = (p.Hq / p.G) * nhg;
    unsigned *tickets = pd_tickets(be);
    if (!tickets) return 1;
    const void *kernel = (const void *)k_paged_decode<D, NR, PIPE>;
    const size_t warp_smem = dec_block_smem<D, NR, PIPE>();
    if (!attn_set_smem(be, kernel, warp_smem)) return 0; // before the occupancy (pipe: > 48 KB)
    int per_sm = 1;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, k_paged_decode<D, NR, PIPE>,
                                                      DEC_THREADS, warp_smem) != cudaSuccess) {
        cudaGetLastError();
        per_sm = 1;
    }
    // more (row, group) counters than a slot has: unsplit (so many blocks fill the GPU anyway)
    long keys = (long)p.max_blocks * p.page_size; // the longest range a row can have
    if (p.window > 0 && p.window < keys) keys = p.window;
    p.splits = (long)gx * p.N > PD_TICKETS
                   ? 1
                   : pd_pick_splits(be, keys, (long)gx * p.N, per_sm,
                                    PIPE ? DEC_PIPE_PER_SM : PD_PER_SM);
    *splits = p.splits;
    const size_t merge_smem = dec_merge_smem(NR, p.splits);
    const size_t smem = warp_smem > merge_smem ? warp_smem : merge_smem;
    if (!attn_set_smem(be, kernel, smem)) return 0;
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
    k_paged_decode<D, NR, PIPE><<<grid, DEC_THREADS, smem, stream_of(be)>>>(p, tickets);
    cuda_check(be, cudaGetLastError(), "attention_paged (decode)");
    cuda_tmp_free(be, buf);
    return 1;
}

// NR: the fewest rows (1, 2, 4, 8) covering a kv head's G query heads; G > 8: groups of 8.
template <int D, bool PIPE> int pd_pick_rows(const ae_backend *be, const pd_params &p, int *splits) {
    if (p.G <= 1) return pd_launch<D, 1, PIPE>(be, p, splits);
    if (p.G <= 2) return pd_launch<D, 2, PIPE>(be, p, splits);
    if (p.G <= 4) return pd_launch<D, 4, PIPE>(be, p, splits);
    return pd_launch<D, 8, PIPE>(be, p, splits);
}

// The key loop (AE_DEC_PIPE, dec_pipe_enabled): pipelined or batched.
template <int D> int pd_pick_loop(const ae_backend *be, const pd_params &p, int *splits) {
    return dec_pipe_enabled() ? pd_pick_rows<D, true>(be, p, splits)
                              : pd_pick_rows<D, false>(be, p, splits);
}

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
    if (!cuda_aligned16(q.data) || !cuda_aligned16(k.data) || !cuda_aligned16(v.data) ||
        !cuda_aligned16(out.data) || a->k_stride % 8 != 0 || a->v_stride % 8 != 0 ||
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
    return a->dk == 128 ? pd_pick_loop<128>(be, p, splits) : pd_pick_loop<64>(be, p, splits);
}
