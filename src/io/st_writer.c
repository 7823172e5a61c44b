// safetensors writer: header {"__metadata__": {...}, "<name>": {"dtype", "shape",
// "data_offsets"}, ...} in insertion order, padded with spaces so the data buffer starts at a
// multiple of 8 bytes, then the tensors back to back; written atomically (temp file + rename).
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "core/mem.h"
#include "io/safetensors.h"
#include "io/st_internal.h"

typedef struct {
    char *name;
    ae_dtype dtype;
    int ndim;
    int64_t shape[AE_ST_MAX_DIMS];
    const void *data;
    size_t nbytes;
} wt;

struct ae_st_writer {
    wt *t;
    size_t n, cap;
    char **meta; // (n_meta, 2)
    size_t n_meta, cap_meta;
};

typedef struct {
    char *p;
    size_t len, cap;
    int oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (b->len + n + 1 > cap) cap *= 2;
        char *q = ae_realloc(b->p, cap);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0) sb_put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

// JSON string literal (UTF-8 passes through; quotes, backslashes and controls escaped).
static void sb_json_str(sbuf *b, const char *s) {
    sb_put(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"') sb_put(b, "\\\"", 2);
        else if (*p == '\\') sb_put(b, "\\\\", 2);
        else if (*p < 0x20) sb_printf(b, "\\u%04x", *p);
        else sb_put(b, (const char *)p, 1);
    }
    sb_put(b, "\"", 1);
}

ae_status ae_st_writer_init(ae_st_writer **out) {
    *out = ae_calloc(1, sizeof **out);
    return *out ? AE_OK : AE_ERR_NOMEM;
}

void ae_st_writer_free(ae_st_writer *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n; i++) free(w->t[i].name);
    free(w->t);
    for (size_t i = 0; i < 2 * w->n_meta; i++) free(w->meta[i]);
    free(w->meta);
    free(w);
}

static ae_status check_string(const char *what, const char *s) {
    if (!ae_st_utf8_valid((const unsigned char *)s, strlen(s)))
        return ae_errorf(AE_ERR_ARG, "safetensors writer: %s is not valid UTF-8", what);
    return AE_OK;
}

ae_status ae_st_writer_add(ae_st_writer *w, const char *name, ae_dtype dtype, int ndim,
                           const int64_t *shape, const void *data) {
    if ((unsigned)dtype >= AE_DT_COUNT)
        return ae_errorf(AE_ERR_ARG, "safetensors writer: tensor \"%s\": bad dtype %d", name,
                         (int)dtype);
    if (ndim < 0 || ndim > AE_ST_MAX_DIMS)
        return ae_errorf(AE_ERR_ARG, "safetensors writer: tensor \"%s\": %d dimensions", name,
                         ndim);
    if (strcmp(name, "__metadata__") == 0)
        return ae_errorf(AE_ERR_ARG, "safetensors writer: \"__metadata__\" is reserved");
    AE_TRY(check_string("tensor name", name));
    for (size_t i = 0; i < w->n; i++)
        if (strcmp(w->t[i].name, name) == 0)
            return ae_errorf(AE_ERR_ARG, "safetensors writer: duplicate tensor \"%s\"", name);
    size_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0 || (uint64_t)shape[i] > SIZE_MAX ||
            ae_mul_size(numel, (size_t)shape[i], &numel) != 0)
            return ae_errorf(AE_ERR_ARG, "safetensors writer: tensor \"%s\": bad shape", name);
    }
    size_t nbytes;
    if (ae_mul_size(numel, ae_dtype_size(dtype), &nbytes) != 0)
        return ae_errorf(AE_ERR_ARG, "safetensors writer: tensor \"%s\": size overflows", name);
    if (nbytes && !data)
        return ae_errorf(AE_ERR_ARG, "safetensors writer: tensor \"%s\": no data", name);
    if (w->n == w->cap) {
        size_t cap = w->cap ? 2 * w->cap : 64;
        wt *t = ae_realloc(w->t, cap * sizeof *t);
        if (!t) return AE_ERR_NOMEM;
        w->t = t;
        w->cap = cap;
    }
    wt *t = &w->t[w->n];
    memset(t, 0, sizeof *t);
    t->name = ae_strdup(name);
    if (!t->name) return AE_ERR_NOMEM;
    t->dtype = dtype;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->data = data;
    t->nbytes = nbytes;
    w->n++;
    return AE_OK;
}

