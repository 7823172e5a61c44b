#include "core/mem.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

void *ae_malloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) ae_errorf(AE_ERR_NOMEM, "out of memory allocating %zu bytes", n);
    return p;
}

int ae_mul_size(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > SIZE_MAX / a) return -1;
    *out = a * b;
    return 0;
}

void *ae_calloc(size_t count, size_t size) {
    size_t n;
    if (ae_mul_size(count, size, &n) != 0) {
        ae_errorf(AE_ERR_NOMEM, "allocation size overflow (%zu x %zu)", count, size);
        return NULL;
    }
    void *p = calloc(n ? n : 1, 1);
    if (!p) ae_errorf(AE_ERR_NOMEM, "out of memory allocating %zu bytes", n);
    return p;
}

void *ae_realloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) ae_errorf(AE_ERR_NOMEM, "out of memory allocating %zu bytes", n);
    return q;
}

char *ae_strndup(const char *s, size_t n) {
    char *d = ae_malloc(n + 1);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

char *ae_strdup(const char *s) { return ae_strndup(s, strlen(s)); }

float *ae_alloc_f32(size_t n) {
    size_t bytes;
    if (ae_mul_size(n ? n : 1, sizeof(float), &bytes) != 0) {
        ae_errorf(AE_ERR_NOMEM, "allocation size overflow (%zu floats)", n);
        return NULL;
    }
    bytes = (bytes + 63) & ~(size_t)63;
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes) != 0) {
        ae_errorf(AE_ERR_NOMEM, "out of memory allocating %zu bytes", bytes);
        return NULL;
    }
    memset(p, 0, bytes);
    return p;
}

void ae_free_aligned(void *p) { free(p); }
