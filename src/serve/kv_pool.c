// Page pool of the server's KV cache (serve/kv_pool.h).
#include "serve/kv_pool.h"

#include <stdlib.h>
#include <string.h>

#include "core/mem.h"

ae_status ae_kv_pool_init(ae_kv_pool *p, const ae_model *m, size_t bytes, int page_positions,
                          int max_chunk) {
    memset(p, 0, sizeof *p);
    AE_TRY(ae_paged_layout_init(&p->lo, m, page_positions));
    p->be = m->be;
    p->max_chunk = max_chunk > 0 ? max_chunk : 1;
    size_t pb = ae_kv_pool_page_bytes(p);
    size_t n = bytes / pb;
    if (n < 1 || n > (size_t)1 << 30) {
        ae_paged_layout_free(&p->lo);
        return ae_errorf(AE_ERR_ARG, "KV cache of %zu bytes holds %zu pages of %zu bytes", bytes,
                         n, pb);
    }
    p->n_pages = (int)n;
    p->free_list = ae_malloc(sizeof(int32_t) * n);
    p->refs = ae_calloc(n, sizeof(int32_t));
    p->lo.pool = p->be->alloc(p->be, n * (size_t)p->lo.page_stride, p->be->act_dtype);
    if (!p->free_list || !p->refs || ae_ptr_is_null(p->lo.pool)) {
        ae_kv_pool_free(p);
        return ae_errorf(AE_ERR_NOMEM, "KV cache: cannot allocate %zu pages (%.2f GiB)", n,
                         (double)(n * pb) / (1 << 30));
    }
    p->pc.lru_head = p->pc.lru_tail = -1; // no prefix cache until ae_kv_pool_enable_prefix
    for (int i = 0; i < p->n_pages; i++) p->free_list[i] = p->n_pages - 1 - i;
    p->n_free = p->n_pages;
    return AE_OK;
}

void ae_kv_pool_free(ae_kv_pool *p) {
    if (p->be) p->be->free(p->be, p->lo.pool);
    free(p->free_list);
    free(p->refs);
    ae_prefix_cache_free(&p->pc);
    ae_paged_layout_free(&p->lo);
    memset(p, 0, sizeof *p);
}

size_t ae_kv_pool_page_bytes(const ae_kv_pool *p) {
    return (size_t)p->lo.page_stride * ae_dtype_size(p->be->act_dtype);
}

static int blocks_for(int len, int P) { return (len + P - 1) / P; }

int ae_kv_pool_pages_for(const ae_kv_pool *p, int len) {
    int n = 0;
    for (int g = 0; g < AE_PG_COUNT; g++) {
        int P = p->lo.page_size[g];
        if (!P) continue;
        int b = blocks_for(len, P);
        if (g == AE_PG_SLIDING) { // window − 1 keys behind the oldest query of a chunk
            int live = blocks_for(p->lo.window - 1 + p->max_chunk, P) + 1;
            if (live < b) b = live;
        }
        n += b;
    }
    return n;
}

int ae_kv_pool_available(const ae_kv_pool *p) {
    return p->n_free + p->pc.n_evictable - p->promised;
}

// Groups whose blocks are shared: full and latent layers keep every position.
static int shared_group(const ae_kv_pool *p, int g) {
    return p->lo.page_size[g] > 0 && g != AE_PG_SLIDING;
}

ae_status ae_kv_pool_enable_prefix(ae_kv_pool *p) {
    if (p->lo.page_size[AE_PG_SLIDING])
        return ae_errorf(AE_ERR_UNSUPPORTED, "the model has sliding-window layers (their pages "
                         "behind the window are given back, so a cached prefix is never whole)");
    int widest = 1;
    for (int g = 0; g < AE_PG_COUNT; g++)
        if (shared_group(p, g) && p->lo.page_size[g] > widest) widest = p->lo.page_size[g];
    AE_TRY(ae_prefix_cache_init(&p->pc, p->n_pages, widest));
    p->prefix_on = 1;
    return AE_OK;
}

// Block table of group g grown to hold need blocks.
static ae_status ensure_blocks(ae_seq_pages *s, int g, int need) {
    if (need <= s->cap_blocks[g]) return AE_OK;
    int cap = s->cap_blocks[g] ? s->cap_blocks[g] : 16;
    while (cap < need) cap *= 2;
    int32_t *nb = realloc(s->blocks[g], sizeof(int32_t) * (size_t)cap);
    if (!nb) return ae_errorf(AE_ERR_NOMEM, "KV pool: out of host memory for a block table");
    s->blocks[g] = nb;
    s->cap_blocks[g] = cap;
    return AE_OK;
}

