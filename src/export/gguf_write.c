// GGUF v3 writer (see gguf_write.h). Numbers are serialised byte by byte (little-endian on any
// host); float32 values by their IEEE-754 bits.
#include "export/gguf_write.h"

#include <stdlib.h>
#include <string.h>

#include "core/mem.h"

typedef struct {
    unsigned char *p;
    size_t n, cap;
    int failed;
} buf;

typedef struct {
    char *name;
    uint64_t bytes;  // data size without padding
    uint64_t offset; // in the data section
} tinfo;

struct ae_gguf {
    buf kv;          // serialised metadata
    uint64_t n_kv;
    char **keys;     // (n_kv) for the duplicate check
    buf ti;          // serialised tensor infos
    tinfo *t;        // (n_t)
    int64_t n_t, cap_t;
    uint64_t data_end; // end of the last tensor's padded data
    int64_t next;      // next tensor to write
    uint64_t written;  // bytes written to the file so far
};

static void put(buf *b, const void *src, size_t n) {
    if (b->failed) return;
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n) cap *= 2;
        unsigned char *p = ae_realloc(b->p, cap);
        if (!p) {
            b->failed = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, src, n);
    b->n += n;
}

static void put_le(buf *b, uint64_t v, int bytes) {
    unsigned char le[8];
    for (int i = 0; i < bytes; i++) le[i] = (unsigned char)(v >> (8 * i));
    put(b, le, (size_t)bytes);
}

static void put_u32(buf *b, uint32_t v) { put_le(b, v, 4); }
static void put_u64(buf *b, uint64_t v) { put_le(b, v, 8); }

static void put_str(buf *b, const char *s) {
    size_t n = strlen(s);
    put_u64(b, n);
    put(b, s, n);
}

ae_status ae_gguf_init(ae_gguf **out) {
    *out = calloc(1, sizeof **out);
    return *out ? AE_OK : AE_ERR_NOMEM;
}

void ae_gguf_free(ae_gguf *g) {
    if (!g) return;
    for (uint64_t i = 0; i < g->n_kv; i++) free(g->keys[i]);
    free(g->keys);
    for (int64_t i = 0; i < g->n_t; i++) free(g->t[i].name);
    free(g->t);
    free(g->kv.p);
    free(g->ti.p);
    free(g);
}

size_t ae_gguf_type_size(ae_ggml_type type) { return type == AE_GGML_F32 ? 4 : 2; }
int64_t ae_gguf_n_tensors(const ae_gguf *g) { return g->n_t; }
uint64_t ae_gguf_data_bytes(const ae_gguf *g) { return g->data_end; }

// Starts a metadata entry: duplicate check, key, value type.
static ae_status kv_begin(ae_gguf *g, const char *key, uint32_t type) {
    for (uint64_t i = 0; i < g->n_kv; i++)
        if (!strcmp(g->keys[i], key)) return ae_errorf(AE_ERR_ARG, "gguf: metadata key '%s' set twice", key);
    char **k = ae_realloc(g->keys, sizeof(char *) * (size_t)(g->n_kv + 1));
    if (!k) return AE_ERR_NOMEM;
    g->keys = k;
    if (!(k[g->n_kv] = strdup(key))) return AE_ERR_NOMEM;
    g->n_kv++;
    put_str(&g->kv, key);
    put_u32(&g->kv, type);
    return AE_OK;
}

static ae_status kv_end(ae_gguf *g) { return g->kv.failed ? AE_ERR_NOMEM : AE_OK; }

ae_status ae_gguf_set_u32(ae_gguf *g, const char *key, uint32_t v) {
    AE_TRY(kv_begin(g, key, AE_GGUF_TYPE_UINT32));
    put_u32(&g->kv, v);
    return kv_end(g);
}

ae_status ae_gguf_set_f32(ae_gguf *g, const char *key, float v) {
    uint32_t bits;
    memcpy(&bits, &v, 4);
    AE_TRY(kv_begin(g, key, AE_GGUF_TYPE_FLOAT32));
    put_u32(&g->kv, bits);
    return kv_end(g);
}

ae_status ae_gguf_set_bool(ae_gguf *g, const char *key, int v) {
    unsigned char b = v ? 1 : 0;
    AE_TRY(kv_begin(g, key, AE_GGUF_TYPE_BOOL));
    put(&g->kv, &b, 1);
    return kv_end(g);
}

ae_status ae_gguf_set_str(ae_gguf *g, const char *key, const char *v) {
    AE_TRY(kv_begin(g, key, AE_GGUF_TYPE_STRING));
    put_str(&g->kv, v);
    return kv_end(g);
}

ae_status ae_gguf_set_arr_str(ae_gguf *g, const char *key, const char *const *v, size_t n) {
    AE_TRY(kv_begin(g, key, AE_GGUF_TYPE_ARRAY));
    put_u32(&g->kv, AE_GGUF_TYPE_STRING);
    put_u64(&g->kv, n);
    for (size_t i = 0; i < n; i++) put_str(&g->kv, v[i]);
    return kv_end(g);
}

