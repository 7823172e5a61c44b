// Added tokens: splitting text on them exactly as HF's AddedVocabulary::find_matches does
// (Aho-Corasick leftmost-longest, non-overlapping; then single_word / lstrip / rstrip).
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "tok/tok_internal.h"

typedef struct {
    int idx;
    unsigned char first;
    size_t len;
} sort_key;

static int cmp_by_byte_then_len(const void *a, const void *b) {
    const sort_key *x = a, *y = b;
    if (x->first != y->first) return x->first < y->first ? -1 : 1;
    if (x->len != y->len) return x->len > y->len ? -1 : 1;
    return x->idx - y->idx; // same first byte and length: first declared wins
}

ae_status ae_tok_matcher_build(ae_tokenizer *t, ae_tok_matcher *m, int normalized) {
    memset(m, 0, sizeof *m);
    m->idx = ae_calloc((size_t)t->n_added + 1, sizeof *m->idx);
    sort_key *keys = ae_calloc((size_t)t->n_added + 1, sizeof *keys);
    if (!m->idx || !keys) {
        free(keys);
        return AE_ERR_NOMEM;
    }
    int k = 0;
    for (int i = 0; i < t->n_added; i++) {
        const ae_tok_added *a = &t->added[i];
        if (!!a->normalized == !!normalized && a->pattern_len > 0)
            keys[k++] = (sort_key){i, (unsigned char)a->pattern[0], a->pattern_len};
    }
    qsort(keys, (size_t)k, sizeof *keys, cmp_by_byte_then_len);
    for (int i = 0; i < k; i++) m->idx[i] = keys[i].idx;
    int j = 0;
    for (int b = 0; b <= 256; b++) {
        while (j < k && keys[j].first < b) j++;
        m->start[b] = j;
    }
    free(keys);
    return AE_OK;
}

void ae_tok_matcher_free(ae_tok_matcher *m) {
    free(m->idx);
    m->idx = NULL;
}

static int ends_with_word(const char *s, size_t n) {
    if (n == 0) return 0;
    uint32_t cp;
    ae_tok_utf8_prev((const unsigned char *)s, n, &cp);
    return ae_tok_is_word(cp);
}

static int starts_with_word(const char *s, size_t n) {
    if (n == 0) return 0;
    uint32_t cp;
    ae_tok_utf8_next((const unsigned char *)s, n, &cp);
    return ae_tok_is_word(cp);
}

// Start of the run of white space at the end of s[0..n).
static size_t space_leftmost_at_end(const char *s, size_t n) {
    while (n > 0) {
        uint32_t cp;
        int k = ae_tok_utf8_prev((const unsigned char *)s, n, &cp);
        if (!ae_tok_is_white_space(cp)) break;
        n -= (size_t)k;
    }
    return n;
}

// Length of the run of white space at the start of s[0..n).
static size_t space_rightmost_at_start(const char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint32_t cp;
        int k = ae_tok_utf8_next((const unsigned char *)s + i, n - i, &cp);
        if (!ae_tok_is_white_space(cp)) break;
        i += (size_t)k;
    }
    return i;
}

// Leftmost-longest match at or after `from`: returns the added index or -1.
static int next_match(const ae_tokenizer *t, const ae_tok_matcher *m, const char *s, size_t n,
                      size_t from, size_t *at) {
    if (m->start[256] == 0) return -1;
    for (size_t i = from; i < n; i++) {
        unsigned char b = (unsigned char)s[i];
        for (int j = m->start[b]; j < m->start[b + 1]; j++) {
            const ae_tok_added *a = &t->added[m->idx[j]];
            if (a->pattern_len <= n - i && memcmp(s + i, a->pattern, a->pattern_len) == 0) {
                *at = i;
                return m->idx[j];
            }
        }
    }
    return -1;
}

static ae_status push_split(ae_tok_split **v, size_t *n, size_t *cap, size_t start, size_t end,
                            int32_t id) {
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 8;
        ae_tok_split *p = ae_realloc(*v, c * sizeof *p);
        if (!p) return AE_ERR_NOMEM;
        *v = p;
        *cap = c;
    }
    (*v)[(*n)++] = (ae_tok_split){start, end, id};
    return AE_OK;
}

ae_status ae_tok_find_added(const ae_tokenizer *t, const ae_tok_matcher *m, const char *s, size_t n,
                            ae_tok_split **splits, size_t *nsplits) {
    ae_tok_split *v = NULL;
    size_t nv = 0, cap = 0, start_offset = 0, pos = 0, at;
    ae_status st = AE_OK;
    *splits = NULL;
    *nsplits = 0;
    int ai;
    while ((ai = next_match(t, m, s, n, pos, &at)) >= 0) {
        const ae_tok_added *a = &t->added[ai];
        size_t start = at, stop = at + a->pattern_len;
        pos = stop; // the automaton's next search starts after this match, whatever we keep
        if (a->single_word) {
            int start_space = start == 0 || !ends_with_word(s, start);
            int stop_space = stop == n || !starts_with_word(s + stop, n - stop);
            if (!start_space || !stop_space) continue;
        }
        if (a->lstrip) {
            size_t ns = space_leftmost_at_end(s, start);
            start = ns > start_offset ? ns : start_offset;
        }
        if (a->rstrip) stop += space_rightmost_at_start(s + stop, n - stop);
        if (start_offset < start && (st = push_split(&v, &nv, &cap, start_offset, start, -1)))
            goto fail;
        if ((st = push_split(&v, &nv, &cap, start, stop, a->id))) goto fail;
        start_offset = stop;
    }
    if (start_offset < n && (st = push_split(&v, &nv, &cap, start_offset, n, -1))) goto fail;
    *splits = v;
    *nsplits = nv;
    return AE_OK;
fail:
    free(v);
    return st;
}
