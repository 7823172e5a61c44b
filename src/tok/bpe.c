// The BPE model: one pre-token (its raw bytes; each byte is one GPT-2 char) -> ids, merging by
// rank exactly as HF's Word::merge_all (a min-heap on (rank, position), stale entries skipped),
// with unk / fuse_unk / byte_fallback as HF's BPE::merge_word. A per-call cache maps pre-token
// bytes to their ids.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "tok/tok_internal.h"

struct ae_tok_bpe_cache {
    ae_strmap map; // key (owned copy in keys[]) -> index into ent
    char **keys;
    size_t nkeys, capkeys;
    ae_tok_ids ids; // concatenated results
    struct {
        uint32_t off, n;
    } * ent;
    size_t nent, capent;
};

#define CACHE_MAX_ENTRIES 1000000
#define CACHE_MAX_KEY 256

ae_tok_bpe_cache *ae_tok_bpe_cache_new(void) {
    ae_tok_bpe_cache *c = ae_calloc(1, sizeof *c);
    if (c && ae_strmap_init(&c->map, 1024) != AE_OK) {
        free(c);
        return NULL;
    }
    return c;
}

void ae_tok_bpe_cache_free(ae_tok_bpe_cache *c) {
    if (!c) return;
    for (size_t i = 0; i < c->nkeys; i++) free(c->keys[i]);
    free(c->keys);
    free(c->ids.p);
    free(c->ent);
    ae_strmap_free(&c->map);
    free(c);
}

static ae_status cache_put(ae_tok_bpe_cache *c, const unsigned char *s, size_t n,
                           const int32_t *ids, size_t nids) {
    if (c->nent >= CACHE_MAX_ENTRIES || n > CACHE_MAX_KEY || c->ids.n + nids > UINT32_MAX)
        return AE_OK;
    if (c->nkeys == c->capkeys) {
        size_t cap = c->capkeys ? c->capkeys * 2 : 256;
        char **k = ae_realloc(c->keys, cap * sizeof *k);
        if (!k) return AE_ERR_NOMEM;
        c->keys = k;
        c->capkeys = cap;
    }
    if (c->nent == c->capent) {
        size_t cap = c->capent ? c->capent * 2 : 256;
        void *e = ae_realloc(c->ent, cap * sizeof *c->ent);
        if (!e) return AE_ERR_NOMEM;
        c->ent = e;
        c->capent = cap;
    }
    char *key = ae_malloc(n);
    if (!key) return AE_ERR_NOMEM;
    memcpy(key, s, n);
    c->keys[c->nkeys++] = key;
    c->ent[c->nent].off = (uint32_t)c->ids.n;
    c->ent[c->nent].n = (uint32_t)nids;
    for (size_t i = 0; i < nids; i++) AE_TRY(ae_tok_ids_push(&c->ids, ids[i]));
    AE_TRY(ae_strmap_put(&c->map, key, n, (int32_t)c->nent, NULL));
    c->nent++;
    return AE_OK;
}

typedef struct {
    int32_t c;          // token id
    int32_t prev, next; // neighbour indices, -1 at the ends
    uint32_t len;       // bytes covered; 0 = merged away
} symbol;

typedef struct {
    int32_t rank, pos, id;
} merge_ent;

