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
// Within a block: the decode core shared with k_paged_decode (cuda_decode_core.h): DEC_WARPS warps
// over key batches, all NR query rows in registers, fp32 online softmax in log2 units, the warps
// merged through shared memory in warp order. Two key loops (AE_DEC_PIPE, a template flag): the
// batched one, and the pipelined one (cp.async ring of DEC_PIPE_ST stages per warp, scores on
// the tensor cores) that keeps 3 batches in flight a warp and so aims for DEC_PIPE_PER_SM blocks
// an SM (fewer, longer splits: a shorter merge tail).
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
#include "backend/cuda_decode_core.h"

#ifndef DECODE_KERNEL_DEFAULT_ON
#define DECODE_KERNEL_DEFAULT_ON 1 // AE_ATTN_DECODE unset: this kernel (1) or kernel B (0)
#endif

#define DEC_MAX_ROWS 64   // T·G packed rows this kernel takes
#define DEC_MIN_KEYS 64   // a split covers at least this many keys (2 batches of the block at D 128)
#define DEC_PER_SM 4      // resident blocks per SM the split choice aims for (at most)
#define DEC_SLOTS 8       // backends with their own ticket counters
#define DEC_TICKETS 4096  // counters per slot: (Hkv · NHG) x T blocks of one split

// Tickets of the split merge: slot i of backend i (dec_tickets); always 0 between launches.
__device__ unsigned int g_dec_tickets[DEC_SLOTS * DEC_TICKETS];

// Key j's rows in a contiguous or ring cache (attn_key_off; p.pages is null: attn_decode_run
// leaves paged keys to kernel B).
struct dec_keys {
    typedef size_t off_t;
    const attn_params &p;
    __device__ __forceinline__ void operator()(int j, size_t &ko, size_t &vo) const {
        ko = attn_key_off(p, j, p.k_stride);
        vo = attn_key_off(p, j, p.v_stride);
    }
};

// tickets: this backend's slot (DEC_TICKETS counters, index t · gridDim.x + blockIdx.x).
template <int D, int NR, bool PIPE>
__global__ void __launch_bounds__(DEC_THREADS) k_attn_decode(const attn_params p, unsigned *tickets) {
    extern __shared__ __align__(16) float dec_sm[]; // dec_block_smem, or dec_merge_smem
    const dec_where b = dec_where_of<NR>(p.G);       // b.z: the token t
    const int S = p.splits, pos = p.pos0 + b.z;
    // this split's share of the token's visible keys (possibly none)
    int kb = attn_lo(pos, p.window), ke = pos + 1;
    dec_split_range(S, b.split, kb, ke);
    dec_block<D, NR, PIPE>(p, dec_keys{p}, b, (size_t)p.T * p.Hq, S, kb, ke, dec_sm, tickets);
}

// ---- host ---------------------------------------------------------------------------------------

// This backend's slot of g_dec_tickets (dec_ticket_slot: first come; NULL with the error kept).
static unsigned *dec_tickets(const ae_backend *be) {
    return dec_ticket_slot<DEC_SLOTS, DEC_TICKETS>(be, (const void *)g_dec_tickets,
                                                   "attention (decode tickets)");
}

// The split count of a launch of `blocks` blocks (per split) of which `per_sm` fit on an SM: the
// one heuristic of this kernel (attn_pick_splits: AE_ATTN_DEC_SPLIT overrides it at T = 1).
// Enough splits that the GPU holds up to `cap` blocks an SM (more only adds merge work), each
// split at least DEC_MIN_KEYS keys. Batched loop (cap DEC_PER_SM = 4): 1K keys over Qwen3-8B's 8
// kv heads -> 16 splits, 128 blocks; 4K -> 64 splits; 32K -> 66 (132 SMs x 4 blocks / 8 kv heads,
// at G = 4). Pipelined (cap DEC_PIPE_PER_SM = 2): 16 / 33 / 33, launched as 16 / 32 / 32 (whole
// 32-key tiles a split: attn_align_splits).
// Blocks of 8 query rows (GQA groups of 8: Qwen3-30B-A3B's 32 / 4 heads) do twice the work of
// 4-row ones per key and merge twice the partials: their splits take at least 2·DEC_MIN_KEYS
// keys (the Qwen3-30B-A3B decode step graphed, H200 2026-11-30: at 4K 64 splits 250.1 tok/s, 32
// 266.1, 16 254.9; at 32K 64 splits 206.3, 32 188.7 — this rule gives 32 and 64).
static int dec_pick_splits(const ae_backend *be, const attn_params *p, int blocks, int per_sm,
                           int cap, int nr) {
    const int keys = attn_tile_keys(p, p->T * p->G); // the longest range of the T tokens
    const int min_keys = nr >= 8 ? 2 * DEC_MIN_KEYS : DEC_MIN_KEYS;
    const int s = attn_pick_splits(be, blocks, per_sm < cap ? per_sm : cap, keys, min_keys);
    return attn_align_splits(s, keys, DEC_SPLIT_ALIGN);
}

