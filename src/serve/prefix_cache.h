// The prefix cache of the server's KV pool (serve/kv_pool.h): which pages hold a full block of
// a known token prefix, so that a request whose prompt starts with the same tokens attaches
// those pages instead of computing them again (the system prompt / few-shot prefix of a chat
// server sent with every request).
//
// Keys. Block b of a sequence in page group g holds positions [b·P, (b+1)·P) (P = page_size[g]);
// its K/V depend on every token up to (b+1)·P, so its key is the chain hash
// h_b = H(g, h_{b−1}, tokens of block b) with h_{−1} = 0. The map keeps the key, the parent's
// hash and the block's tokens of each published page and compares all three on a lookup, so a
// 64-bit collision of the chain alone never attaches a wrong page.
//
// Pages. A published page stays in the map while sequences hold it and after the last one lets
// it go: then it is evictable, on an LRU list (oldest first) that the pool takes pages from when
// its free list is empty (ae_prefix_cache_evict removes the page from the map). Reference counts
// and the free list are the pool's; this file only keeps keys and the LRU order. Host memory
// only: the kernels read pages through the block tables, shared pages included.
#ifndef AE_SERVE_PREFIX_CACHE_H
#define AE_SERVE_PREFIX_CACHE_H

#include <stdint.h>

#include "core/error.h"

typedef struct {
    int n_pages, max_positions; // page ids are [0, n_pages); blocks hold up to max_positions
    int n_buckets;              // a power of two
    int32_t *bucket;            // (n_buckets) first page of the bucket's chain, −1: empty
    int32_t *chain;             // (n_pages) next page of the same bucket
    int8_t *group;              // (n_pages) page group of a published page, −1: not published
    uint64_t *hash, *parent;    // (n_pages) key and parent key of a published page
    int32_t *tokens;            // (n_pages, max_positions) the block's token ids
    int32_t *lru_prev, *lru_next; // (n_pages) evictable pages, oldest at lru_head; −1: none
    int32_t lru_head, lru_tail;
    int n_published, n_evictable;
    int64_t evictions;          // pages taken out of the map to be written again
} ae_prefix_cache;

ae_status ae_prefix_cache_init(ae_prefix_cache *c, int n_pages, int max_positions);
void ae_prefix_cache_free(ae_prefix_cache *c);

// Chain hash of a block of n tokens of group g after the block whose hash is parent.
uint64_t ae_prefix_hash(int g, uint64_t parent, const int32_t *tokens, int n);

// The published page of that block, or −1.
int32_t ae_prefix_cache_find(const ae_prefix_cache *c, int g, uint64_t hash, uint64_t parent,
                             const int32_t *tokens, int n);
// Publishes page (which holds that block, full and never written again) unless the key is
// already in the map: 1 when published, 0 when another page has it (this one stays private).
int ae_prefix_cache_publish(ae_prefix_cache *c, int32_t page, int g, uint64_t hash,
                            uint64_t parent, const int32_t *tokens, int n);
static inline int ae_prefix_cache_published(const ae_prefix_cache *c, int32_t page) {
    return c->group && c->group[page] >= 0;
}
// LRU of the published pages no sequence holds: a page is pushed when its last holder lets it
// go (newest end) and removed when a sequence attaches it again.
void ae_prefix_cache_lru_push(ae_prefix_cache *c, int32_t page);
void ae_prefix_cache_lru_remove(ae_prefix_cache *c, int32_t page);
// Takes the least recently used evictable page out of the LRU and the map: its id, or −1.
int32_t ae_prefix_cache_evict(ae_prefix_cache *c);

#endif