static int merge_less(const merge_ent *a, const merge_ent *b) {
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static void heap_push(merge_ent *h, size_t *n, merge_ent e) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!merge_less(&e, &h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = e;
}

static merge_ent heap_pop(merge_ent *h, size_t *n) {
    merge_ent top = h[0], last = h[--*n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1;
        if (l >= *n) break;
        if (l + 1 < *n && merge_less(&h[l + 1], &h[l])) l++;
        if (!merge_less(&h[l], &last)) break;
        h[i] = h[l];
        i = l;
    }
    h[i] = last;
    return top;
}

static void add_symbol(symbol *sy, int32_t *ns, int32_t id, uint32_t len) {
    int32_t k = (*ns)++;
    sy[k] = (symbol){id, k - 1, -1, len};
    if (k > 0) sy[k - 1].next = k;
}

// HF's BPE::merge_word over bytes, then Word::merge_all. sy has room for n symbols.
static int32_t merge_word(const ae_tokenizer *t, const unsigned char *s, size_t n, symbol *sy,
                          merge_ent *heap) {
    int32_t ns = 0;
    int32_t unk_len = -1; // pending unk symbol (its byte length), -1 when none
    for (size_t i = 0; i < n; i++) {
        int32_t id = t->byte_id[s[i]];
        if (id >= 0) {
            if (unk_len >= 0) add_symbol(sy, &ns, t->unk_id, (uint32_t)unk_len);
            unk_len = -1;
            add_symbol(sy, &ns, id, 1);
            continue;
        }
        if (t->byte_fallback && t->byte_fallback_id[s[i]] >= 0) {
            add_symbol(sy, &ns, t->byte_fallback_id[s[i]], 1);
            continue;
        }
        if (t->unk_id >= 0) {
            if (unk_len >= 0 && t->fuse_unk) {
                unk_len += 1;
            } else {
                if (unk_len >= 0) add_symbol(sy, &ns, t->unk_id, (uint32_t)unk_len);
                unk_len = 1;
            }
        }
    }
    if (unk_len >= 0) add_symbol(sy, &ns, t->unk_id, (uint32_t)unk_len);

    size_t nh = 0;
    int32_t rank, nid;
    for (int32_t i = 0; i + 1 < ns; i++)
        if (ae_pairmap_get(&t->merges, sy[i].c, sy[i + 1].c, &rank, &nid))
            heap_push(heap, &nh, (merge_ent){rank, i, nid});
    while (nh > 0) {
        merge_ent top = heap_pop(heap, &nh);
        symbol *cur = &sy[top.pos];
        if (cur->len == 0 || cur->next < 0) continue;
        int32_t next_pos = cur->next;
        symbol right = sy[next_pos];
        if (!ae_pairmap_get(&t->merges, cur->c, right.c, &rank, &nid) || nid != top.id) continue;
        cur->c = top.id;
        cur->len += right.len;
        cur->next = right.next;
        sy[next_pos].len = 0;
        if (right.next >= 0) sy[right.next].prev = top.pos;
        if (cur->prev >= 0 && ae_pairmap_get(&t->merges, sy[cur->prev].c, cur->c, &rank, &nid))
            heap_push(heap, &nh, (merge_ent){rank, cur->prev, nid});
        if (cur->next >= 0 && ae_pairmap_get(&t->merges, cur->c, sy[cur->next].c, &rank, &nid))
            heap_push(heap, &nh, (merge_ent){rank, top.pos, nid});
    }
    int32_t k = 0;
    for (int32_t i = 0; i < ns; i++)
        if (sy[i].len) sy[k++].c = sy[i].c;
    return k;
}

static ae_status ignore_merges_lookup(const ae_tokenizer *t, const unsigned char *s, size_t n,
                                      int32_t *id) {
    ae_tok_buf b = {0};
    for (size_t i = 0; i < n; i++) {
        uint32_t cp = ae_tok_byte_to_cp(s[i]);
        char u[2];
        size_t k = 1;
        if (cp < 0x80)
            u[0] = (char)cp;
        else {
            u[0] = (char)(0xC0 | (cp >> 6));
            u[1] = (char)(0x80 | (cp & 0x3F));
            k = 2;
        }
        ae_status st = ae_tok_buf_put(&b, u, k);
        if (st != AE_OK) {
            free(b.p);
            return st;
        }
    }
    *id = ae_strmap_get(&t->vocab, b.p ? b.p : "", b.n);
    free(b.p);
    return AE_OK;
}

ae_status ae_tok_bpe_word(const ae_tokenizer *t, const unsigned char *s, size_t n,
                          ae_tok_bpe_cache *cache, ae_tok_ids *ids) {
    if (n == 0) return AE_OK;
    if (n == 1 && t->byte_id[s[0]] >= 0) return ae_tok_ids_push(ids, t->byte_id[s[0]]);
    if (t->ignore_merges) {
        int32_t id;
        AE_TRY(ignore_merges_lookup(t, s, n, &id));
        if (id >= 0) return ae_tok_ids_push(ids, id);
    }
    if (cache) {
        int32_t e = ae_strmap_get(&cache->map, (const char *)s, n);
        if (e >= 0) {
            for (uint32_t i = 0; i < cache->ent[e].n; i++)
                AE_TRY(ae_tok_ids_push(ids, cache->ids.p[cache->ent[e].off + i]));
            return AE_OK;
        }
    }
    symbol small_sy[64];
    merge_ent small_heap[3 * 64];
    symbol *sy = small_sy;
    merge_ent *heap = small_heap;
    // each merge pushes at most 2 entries on top of the n - 1 initial ones
    if (n > 64) {
        sy = ae_calloc(n, sizeof *sy);
        heap = ae_calloc(3 * n, sizeof *heap);
        if (!sy || !heap) {
            free(sy);
            free(heap);
            return AE_ERR_NOMEM;
        }
    }
    int32_t k = merge_word(t, s, n, sy, heap);
    ae_status st = AE_OK;
    for (int32_t i = 0; i < k && st == AE_OK; i++) st = ae_tok_ids_push(ids, sy[i].c);
    if (st == AE_OK && cache && k > 0) {
        int32_t *out = ids->p + ids->n - k;
        st = cache_put(cache, s, n, out, (size_t)k);
    }
    if (sy != small_sy) {
        free(sy);
        free(heap);
    }
    return st;
}