template <int D, int NR, bool PIPE> static int dec_launch(const ae_backend *be, const attn_params *p0) {
    attn_params p = *p0;
    const int nhg = (p.G + NR - 1) / NR, gx = p.Hkv * nhg;
    if ((long)gx * p.T > DEC_TICKETS) return 0; // more counters than a slot has: kernel B
    unsigned *tickets = dec_tickets(be);
    if (!tickets) return 1;
    const void *kernel = (const void *)k_attn_decode<D, NR, PIPE>;
    const size_t warp_smem = dec_block_smem<D, NR, PIPE>();
    if (!attn_set_smem(be, kernel, warp_smem)) return 0; // before the occupancy (pipe: > 48 KB)
    int per_sm = 1;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, k_attn_decode<D, NR, PIPE>,
                                                      DEC_THREADS, warp_smem) != cudaSuccess) {
        cudaGetLastError();
        per_sm = 1;
    }
    p.splits = dec_pick_splits(be, &p, gx * p.T, per_sm, PIPE ? DEC_PIPE_PER_SM : DEC_PER_SM, NR);
    const size_t merge_smem = dec_merge_smem(NR, p.splits);
    const size_t smem = warp_smem > merge_smem ? warp_smem : merge_smem;
    if (!attn_set_smem(be, kernel, smem)) return 0;
    void *buf = NULL;
    if (p.splits > 1 && !(buf = attn_partials_alloc(be, &p))) return 1;
    dim3 grid((unsigned)gx, (unsigned)p.splits, (unsigned)p.T);
    k_attn_decode<D, NR, PIPE><<<grid, DEC_THREADS, smem, stream_of(be)>>>(p, tickets);
    cuda_check(be, cudaGetLastError(), "attention");
    if (buf) cuda_tmp_free(be, buf);
    return 1;
}

// NR: the fewest rows (1, 2, 4, 8) covering a kv head's G query heads; G > 8: groups of 8.
template <int D, bool PIPE> static int dec_pick_rows(const ae_backend *be, const attn_params *p) {
    if (p->G <= 1) return dec_launch<D, 1, PIPE>(be, p);
    if (p->G <= 2) return dec_launch<D, 2, PIPE>(be, p);
    if (p->G <= 4) return dec_launch<D, 4, PIPE>(be, p);
    return dec_launch<D, 8, PIPE>(be, p);
}

// The key loop (AE_DEC_PIPE, dec_pipe_enabled): pipelined or batched.
template <int D> static int dec_pick_loop(const ae_backend *be, const attn_params *p) {
    return dec_pipe_enabled() ? dec_pick_rows<D, true>(be, p) : dec_pick_rows<D, false>(be, p);
}

// AE_ATTN_DECODE: -1 unset or empty (the defaults below), 0 for "0" (never kernel G), else 1
// (kernel G for every call it can take).
static int dec_mode(void) {
    const char *env = getenv("AE_ATTN_DECODE");
    if (!env || !*env) return -1;
    return strcmp(env, "0") != 0;
}

// Whether kernel G may run under AE_ATTN_DECODE mode `mode` (dec_mode's value).
static int dec_on(int mode) { return mode < 0 ? DECODE_KERNEL_DEFAULT_ON : mode; }

// By default single-token calls of GQA groups wider than ATTN_DEC_WIDE_G (Qwen3-30B-A3B: 8 query
// heads a kv head) go to kernel B: its 64-row tensor-core blocks with splits of >= 64 keys
// (flash_launch) were faster at 8 rows a kv head (H200 2026-11-30: the graphed Qwen3-30B-A3B
// decode 264.1 -> 278.7 tok/s at 4K, 212.1 -> 219.9 at 32K; bench_attn --decode at Hq 32 / Hkv 4:
// 4K 16.1 -> 13.4 µs, 32K 39.7 -> 35.2 µs), while kernel G stays ahead at groups of 4 and less.
int attn_decode_run(const ae_backend *be, const attn_params *p, const float *lse2) {
    const int mode = dec_mode();
    if (lse2 || p->pages || !dec_on(mode)) return 0;
    if (p->T * p->G > DEC_MAX_ROWS || p->dk != p->dv) return 0;
    if (mode < 0 && attn_dec_wide(p, lse2)) return 0;
    if (p->dk == 128) return dec_pick_loop<128>(be, p);
    if (p->dk == 64) return dec_pick_loop<64>(be, p);
    return 0;
}
