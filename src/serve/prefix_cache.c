// Prefix cache of the KV pool: published blocks by chain hash, and the LRU of evictable pages
// (serve/prefix_cache.h).
#include "serve/prefix_cache.h"

#include <stdlib.h>
#include <string.h>

#include "core/mem.h"

static uint64_t mix64(uint64_t x) { // splitmix64's finaliser: every input bit moves every output bit
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

uint64_t ae_prefix_hash(int g, uint64_t parent, const int32_t *tokens, int n) {
    uint64_t h = mix64(parent ^ (0x9e3779b97f4a7c15ull * (uint64_t)(g + 1)));
    for (int i = 0; i < n; i++) h = mix64(h ^ (uint32_t)tokens[i]) + (uint64_t)i;
    return mix64(h ^ (uint64_t)n);
}

ae_status ae_prefix_cache_init(ae_prefix_cache *c, int n_pages, int max_positions) {
    memset(c, 0, sizeof *c);
    c->n_pages = n_pages;
    c->max_positions = max_positions;
    c->n_buckets = 1;
    while (c->n_buckets < n_pages) c->n_buckets *= 2; // load factor <= 1: chains of ~1 page
    size_t np = (size_t)n_pages;
    c->bucket = ae_malloc(sizeof(int32_t) * (size_t)c->n_buckets);
    c->chain = ae_malloc(sizeof(int32_t) * np);
    c->group = ae_malloc(np);
    c->hash = ae_malloc(sizeof(uint64_t) * np);
    c->parent = ae_malloc(sizeof(uint64_t) * np);
    c->tokens = ae_malloc(sizeof(int32_t) * np * (size_t)max_positions);
    c->lru_prev = ae_malloc(sizeof(int32_t) * np);
    c->lru_next = ae_malloc(sizeof(int32_t) * np);
    if (!c->bucket || !c->chain || !c->group || !c->hash || !c->parent || !c->tokens ||
        !c->lru_prev || !c->lru_next) {
        ae_prefix_cache_free(c);
        return ae_errorf(AE_ERR_NOMEM, "prefix cache: out of host memory for %d pages of %d "
                         "positions", n_pages, max_positions);
    }
    memset(c->bucket, 0xff, sizeof(int32_t) * (size_t)c->n_buckets);
    memset(c->group, 0xff, np);
    memset(c->lru_prev, 0xff, sizeof(int32_t) * np);
    memset(c->lru_next, 0xff, sizeof(int32_t) * np);
    c->lru_head = c->lru_tail = -1;
    return AE_OK;
}

void ae_prefix_cache_free(ae_prefix_cache *c) {
    free(c->bucket);
    free(c->chain);
    free(c->group);
    free(c->hash);
    free(c->parent);
    free(c->tokens);
    free(c->lru_prev);
    free(c->lru_next);
    memset(c, 0, sizeof *c);
}

static int32_t *bucket_of(const ae_prefix_cache *c, uint64_t hash) {
    return &c->bucket[hash & (uint64_t)(c->n_buckets - 1)];
}

int32_t ae_prefix_cache_find(const ae_prefix_cache *c, int g, uint64_t hash, uint64_t parent,
                             const int32_t *tokens, int n) {
    if (!c->bucket || n > c->max_positions) return -1; // off, or a block it never holds
    for (int32_t p = *bucket_of(c, hash); p >= 0; p = c->chain[p])
        if (c->hash[p] == hash && c->group[p] == g && c->parent[p] == parent &&
            memcmp(c->tokens + (size_t)p * c->max_positions, tokens, sizeof(int32_t) * (size_t)n) == 0)
            return p;
    return -1;
}

int ae_prefix_cache_publish(ae_prefix_cache *c, int32_t page, int g, uint64_t hash,
                            uint64_t parent, const int32_t *tokens, int n) {
    if (!c->bucket || n > c->max_positions || c->group[page] >= 0 ||
        ae_prefix_cache_find(c, g, hash, parent, tokens, n) >= 0)
        return 0;
    int32_t *b = bucket_of(c, hash);
    c->chain[page] = *b;
    *b = page;
    c->group[page] = (int8_t)g;
    c->hash[page] = hash;
    c->parent[page] = parent;
    memcpy(c->tokens + (size_t)page * c->max_positions, tokens, sizeof(int32_t) * (size_t)n);
    c->n_published++;
    return 1;
}

// Takes a published page out of the map (its bucket's chain).
static void unpublish(ae_prefix_cache *c, int32_t page) {
    int32_t *pp = bucket_of(c, c->hash[page]);
    while (*pp != page) pp = &c->chain[*pp];
    *pp = c->chain[page];
    c->group[page] = -1;
    c->n_published--;
}

void ae_prefix_cache_lru_push(ae_prefix_cache *c, int32_t page) {
    c->lru_prev[page] = c->lru_tail;
    c->lru_next[page] = -1;
    if (c->lru_tail >= 0) c->lru_next[c->lru_tail] = page;
    else c->lru_head = page;
    c->lru_tail = page;
    c->n_evictable++;
}

void ae_prefix_cache_lru_remove(ae_prefix_cache *c, int32_t page) {
    int32_t prev = c->lru_prev[page], next = c->lru_next[page];
    if (prev >= 0) c->lru_next[prev] = next;
    else c->lru_head = next;
    if (next >= 0) c->lru_prev[next] = prev;
    else c->lru_tail = prev;
    c->lru_prev[page] = c->lru_next[page] = -1;
    c->n_evictable--;
}

int32_t ae_prefix_cache_evict(ae_prefix_cache *c) {
    int32_t page = c->lru_head;
    if (page < 0) return -1;
    ae_prefix_cache_lru_remove(c, page);
    unpublish(c, page);
    c->evictions++;
    return page;
}