ae_status ae_st_writer_metadata(ae_st_writer *w, const char *key, const char *value) {
    AE_TRY(check_string("metadata key", key));
    AE_TRY(check_string("metadata value", value));
    char *v = ae_strdup(value);
    if (!v) return AE_ERR_NOMEM;
    for (size_t i = 0; i < w->n_meta; i++) {
        if (strcmp(w->meta[2 * i], key) == 0) { // last value wins
            free(w->meta[2 * i + 1]);
            w->meta[2 * i + 1] = v;
            return AE_OK;
        }
    }
    if (w->n_meta == w->cap_meta) {
        size_t cap = w->cap_meta ? 2 * w->cap_meta : 8;
        char **m = ae_realloc(w->meta, 2 * cap * sizeof *m);
        if (!m) {
            free(v);
            return AE_ERR_NOMEM;
        }
        w->meta = m;
        w->cap_meta = cap;
    }
    char *k = ae_strdup(key);
    if (!k) {
        free(v);
        return AE_ERR_NOMEM;
    }
    w->meta[2 * w->n_meta] = k;
    w->meta[2 * w->n_meta + 1] = v;
    w->n_meta++;
    return AE_OK;
}

ae_status ae_st_writer_finish(ae_st_writer *w, const char *path) {
    sbuf h = {0};
    sb_str(&h, "{");
    int first = 1;
    if (w->n_meta) {
        sb_str(&h, "\"__metadata__\":{");
        for (size_t i = 0; i < w->n_meta; i++) {
            if (i) sb_str(&h, ",");
            sb_json_str(&h, w->meta[2 * i]);
            sb_str(&h, ":");
            sb_json_str(&h, w->meta[2 * i + 1]);
        }
        sb_str(&h, "}");
        first = 0;
    }
    uint64_t off = 0;
    for (size_t i = 0; i < w->n; i++) {
        const wt *t = &w->t[i];
        if (!first) sb_str(&h, ",");
        first = 0;
        sb_json_str(&h, t->name);
        sb_printf(&h, ":{\"dtype\":\"%s\",\"shape\":[", ae_dtype_name(t->dtype));
        for (int d = 0; d < t->ndim; d++) sb_printf(&h, "%s%lld", d ? "," : "", (long long)t->shape[d]);
        sb_printf(&h, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                  (unsigned long long)(off + t->nbytes));
        off += t->nbytes;
    }
    sb_str(&h, "}");
    while (!h.oom && h.len % 8 != 0) sb_str(&h, " ");
    if (h.oom) {
        free(h.p);
        ae_st_writer_free(w);
        return AE_ERR_NOMEM;
    }
    ae_status st = AE_OK;
    if (h.len > AE_ST_MAX_HEADER)
        st = ae_errorf(AE_ERR_ARG, "%s: safetensors header would be %zu bytes (limit %u)", path,
                       h.len, AE_ST_MAX_HEADER);
    ae_atomic_file f;
    if (st == AE_OK) st = ae_atomic_open(&f, path);
    if (st == AE_OK) {
        unsigned char len8[8];
        for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)h.len >> (8 * i));
        st = ae_atomic_write(&f, len8, 8);
        if (st == AE_OK) st = ae_atomic_write(&f, h.p, h.len);
        for (size_t i = 0; st == AE_OK && i < w->n; i++)
            st = ae_atomic_write(&f, w->t[i].data, w->t[i].nbytes);
        if (st == AE_OK) st = ae_atomic_commit(&f);
        else ae_atomic_abort(&f);
    }
    free(h.p);
    ae_st_writer_free(w);
    return st;
}