ae_status ae_gguf_set_arr_i32(ae_gguf *g, const char *key, const int32_t *v, size_t n) {
    AE_TRY(kv_begin(g, key, AE_GGUF_TYPE_ARRAY));
    put_u32(&g->kv, AE_GGUF_TYPE_INT32);
    put_u64(&g->kv, n);
    for (size_t i = 0; i < n; i++) put_u32(&g->kv, (uint32_t)v[i]);
    return kv_end(g);
}

static uint64_t align_up(uint64_t x) {
    return (x + AE_GGUF_ALIGNMENT - 1) / AE_GGUF_ALIGNMENT * AE_GGUF_ALIGNMENT;
}

ae_status ae_gguf_add_tensor(ae_gguf *g, const char *name, ae_ggml_type type, int ndim,
                             const int64_t *ne) {
    if (ndim < 1 || ndim > 4)
        return ae_errorf(AE_ERR_ARG, "gguf: tensor '%s' has %d dimensions (1..4 allowed)", name, ndim);
    uint64_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        if (ne[i] < 1 || (uint64_t)ne[i] > (UINT64_MAX / 8) / numel)
            return ae_errorf(AE_ERR_ARG, "gguf: tensor '%s': bad dimension %lld", name, (long long)ne[i]);
        numel *= (uint64_t)ne[i];
    }
    for (int64_t i = 0; i < g->n_t; i++)
        if (!strcmp(g->t[i].name, name)) return ae_errorf(AE_ERR_ARG, "gguf: tensor '%s' added twice", name);
    if (g->n_t == g->cap_t) {
        int64_t cap = g->cap_t ? 2 * g->cap_t : 256;
        tinfo *t = ae_realloc(g->t, sizeof(tinfo) * (size_t)cap);
        if (!t) return AE_ERR_NOMEM;
        g->t = t;
        g->cap_t = cap;
    }
    tinfo *t = &g->t[g->n_t];
    if (!(t->name = strdup(name))) return AE_ERR_NOMEM;
    g->n_t++;
    t->bytes = numel * ae_gguf_type_size(type);
    t->offset = g->data_end;
    g->data_end = align_up(t->offset + t->bytes);
    put_str(&g->ti, name);
    put_u32(&g->ti, (uint32_t)ndim);
    for (int i = 0; i < ndim; i++) put_u64(&g->ti, (uint64_t)ne[i]);
    put_u32(&g->ti, (uint32_t)type);
    put_u64(&g->ti, t->offset);
    return g->ti.failed ? AE_ERR_NOMEM : AE_OK;
}

static ae_status emit(ae_gguf *g, ae_atomic_file *f, const void *p, size_t n) {
    AE_TRY(ae_atomic_write(f, p, n));
    g->written += n;
    return AE_OK;
}

static ae_status pad(ae_gguf *g, ae_atomic_file *f) {
    static const unsigned char zeros[AE_GGUF_ALIGNMENT];
    size_t n = (size_t)(align_up(g->written) - g->written);
    return n ? emit(g, f, zeros, n) : AE_OK;
}

ae_status ae_gguf_write_header(ae_gguf *g, ae_atomic_file *f) {
    buf h = {0};
    put(&h, "GGUF", 4);
    put_u32(&h, AE_GGUF_VERSION);
    put_u64(&h, (uint64_t)g->n_t);
    put_u64(&h, g->n_kv);
    if (h.failed) {
        free(h.p);
        return AE_ERR_NOMEM;
    }
    g->written = 0;
    g->next = 0;
    ae_status st = emit(g, f, h.p, h.n);
    free(h.p);
    if (st == AE_OK && g->kv.n) st = emit(g, f, g->kv.p, g->kv.n);
    if (st == AE_OK && g->ti.n) st = emit(g, f, g->ti.p, g->ti.n);
    if (st == AE_OK) st = pad(g, f);
    g->written = 0; // from here on: offsets in the data section (which starts aligned)
    return st;
}

ae_status ae_gguf_write_tensor(ae_gguf *g, ae_atomic_file *f, const void *data, size_t bytes) {
    if (g->next >= g->n_t)
        return ae_errorf(AE_ERR_ARG, "gguf: more tensor data written than tensors added (%lld)",
                         (long long)g->n_t);
    const tinfo *t = &g->t[g->next];
    if (bytes != t->bytes || g->written != t->offset)
        return ae_errorf(AE_ERR_ARG, "gguf: tensor '%s': %zu bytes at %llu, expected %llu at %llu",
                         t->name, bytes, (unsigned long long)g->written,
                         (unsigned long long)t->bytes, (unsigned long long)t->offset);
    AE_TRY(emit(g, f, data, bytes));
    g->next++;
    return pad(g, f);
}

ae_status ae_gguf_check_complete(const ae_gguf *g) {
    if (g->next != g->n_t)
        return ae_errorf(AE_ERR_ARG, "gguf: %lld of %lld tensors written", (long long)g->next,
                         (long long)g->n_t);
    return AE_OK;
}
