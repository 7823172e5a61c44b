// Growable heap strings and lists of them (core/sbuf.h).
#include "core/sbuf.h"

#include <stdlib.h>
#include <string.h>

#include "core/mem.h"

void ae_sbuf_add(ae_sbuf *b, const char *s, size_t n) {
    if (b->failed) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = ae_realloc(b->s, cap);
        if (!p) {
            b->failed = 1;
            return;
        }
        b->s = p;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

void ae_sbuf_adds(ae_sbuf *b, const char *s) { ae_sbuf_add(b, s, strlen(s)); }

char *ae_sbuf_take(ae_sbuf *b) {
    if (b->failed) {
        free(b->s);
        memset(b, 0, sizeof *b);
        return NULL;
    }
    char *s = b->s ? b->s : ae_strdup("");
    memset(b, 0, sizeof *b);
    return s;
}

char *ae_strv_push(ae_strv *l, char *s) {
    if (!s) return NULL;
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 8;
        char **v = ae_realloc(l->v, sizeof *v * (size_t)cap);
        if (!v) {
            free(s);
            return NULL;
        }
        l->v = v;
        l->cap = cap;
    }
    return l->v[l->n++] = s;
}

void ae_strv_clear(ae_strv *l) {
    for (int i = 0; i < l->n; i++) free(l->v[i]);
    l->n = 0;
}

void ae_strv_free(ae_strv *l) {
    ae_strv_clear(l);
    free(l->v);
    memset(l, 0, sizeof *l);
}