// A page for a new block: a free one, else the least recently used evictable one (−1: none).
static int32_t take_page(ae_kv_pool *p) {
    int32_t page = p->n_free ? p->free_list[--p->n_free] : ae_prefix_cache_evict(&p->pc);
    if (page < 0) return -1;
    p->refs[page] = 1;
    p->n_held++;
    return page;
}

// One holder lets page go: the last one gives it to the LRU (published) or the free list.
static void put_page(ae_kv_pool *p, int32_t page) {
    if (--p->refs[page] > 0) return;
    p->n_held--;
    if (ae_prefix_cache_published(&p->pc, page)) ae_prefix_cache_lru_push(&p->pc, page);
    else p->free_list[p->n_free++] = page;
}

// One more holder of a cached page (out of the LRU if no one held it).
static void attach_page(ae_kv_pool *p, int32_t page) {
    if (p->refs[page]++ == 0) {
        ae_prefix_cache_lru_remove(&p->pc, page);
        p->n_held++;
    }
}

int ae_kv_pool_admit(ae_kv_pool *p, ae_seq_pages *s, int len) {
    int need = ae_kv_pool_pages_for(p, len);
    if (need > ae_kv_pool_available(p)) return 0;
    memset(s, 0, sizeof *s);
    s->reserve = need;
    p->promised += need;
    return 1;
}

// Cached blocks of group g at the start of tokens[0..n): their count (at most n / P), their
// pages into pages[] (when not NULL) and the chain hash of the last one into *chain.
static int match_blocks(const ae_kv_pool *p, int g, const int32_t *tokens, int n, int32_t *pages,
                        uint64_t *chain) {
    int P = p->lo.page_size[g], b = 0;
    uint64_t h = 0;
    for (; (b + 1) * P <= n; b++) {
        const int32_t *t = tokens + (size_t)b * P;
        uint64_t hb = ae_prefix_hash(g, h, t, P);
        int32_t page = ae_prefix_cache_find(&p->pc, g, hb, h, t, P);
        if (page < 0) break;
        if (pages) pages[b] = page;
        h = hb;
    }
    *chain = h;
    return b;
}

int ae_kv_pool_admit_prefix(ae_kv_pool *p, ae_seq_pages *s, int len, const int32_t *tokens,
                            int n, int *cached) {
    *cached = 0;
    if (!p->prefix_on || n < 2) return ae_kv_pool_admit(p, s, len);
    ae_seq_pages t;
    memset(&t, 0, sizeof t);
    int L = n - 1, attached = 0, from_lru = 0, ok = 1;
    for (int g = 0; g < AE_PG_COUNT && ok; g++) { // each group's cached blocks within n − 1
        if (!shared_group(p, g)) continue;
        int P = p->lo.page_size[g];
        ok = ensure_blocks(&t, g, (n - 1) / P) == AE_OK; // no table: admit without the cache
        int nb = ok ? match_blocks(p, g, tokens, n - 1, t.blocks[g], &t.chain[g]) : 0;
        t.n_blocks[g] = t.n_hashed[g] = nb;
        t.shared_end[g] = nb * P;
        L = nb * P < L ? nb * P : L;
        attached += nb;
        for (int b = 0; b < nb; b++) from_lru += p->refs[t.blocks[g][b]] == 0;
    }
    int need = ae_kv_pool_pages_for(p, len) - attached;
    if (!ok || L == 0 || need > ae_kv_pool_available(p) - from_lru) {
        for (int g = 0; g < AE_PG_COUNT; g++) free(t.blocks[g]);
        return ok && L > 0 ? 0 : ae_kv_pool_admit(p, s, len);
    }
    for (int g = 0; g < AE_PG_COUNT; g++)
        for (int b = 0; b < t.n_blocks[g]; b++) attach_page(p, t.blocks[g][b]);
    t.reserve = need;
    t.attached = attached;
    p->promised += need;
    *s = t;
    *cached = L;
    return 1;
}

void ae_kv_pool_publish(ae_kv_pool *p, ae_seq_pages *s, const int32_t *tokens, int n_done) {
    if (!p->prefix_on) return;
    for (int g = 0; g < AE_PG_COUNT; g++) {
        if (!shared_group(p, g)) continue;
        int P = p->lo.page_size[g];
        while (s->n_hashed[g] < s->n_blocks[g] && (s->n_hashed[g] + 1) * P <= n_done) {
            int b = s->n_hashed[g];
            const int32_t *t = tokens + (size_t)b * P;
            uint64_t h = ae_prefix_hash(g, s->chain[g], t, P);
            ae_prefix_cache_publish(&p->pc, s->blocks[g][b], g, h, s->chain[g], t, P);
            s->chain[g] = h;
            s->n_hashed[g]++;
        }
    }
}

