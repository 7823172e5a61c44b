// A growable heap string for text builders: appends never fail loudly; the first failed
// allocation sets `failed` and later appends are ignored, so a builder checks once, at
// ae_sbuf_take. And a growable list of heap strings it owns (ae_strv).
#ifndef AE_CORE_SBUF_H
#define AE_CORE_SBUF_H

#include <stddef.h>

typedef struct {
    char *s;      // NUL-terminated once anything was appended; NULL before
    size_t len, cap;
    int failed;
} ae_sbuf;

void ae_sbuf_add(ae_sbuf *b, const char *s, size_t n);
void ae_sbuf_adds(ae_sbuf *b, const char *s);
// The string (heap, caller frees; "" when nothing was appended), or NULL after an allocation
// failure. The buffer is empty afterwards either way.
char *ae_sbuf_take(ae_sbuf *b);

typedef struct {
    char **v; // (n) the strings, owned
    int n, cap;
} ae_strv;

// Appends s (heap: the list takes it) and returns it; NULL when s is NULL or out of memory
// (then s is freed).
char *ae_strv_push(ae_strv *l, char *s);
// Frees the strings; the list stays allocated (n = 0), for reuse.
void ae_strv_clear(ae_strv *l);
// Frees the strings and the list.
void ae_strv_free(ae_strv *l);

#endif
