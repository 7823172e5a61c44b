// Open-addressing hash maps (linear probing, load factor <= 3/4).
#include "tok/tok_hash.h"

#include <stdlib.h>
#include <string.h>

#include "core/mem.h"

uint32_t ae_tok_hash_bytes(const void *key, size_t len) {
    // FNV-1a, 64-bit, folded
    const unsigned char *p = key;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    return (uint32_t)(h ^ (h >> 32));
}

static size_t pow2_at_least(size_t n) {
    size_t c = 16;
    while (c < n) c <<= 1;
    return c;
}

ae_status ae_strmap_init(ae_strmap *m, size_t expected) {
    m->n = 0;
    m->cap = pow2_at_least(expected + expected / 3 + 1);
    m->slots = ae_calloc(m->cap, sizeof *m->slots);
    return m->slots ? AE_OK : AE_ERR_NOMEM;
}

void ae_strmap_free(ae_strmap *m) {
    free(m->slots);
    m->slots = NULL;
    m->cap = m->n = 0;
}

static ae_strmap_slot *strmap_find(const ae_strmap *m, const char *key, size_t len, uint32_t h) {
    size_t mask = m->cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        ae_strmap_slot *s = &m->slots[i];
        if (!s->key) return s;
        if (s->hash == h && s->len == len && memcmp(s->key, key, len) == 0) return s;
    }
}

static ae_status strmap_grow(ae_strmap *m) {
    ae_strmap bigger = {0};
    bigger.cap = m->cap * 2;
    bigger.slots = ae_calloc(bigger.cap, sizeof *bigger.slots);
    if (!bigger.slots) return AE_ERR_NOMEM;
    for (size_t i = 0; i < m->cap; i++) {
        ae_strmap_slot *s = &m->slots[i];
        if (!s->key) continue;
        *strmap_find(&bigger, s->key, s->len, s->hash) = *s;
    }
    bigger.n = m->n;
    free(m->slots);
    *m = bigger;
    return AE_OK;
}

ae_status ae_strmap_put(ae_strmap *m, const char *key, size_t len, int32_t val, int32_t *prev) {
    if (len > UINT32_MAX) return ae_errorf(AE_ERR_ARG, "hash key too long");
    if ((m->n + 1) * 4 > m->cap * 3) AE_TRY(strmap_grow(m));
    uint32_t h = ae_tok_hash_bytes(key, len);
    ae_strmap_slot *s = strmap_find(m, key, len, h);
    if (prev) *prev = s->key ? s->val : -1;
    if (!s->key) {
        s->key = key;
        s->len = (uint32_t)len;
        s->hash = h;
        m->n++;
    }
    s->val = val;
    return AE_OK;
}

int32_t ae_strmap_get(const ae_strmap *m, const char *key, size_t len) {
    if (!m->slots) return -1;
    ae_strmap_slot *s = strmap_find(m, key, len, ae_tok_hash_bytes(key, len));
    return s->key ? s->val : -1;
}

static uint64_t pair_key(int32_t a, int32_t b) {
    return ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
}

static size_t pair_hash(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    return (size_t)k;
}

static ae_pairmap_slot *pairmap_find(const ae_pairmap *m, uint64_t k) {
    size_t mask = m->cap - 1;
    for (size_t i = pair_hash(k) & mask;; i = (i + 1) & mask) {
        ae_pairmap_slot *s = &m->slots[i];
        if (s->key == k || s->key == UINT64_MAX) return s;
    }
}

ae_status ae_pairmap_init(ae_pairmap *m, size_t expected) {
    m->n = 0;
    m->cap = pow2_at_least(expected + expected / 3 + 1);
    m->slots = ae_malloc(m->cap * sizeof *m->slots);
    if (!m->slots) return AE_ERR_NOMEM;
    memset(m->slots, 0xff, m->cap * sizeof *m->slots);
    return AE_OK;
}

void ae_pairmap_free(ae_pairmap *m) {
    free(m->slots);
    m->slots = NULL;
    m->cap = m->n = 0;
}

ae_status ae_pairmap_put(ae_pairmap *m, int32_t a, int32_t b, int32_t rank, int32_t id) {
    if ((m->n + 1) * 4 > m->cap * 3) {
        ae_pairmap bigger;
        AE_TRY(ae_pairmap_init(&bigger, m->cap));
        for (size_t i = 0; i < m->cap; i++)
            if (m->slots[i].key != UINT64_MAX)
                *pairmap_find(&bigger, m->slots[i].key) = m->slots[i];
        bigger.n = m->n;
        free(m->slots);
        *m = bigger;
    }
    uint64_t k = pair_key(a, b);
    ae_pairmap_slot *s = pairmap_find(m, k);
    if (s->key == UINT64_MAX) {
        s->key = k;
        m->n++;
    }
    s->rank = rank;
    s->id = id;
    return AE_OK;
}

int ae_pairmap_get(const ae_pairmap *m, int32_t a, int32_t b, int32_t *rank, int32_t *id) {
    if (!m->slots) return 0;
    ae_pairmap_slot *s = pairmap_find(m, pair_key(a, b));
    if (s->key == UINT64_MAX) return 0;
    *rank = s->rank;
    *id = s->id;
    return 1;
}
