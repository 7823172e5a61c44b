// The model over a paged KV cache (serving): the layout of one page pool shared by every layer,
// and a forward pass of many sequences at once (continuous batching: decode tokens and prefill
// chunks of different sequences in one call).
//
// Pages. The pool is n_pages pages of `page_stride` elements (act dtype). Layers are grouped by
// what they keep: FULL (GQA/GateSWA full-attention layers: K and V of every position), SLIDING
// (sliding-window layers: only the last W positions are needed, so pages behind the window go
// back to the pool) and LATENT (MLA layers: the [c_kv | k_rope] latent of every position). A
// page serves one group of one sequence and holds page_size[g] positions of every layer of the
// group: row i of a page is position (block·page_size + i), laid out as the concatenation over
// the group's layers of [K (Hkv·hd) | V (Hkv·hd)] or [latent (R + dr)]. Every group's pages
// have the same size in elements, so one free list serves them all; page_size[g] differs
// (the bytes one position costs in that group divide the page).
#ifndef AE_MODEL_PAGED_H
#define AE_MODEL_PAGED_H

#include <stdint.h>

#include "model/model.h"

enum { AE_PG_FULL = 0, AE_PG_SLIDING = 1, AE_PG_LATENT = 2, AE_PG_COUNT = 3 };

typedef struct {
    int group;       // AE_PG_*
    int64_t offset;  // column of this layer's K (or latent) in its group's rows
    int kv_dim;      // Hkv·hd (V follows K), or R + dr for a latent
} ae_paged_layer;

typedef struct {
    int n_layers;
    ae_paged_layer *layers;          // (L)
    int64_t page_stride;             // elements per page
    int64_t row_elems[AE_PG_COUNT];  // elements of one position of the group (0: unused group)
    int page_size[AE_PG_COUNT];      // positions per page (0: unused group)
    int window;                      // W of the sliding layers (0: none)
    ae_ptr pool;                     // (n_pages, page_stride) act, set by the owner
} ae_paged_layout;

// Plans the layout of m's layers for pages that hold at least min_positions positions of the
// most expensive group (the others get proportionally more). No pool memory is allocated.
ae_status ae_paged_layout_init(ae_paged_layout *lo, const ae_model *m, int min_positions);
void ae_paged_layout_free(ae_paged_layout *lo);

// One forward step over N rows (tokens) of n_seq sequences. Row r is token ids[r] of sequence
// seq[r] at position pos[r]; its K/V (latent) are written to slot[g][r] of each group g used
// (slot = page·page_size[g] + position % page_size[g]) and attention reads each sequence's
// earlier positions through table[g] (n_seq, max_blocks[g]). Rows of one sequence must be
// consecutive positions in increasing order, and every earlier position must be in the cache.
// runs (host, optional) describe the same rows per sequence for attention_paged (ae_paged_run,
// backend/ops.h: in row order, agreeing with pos and seq): with them the CUDA backend computes
// prefill chunks on tensor cores.
// Recording (graph): with a handle of the backend's graph ops (backend/ops.h, graph_*), the step
// after its uploads is recorded on it and replayed (CUDA graphs: segments cut between layers),
// falling back to op by op where the recording fails; the results are the op-by-op step's bit
// for bit. Every device table of the batch (pos, seq, slot, table, dev_ids) must then stay valid
// and unchanged until the call returns (uploaded before it, in stream order).
typedef struct {
    int N, n_seq;
    const int32_t *ids;              // host (N), checked against the vocabulary
    ae_ptr dev_ids;                  // (N) I32 ids already on the device, or null: uploaded here
    ae_ptr pos, seq;                 // (N) I32
    ae_ptr slot[AE_PG_COUNT];        // (N) I32 per used group
    ae_ptr table[AE_PG_COUNT];       // (n_seq, max_blocks[g]) I32 per used group
    int max_blocks[AE_PG_COUNT];
    int n_runs;                      // 0: none
    const ae_paged_run *runs;        // (n_runs) host
    ae_graph *graph;                 // record the step on this handle, or NULL: op by op
} ae_paged_batch;

// Runs the step; logits (n_out, V) F32 receives the logits of rows out_rows[0..n_out) (host
// indices into the N rows), or nothing when n_out == 0.
ae_status ae_model_forward_paged(const ae_model *m, const ae_paged_layout *lo,
                                 const ae_paged_batch *b, const int *out_rows, int n_out,
                                 ae_ptr logits);

#endif
