// The page pool of the server's KV cache: one backend allocation of n_pages equal pages
// (model/paged.h: layout per attention kind), a free list, and per-sequence block tables.
//
// Admission by pages. A sequence that may grow to `len` positions is admitted only if the pool
// can promise it the most pages it will ever hold at once (ae_kv_pool_pages_for): all its
// blocks for full and latent layers, and for sliding layers only the window plus one prefill
// chunk (older blocks go back to the pool as it advances). The promise is kept as a count, and
// pages are taken lazily as positions are written, so a running sequence never waits for or
// fails on a page, and no preemption is needed.
//
// Prefix caching (serve/prefix_cache.h; full and latent groups, off for models with sliding
// layers). Every page has a reference count: the sequences holding it. A full block a sequence
// has computed is published (its chain hash in the map); a later sequence whose prompt starts
// with the same tokens attaches those pages (ref + 1) instead of computing them, and only ever
// writes positions past them. A page whose count drops to 0 goes to the free list, or, when it
// is published, to the LRU of evictable pages; a page is taken from the free list first, else
// the least recently used evictable page is evicted (out of the map) and written again.
//
// The promise with shared pages. F free pages, E evictable pages, promised = the sum over
// admitted sequences of (reserve − held): pages promised and not yet taken. Invariant:
// F + E >= promised, so a sequence taking a page within its promise always finds one.
// - Admission attaches A pages of cached blocks, A_lru of them evictable now (they leave E),
//   and promises reserve = pages_for(len) − A (the attached blocks are blocks of the sequence
//   it will not take); it is admitted only if reserve <= F + E − A_lru − promised.
// - Taking a page (F or E − 1) consumes one unit of the promise (promised − 1).
// - Letting a page go (count to 0) adds it to F or E; a page still held by others changes
//   nothing. Publishing moves no page. Release gives back the untaken rest of the promise.
// - Sliding layers (no sharing) give a page back to F and re-promise it (promised + 1).
// So F + E − promised never drops below 0 except by admission, which checks it first.
#ifndef AE_SERVE_KV_POOL_H
#define AE_SERVE_KV_POOL_H

#include <stdint.h>

#include "model/paged.h"
#include "serve/prefix_cache.h"

typedef struct {
    ae_paged_layout lo;   // lo.pool: (n_pages, lo.page_stride) act
    const ae_backend *be;
    int n_pages, n_free;
    int32_t *free_list;   // (n_pages) stack of free page ids
    int promised;         // pages promised to admitted sequences and not yet taken
    int max_chunk;        // longest prefill chunk (bounds a sliding sequence's pages)
    int32_t *refs;        // (n_pages) sequences holding the page
    int n_held;           // pages with refs > 0
    int prefix_on;        // 1: blocks are published and attached (ae_kv_pool_enable_prefix)
    ae_prefix_cache pc;   // published blocks and evictable pages (prefix_on)
} ae_kv_pool;

// Pages of one sequence, per group: block b holds positions b·page_size .. (b+1)·page_size−1
// in page blocks[g][b] (−1 once a sliding layer gave it back).
typedef struct {
    int32_t *blocks[AE_PG_COUNT];
    int n_blocks[AE_PG_COUNT], cap_blocks[AE_PG_COUNT];
    int first_live[AE_PG_COUNT]; // blocks before this one were given back
    int held;                    // pages taken from the pool now (attached ones not counted)
    int reserve;                 // pages promised at admission (held never exceeds it)
    int attached;                // pages attached from the prefix cache at admission
    int shared_end[AE_PG_COUNT]; // positions < this are in attached pages: never written
    int n_hashed[AE_PG_COUNT];   // blocks whose chain hash is known (published or attached)
    uint64_t chain[AE_PG_COUNT]; // chain hash of block n_hashed − 1 (0 before the first)
} ae_seq_pages;

// A pool of pages of at least page_positions positions (the most expensive group's) using
// `bytes` of backend memory; max_chunk: the scheduler's longest prefill chunk.
ae_status ae_kv_pool_init(ae_kv_pool *p, const ae_model *m, size_t bytes, int page_positions,
                          int max_chunk);
void ae_kv_pool_free(ae_kv_pool *p);
size_t ae_kv_pool_page_bytes(const ae_kv_pool *p);
// The most pages a sequence of up to len positions holds at once.
int ae_kv_pool_pages_for(const ae_kv_pool *p, int len);
// Pages a new sequence could be promised now: free and evictable pages not promised to others.
int ae_kv_pool_available(const ae_kv_pool *p);
// Switches prefix caching on: AE_ERR_UNSUPPORTED (with the reason) for a layout with sliding
// layers (the pages of a window's past are given back, so a prefix is never whole), AE_ERR_NOMEM.
ae_status ae_kv_pool_enable_prefix(ae_kv_pool *p);
// Promises s the pages of a sequence of up to len positions: 1 on success, 0 when they are not
// available (s untouched).
int ae_kv_pool_admit(ae_kv_pool *p, ae_seq_pages *s, int len);
// ae_kv_pool_admit for a sequence whose first n tokens are known (its prompt): with prefix
// caching on, each shared group g attaches its cached blocks wholly within positions < n − 1
// (the last prompt token must run: its logits give the first token), shared_end[g] positions,
// and *cached = L = the least of them: positions < L are in the cache in every group, the
// sequence computes from L on. Its rows at positions in [L, shared_end[g]) (groups of
// different page sizes) must not write group g (slot −1: paged_store skips them; the pages
// already hold those positions). L == 0: nothing attached, a plain ae_kv_pool_admit.
int ae_kv_pool_admit_prefix(ae_kv_pool *p, ae_seq_pages *s, int len, const int32_t *tokens,
                            int n, int *cached);
// Publishes the full blocks of s within positions < n_done (K/V written by finished steps) of
// tokens (the sequence's ids, prompt then generated). Nothing without prefix caching.
void ae_kv_pool_publish(ae_kv_pool *p, ae_seq_pages *s, const int32_t *tokens, int n_done);
// Makes positions < end writable (takes pages within the promise) and, for sliding layers,
// gives back the blocks wholly before position first_needed (the oldest key any later query
// of the sequence can see). AE_ERR_NOMEM only if a block table cannot grow.
ae_status ae_kv_pool_grow(ae_kv_pool *p, ae_seq_pages *s, int end, int first_needed);
// Gives back every page (its last holder: to the free list, or to the LRU when published; the
// last blocks first, so a prefix's tail is evicted before its head) and the rest of the
// promise; s is zeroed.
void ae_kv_pool_release(ae_kv_pool *p, ae_seq_pages *s);
// Slot of position pos of group g (page·page_size + pos % page_size); the block must be held.
int32_t ae_kv_pool_slot(const ae_kv_pool *p, const ae_seq_pages *s, int g, int pos);
// Checks the pool's books: every page free (count 0, unpublished), evictable (count 0, in the
// LRU) or held (count > 0) exactly once, n_held, and F + E >= promised. AE_OK or AE_ERR_ARG
// naming the first inconsistency (tests).
ae_status ae_kv_pool_audit(const ae_kv_pool *p);

#endif