ae_status ae_kv_pool_grow(ae_kv_pool *p, ae_seq_pages *s, int end, int first_needed) {
    for (int g = 0; g < AE_PG_COUNT; g++) {
        int P = p->lo.page_size[g];
        if (!P) continue;
        if (g == AE_PG_SLIDING) { // blocks wholly before first_needed are no longer read
            int keep_from = first_needed > 0 ? first_needed / P : 0;
            for (; s->first_live[g] < keep_from && s->first_live[g] < s->n_blocks[g]; s->first_live[g]++) {
                int32_t *b = &s->blocks[g][s->first_live[g]];
                if (*b < 0) continue;
                put_page(p, *b);
                *b = -1;
                s->held--;
                p->promised++;
            }
        }
        int need = blocks_for(end, P);
        AE_TRY(ensure_blocks(s, g, need));
        while (s->n_blocks[g] < need) {
            int32_t page = -1;
            int b = s->n_blocks[g];
            if (g != AE_PG_SLIDING || (b + 1) * P > first_needed) {
                if (s->held >= s->reserve || p->promised == 0 || (page = take_page(p)) < 0)
                    return ae_errorf(AE_ERR_ARG, "KV pool: a sequence outgrew its page promise");
                s->held++;
                p->promised--;
            }
            s->blocks[g][s->n_blocks[g]++] = page;
        }
    }
    return AE_OK;
}

void ae_kv_pool_release(ae_kv_pool *p, ae_seq_pages *s) {
    for (int g = 0; g < AE_PG_COUNT; g++) {
        for (int b = s->n_blocks[g] - 1; b >= 0; b--)
            if (s->blocks[g][b] >= 0) put_page(p, s->blocks[g][b]);
        free(s->blocks[g]);
    }
    p->promised -= s->reserve - s->held;
    memset(s, 0, sizeof *s);
}

int32_t ae_kv_pool_slot(const ae_kv_pool *p, const ae_seq_pages *s, int g, int pos) {
    int P = p->lo.page_size[g];
    return s->blocks[g][pos / P] * P + pos % P;
}

ae_status ae_kv_pool_audit(const ae_kv_pool *p) {
    const ae_prefix_cache *c = &p->pc;
    int held = 0, evictable = 0;
    uint8_t *seen = calloc((size_t)p->n_pages, 1);
    if (!seen) return ae_errorf(AE_ERR_NOMEM, "KV pool audit: out of host memory");
    ae_status st = AE_OK;
    for (int i = 0; i < p->n_free && st == AE_OK; i++) {
        int32_t q = p->free_list[i];
        if (seen[q]++ || p->refs[q] != 0 || ae_prefix_cache_published(c, q))
            st = ae_errorf(AE_ERR_ARG, "KV pool: free page %d is listed twice, held (%d) or "
                           "published", q, p->refs[q]);
    }
    for (int32_t q = c->lru_head; q >= 0 && st == AE_OK; q = c->lru_next[q]) {
        evictable++;
        if (seen[q]++ || p->refs[q] != 0 || !ae_prefix_cache_published(c, q))
            st = ae_errorf(AE_ERR_ARG, "KV pool: evictable page %d is listed twice, held (%d) or "
                           "unpublished", q, p->refs[q]);
    }
    for (int q = 0; q < p->n_pages && st == AE_OK; q++) {
        held += p->refs[q] > 0;
        if (p->refs[q] < 0 || (!seen[q] && p->refs[q] == 0))
            st = ae_errorf(AE_ERR_ARG, "KV pool: page %d has count %d and is neither free nor "
                           "evictable (leaked)", q, p->refs[q]);
    }
    free(seen);
    if (st == AE_OK && (held != p->n_held || evictable != c->n_evictable))
        st = ae_errorf(AE_ERR_ARG, "KV pool: %d pages held (counted %d), %d evictable (counted %d)",
                       held, p->n_held, evictable, c->n_evictable);
    if (st == AE_OK && ae_kv_pool_available(p) < 0)
        st = ae_errorf(AE_ERR_ARG, "KV pool: %d free + %d evictable pages < %d promised",
                       p->n_free, c->n_evictable, p->promised);
    return st;
}
