// The page pool of the server's KV cache: one backend allocation of n_pages equal pages
// (model/paged.h: layout per attention kind), a free list, and per-sequence block tables.
//
// Admission by pages. A sequence that may grow to `len` positions is admitted only if the pool
// can promise it the most pages it will ever hold at once (ae_kv_pool_pages_for): all its
// blocks for full and latent layers, and for sliding layers only the window plus one prefill
// chunk (older blocks go back to the pool as it advances). The promise is kept as a count, and
// pages are taken lazily as positions are written, so a running sequence never waits for or
// fails on a page, and no preemption is needed.
#ifndef AE_SERVE_KV_POOL_H
#define AE_SERVE_KV_POOL_H

#include <stdint.h>

#include "model/paged.h"

typedef struct {
    ae_paged_layout lo;   // lo.pool: (n_pages, lo.page_stride) act
    const ae_backend *be;
    int n_pages, n_free;
    int32_t *free_list;   // (n_pages) stack of free page ids
    int promised;         // pages promised to admitted sequences and not yet taken
    int max_chunk;        // longest prefill chunk (bounds a sliding sequence's pages)
} ae_kv_pool;

// Pages of one sequence, per group: block b holds positions b·page_size .. (b+1)·page_size−1
// in page blocks[g][b] (−1 once a sliding layer gave it back).
typedef struct {
    int32_t *blocks[AE_PG_COUNT];
    int n_blocks[AE_PG_COUNT], cap_blocks[AE_PG_COUNT];
    int first_live[AE_PG_COUNT]; // blocks before this one were given back
    int held;                    // pages held now
    int reserve;                 // pages promised at admission (held never exceeds it)
} ae_seq_pages;

// A pool of pages of at least page_positions positions (the most expensive group's) using
// `bytes` of backend memory; max_chunk: the scheduler's longest prefill chunk.
ae_status ae_kv_pool_init(ae_kv_pool *p, const ae_model *m, size_t bytes, int page_positions,
                          int max_chunk);
void ae_kv_pool_free(ae_kv_pool *p);
size_t ae_kv_pool_page_bytes(const ae_kv_pool *p);
// The most pages a sequence of up to len positions holds at once.
int ae_kv_pool_pages_for(const ae_kv_pool *p, int len);
// Pages a new sequence could be promised now (free pages not promised to others).
int ae_kv_pool_available(const ae_kv_pool *p);
// Promises s the pages of a sequence of up to len positions: 1 on success, 0 when they are not
// available (s untouched).
int ae_kv_pool_admit(ae_kv_pool *p, ae_seq_pages *s, int len);
// Makes positions < end writable (takes pages within the promise) and, for sliding layers,
// gives back the blocks wholly before position first_needed (the oldest key any later query
// of the sequence can see). AE_ERR_NOMEM only if a block table cannot grow.
ae_status ae_kv_pool_grow(ae_kv_pool *p, ae_seq_pages *s, int end, int first_needed);
// Gives back every page and the rest of the promise; s is zeroed.
void ae_kv_pool_release(ae_kv_pool *p, ae_seq_pages *s);
// Slot of position pos of group g (page·page_size + pos % page_size); the block must be held.
int32_t ae_kv_pool_slot(const ae_kv_pool *p, const ae_seq_pages *s, int g, int pos);

#endif
