// A growable heap string for text builders: appends never fail loudly; the first failed
// allocation sets `failed` and later appends are ignored, so a builder checks once, at
// ae_sbuf_take.
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

#endif
