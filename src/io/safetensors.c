// safetensors reader: mmap one file, validate its header as strictly as the reference
// implementation (huggingface/safetensors, src/tensor.rs: read_metadata / Metadata::validate),
// and expose the tensors as pointers into the mapping. See safetensors.h for the rules.
#include "io/safetensors.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "core/file.h"
#include "core/mem.h"
#include "io/st_internal.h"

// ---- small helpers ----------------------------------------------------------------------------

static uint64_t load_le64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

int ae_st_utf8_valid(const unsigned char *p, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned c = p[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        uint32_t cp, min;
        if ((c & 0xe0) == 0xc0) len = 2, cp = c & 0x1f, min = 0x80;
        else if ((c & 0xf0) == 0xe0) len = 3, cp = c & 0x0f, min = 0x800;
        else if ((c & 0xf8) == 0xf0) len = 4, cp = c & 0x07, min = 0x10000;
        else return 0;
        if (n - i < len) return 0;
        for (size_t k = 1; k < len; k++) {
            if ((p[i + k] & 0xc0) != 0x80) return 0;
            cp = (cp << 6) | (p[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
        i += len;
    }
    return 1;
}

// A JSON number that is a non-negative integer exactly representable (< 2^53).
static int json_uint(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (!(d >= 0.0) || d > 9007199254740992.0 || floor(d) != d) return -1;
    *out = (uint64_t)d;
    return 0;
}

static void format_shape(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t used = 0;
    int w = snprintf(buf, cap, "[");
    used = w > 0 ? (size_t)w : 0;
    for (int i = 0; i < ndim && used < cap; i++) {
        w = snprintf(buf + used, cap - used, "%s%lld", i ? ", " : "", (long long)shape[i]);
        if (w > 0) used += (size_t)w;
    }
    if (used < cap) snprintf(buf + used, cap - used, "]");
}

// ---- one file ---------------------------------------------------------------------------------

void ae_st_file_free(ae_st_file *f) {
    if (!f) return;
    ae_mmap_close(&f->map);
    for (size_t i = 0; i < 2 * f->n_meta; i++) free(f->meta[i]);
    free(f->meta);
    free(f->path);
    memset(f, 0, sizeof *f);
}

static void free_tensors(ae_st_tensor *t, size_t n) {
    if (!t) return;
    for (size_t i = 0; i < n; i++) free(t[i].name);
    free(t);
}

static ae_status parse_metadata(ae_st_file *f, const cJSON *md) {
    const char *path = f->path;
    if (cJSON_IsNull(md)) return AE_OK; // Option<HashMap<String, String>>: null is None
    if (!cJSON_IsObject(md))
        return ae_errorf(AE_ERR_FORMAT, "%s: __metadata__ must be an object of strings", path);
    size_t n = (size_t)cJSON_GetArraySize(md);
    f->meta = ae_calloc(2 * n + 1, sizeof *f->meta);
    if (!f->meta) return AE_ERR_NOMEM;
    const cJSON *kv;
    cJSON_ArrayForEach(kv, md) {
        if (!cJSON_IsString(kv))
            return ae_errorf(AE_ERR_FORMAT, "%s: __metadata__[\"%s\"] is not a string", path,
                             kv->string);
        for (size_t i = 0; i < f->n_meta; i++)
            if (strcmp(f->meta[2 * i], kv->string) == 0)
                return ae_errorf(AE_ERR_FORMAT, "%s: __metadata__: duplicate key \"%s\"", path,
                                 kv->string);
        char *k = ae_strdup(kv->string), *v = ae_strdup(kv->valuestring);
        if (!k || !v) {
            free(k);
            free(v);
            return AE_ERR_NOMEM;
        }
        f->meta[2 * f->n_meta] = k;
        f->meta[2 * f->n_meta + 1] = v;
        f->n_meta++;
    }
    return AE_OK;
}

// Parses one tensor entry of the header (offsets relative to the data buffer in *begin/*end).
static ae_status parse_tensor(const char *path, const cJSON *e, size_t buf_len, ae_st_tensor *t,
                              uint64_t *begin, uint64_t *end) {
    const char *name = e->string;
    if (!cJSON_IsObject(e))
        return ae_errorf(AE_ERR_FORMAT, "%s: tensor \"%s\": entry is not an object", path, name);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(dt))
        return ae_errorf(AE_ERR_FORMAT, "%s: tensor \"%s\": missing or non-string \"dtype\"", path,
                         name);
    if (ae_dtype_from_name(dt->valuestring, &t->dtype) != 0)
        return ae_errorf(AE_ERR_FORMAT, "%s: tensor \"%s\": unknown dtype \"%s\"", path, name,
                         dt->valuestring);
    if (!cJSON_IsArray(sh))
        return ae_errorf(AE_ERR_FORMAT, "%s: tensor \"%s\": missing or non-array \"shape\"", path,
                         name);
    int nd = cJSON_GetArraySize(sh);
    if (nd > AE_ST_MAX_DIMS)
        return ae_errorf(AE_ERR_UNSUPPORTED, "%s: tensor \"%s\": %d dimensions (at most %d)", path,
                         name, nd, AE_ST_MAX_DIMS);
    t->ndim = nd;
    uint64_t numel = 1;
    int i = 0;
    const cJSON *d;
    cJSON_ArrayForEach(d, sh) {
        uint64_t v;
        if (json_uint(d, &v) != 0)
            return ae_errorf(AE_ERR_FORMAT,
                             "%s: tensor \"%s\": shape[%d] is not a non-negative integer", path,
                             name, i);
        if (v > (uint64_t)INT64_MAX || (v != 0 && numel > (uint64_t)INT64_MAX / v))
            return ae_errorf(AE_ERR_FORMAT, "%s: tensor \"%s\": element count overflows", path,
                             name);
        numel *= v;
        t->shape[i++] = (int64_t)v;
    }
    t->numel = (int64_t)numel;
    size_t nbytes;
    if (numel > SIZE_MAX || ae_mul_size((size_t)numel, ae_dtype_size(t->dtype), &nbytes) != 0)
        return ae_errorf(AE_ERR_FORMAT, "%s: tensor \"%s\": byte size overflows", path, name);
    t->nbytes = nbytes;
    if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2 ||
        json_uint(cJSON_GetArrayItem(off, 0), begin) != 0 ||
        json_uint(cJSON_GetArrayItem(off, 1), end) != 0)
        return ae_errorf(AE_ERR_FORMAT,
                         "%s: tensor \"%s\": \"data_offsets\" must be [begin, end], two "
                         "non-negative integers",
                         path, name);
    if (*end < *begin)
        return ae_errorf(AE_ERR_FORMAT, "%s: tensor \"%s\": data_offsets [%llu, %llu]: end < begin",
                         path, name, (unsigned long long)*begin, (unsigned long long)*end);
    if (*end > buf_len)
        return ae_errorf(AE_ERR_FORMAT,
                         "%s: tensor \"%s\": data_offsets [%llu, %llu] out of bounds (data buffer "
                         "is %zu bytes)",
                         path, name, (unsigned long long)*begin, (unsigned long long)*end, buf_len);
    if (*end - *begin != nbytes) {
        char sbuf[160];
        format_shape(sbuf, sizeof sbuf, t->ndim, t->shape);
        return ae_errorf(AE_ERR_FORMAT,
                         "%s: tensor \"%s\": %s %s needs %zu bytes but data_offsets [%llu, %llu] "
                         "span %llu",
                         path, name, dt->valuestring, sbuf, nbytes, (unsigned long long)*begin,
                         (unsigned long long)*end, (unsigned long long)(*end - *begin));
    }
    return AE_OK;
}

typedef struct {
    uint64_t begin, end;
    size_t idx;
} span;

static int cmp_name_ptr(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

// A name that appears twice in one header (JSON allows it; the format does not).
static ae_status check_unique_names(const char *path, const ae_st_tensor *t, size_t n) {
    const char **names = ae_calloc(n ? n : 1, sizeof *names);
    if (!names) return AE_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) names[i] = t[i].name;
    qsort(names, n, sizeof *names, cmp_name_ptr);
    ae_status st = AE_OK;
    for (size_t i = 1; i < n && st == AE_OK; i++)
        if (strcmp(names[i], names[i - 1]) == 0)
            st = ae_errorf(AE_ERR_FORMAT, "%s: duplicate tensor name \"%s\" in the header", path,
                           names[i]);
    free(names);
    return st;
}

static int cmp_span(const void *a, const void *b) {
    const span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

static ae_status parse_header(ae_st_file *f, const cJSON *root, const unsigned char *buf,
                              size_t buf_len, ae_st_tensor **out, size_t *nout) {
    const char *path = f->path;
    size_t count = 0;
    int seen_meta = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, root) {
        if (strcmp(e->string, "__metadata__") == 0) {
            if (seen_meta++)
                return ae_errorf(AE_ERR_FORMAT, "%s: duplicate \"__metadata__\" entry", path);
            AE_TRY(parse_metadata(f, e));
        } else {
            count++;
        }
    }
    ae_st_tensor *t = ae_calloc(count ? count : 1, sizeof *t);
    span *sp = ae_calloc(count ? count : 1, sizeof *sp);
    if (!t || !sp) {
        free(t);
        free(sp);
        return AE_ERR_NOMEM;
    }
    ae_status st = AE_OK;
    size_t n = 0;
    cJSON_ArrayForEach(e, root) {
        if (strcmp(e->string, "__metadata__") == 0) continue;
        st = parse_tensor(path, e, buf_len, &t[n], &sp[n].begin, &sp[n].end);
        if (st != AE_OK) break;
        t[n].name = ae_strdup(e->string);
        if (!t[n].name) {
            st = AE_ERR_NOMEM;
            break;
        }
        t[n].file = path;
        sp[n].idx = n;
        n++;
    }
    if (st == AE_OK) st = check_unique_names(path, t, n);
    if (st == AE_OK) {
        // Coverage: sorted by offset, each tensor starts where the previous ended, the last ends
        // at the end of the file.
        qsort(sp, n, sizeof *sp, cmp_span);
        uint64_t expect = 0;
        for (size_t i = 0; i < n && st == AE_OK; i++) {
            const char *name = t[sp[i].idx].name;
            if (sp[i].begin > expect)
                st = ae_errorf(AE_ERR_FORMAT,
                               "%s: gap in the data buffer: bytes [%llu, %llu) before tensor "
                               "\"%s\" belong to no tensor",
                               path, (unsigned long long)expect, (unsigned long long)sp[i].begin,
                               name);
            else if (sp[i].begin < expect)
                st = ae_errorf(AE_ERR_FORMAT,
                               "%s: tensor \"%s\" (data_offsets [%llu, %llu]) overlaps tensor "
                               "\"%s\"",
                               path, name, (unsigned long long)sp[i].begin,
                               (unsigned long long)sp[i].end, t[sp[i - 1].idx].name);
            expect = sp[i].end;
        }
        if (st == AE_OK && expect != buf_len)
            st = ae_errorf(AE_ERR_FORMAT,
                           "%s: %llu trailing bytes after the last tensor (tensors cover %llu of "
                           "%zu data bytes)",
                           path, (unsigned long long)(buf_len - expect), (unsigned long long)expect,
                           buf_len);
    }
    if (st != AE_OK) {
        free(sp);
        free_tensors(t, n);
        return st;
    }
    // Tensors in data-offset order.
    ae_st_tensor *sorted = ae_calloc(n ? n : 1, sizeof *sorted);
    if (!sorted) {
        free(sp);
        free_tensors(t, n);
        return AE_ERR_NOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        sorted[i] = t[sp[i].idx];
        sorted[i].data = buf + sp[i].begin;
    }
    free(t);
    free(sp);
    *out = sorted;
    *nout = n;
    return AE_OK;
}

ae_status ae_st_parse_file(ae_st_file *f, ae_st_tensor **tensors, size_t *n) {
    *tensors = NULL;
    *n = 0;
    const char *path = f->path;
    AE_TRY(ae_mmap_open(path, &f->map));
    const unsigned char *data = f->map.data;
    size_t size = f->map.size;
    if (size < 8)
        return ae_errorf(AE_ERR_FORMAT, "%s: file is %zu bytes, too small for a safetensors header",
                         path, size);
    uint64_t hlen = load_le64(data);
    if (hlen > AE_ST_MAX_HEADER)
        return ae_errorf(AE_ERR_FORMAT, "%s: header length %llu exceeds the %u byte limit", path,
                         (unsigned long long)hlen, AE_ST_MAX_HEADER);
    if (hlen + 8 > size)
        return ae_errorf(AE_ERR_FORMAT,
                         "%s: header length %llu + 8 exceeds the file size %zu (truncated?)", path,
                         (unsigned long long)hlen, size);
    const unsigned char *h = data + 8;
    if (hlen == 0 || h[0] != '{')
        return ae_errorf(AE_ERR_FORMAT, "%s: header does not start with '{'", path);
    if (!ae_st_utf8_valid(h, (size_t)hlen))
        return ae_errorf(AE_ERR_FORMAT, "%s: header is not valid UTF-8", path);
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts((const char *)h, (size_t)hlen, &end, 0);
    if (!root)
        return ae_errorf(AE_ERR_FORMAT, "%s: header is not valid JSON (at byte %lld of the header)",
                         path, end ? (long long)(end - (const char *)h) : -1LL);
    for (const char *p = end; p < (const char *)h + hlen; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            cJSON_Delete(root);
            return ae_errorf(AE_ERR_FORMAT,
                             "%s: header has trailing characters after the JSON object (at byte "
                             "%lld)",
                             path, (long long)(p - (const char *)h));
        }
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return ae_errorf(AE_ERR_FORMAT, "%s: header is not a JSON object", path);
    }
    ae_status st = parse_header(f, root, h + hlen, size - 8 - (size_t)hlen, tensors, n);
    cJSON_Delete(root);
    return st;
}

// ---- sets ---------------------------------------------------------------------------------------

static int cmp_tensor_ptr(const void *a, const void *b) {
    const ae_st_tensor *x = *(const ae_st_tensor *const *)a, *y = *(const ae_st_tensor *const *)b;
    return strcmp(x->name, y->name);
}

ae_status ae_st_set_index(ae_st_set *s) {
    free(s->by_name);
    s->by_name = NULL;
    const ae_st_tensor **ptr = ae_calloc(s->n ? s->n : 1, sizeof *ptr);
    s->by_name = ae_calloc(s->n ? s->n : 1, sizeof *s->by_name);
    if (!ptr || !s->by_name) {
        free(ptr);
        return AE_ERR_NOMEM;
    }
    for (size_t i = 0; i < s->n; i++) ptr[i] = &s->tensors[i];
    qsort(ptr, s->n, sizeof *ptr, cmp_tensor_ptr);
    for (size_t i = 0; i < s->n; i++) {
        if (i > 0 && strcmp(ptr[i]->name, ptr[i - 1]->name) == 0) {
            ae_status st;
            if (ptr[i]->file == ptr[i - 1]->file)
                st = ae_errorf(AE_ERR_FORMAT, "%s: duplicate tensor name \"%s\"", ptr[i]->file,
                               ptr[i]->name);
            else
                st = ae_errorf(AE_ERR_FORMAT, "tensor \"%s\" appears in both %s and %s",
                               ptr[i]->name, ptr[i - 1]->file, ptr[i]->file);
            free(ptr);
            return st;
        }
        s->by_name[i] = (size_t)(ptr[i] - s->tensors);
    }
    free(ptr);
    return AE_OK;
}

ae_status ae_st_open_file(const char *path, ae_st_set **out) {
    *out = NULL;
    ae_st_set *s = ae_calloc(1, sizeof *s);
    if (!s) return AE_ERR_NOMEM;
    s->origin = ae_strdup(path);
    s->files = ae_calloc(1, sizeof *s->files);
    if (!s->origin || !s->files) {
        ae_st_close(s);
        return AE_ERR_NOMEM;
    }
    s->n_files = 1;
    s->files[0].path = ae_strdup(path);
    ae_status st = s->files[0].path ? AE_OK : AE_ERR_NOMEM;
    if (st == AE_OK) st = ae_st_parse_file(&s->files[0], &s->tensors, &s->n);
    if (st == AE_OK) st = ae_st_set_index(s);
    if (st != AE_OK) {
        ae_st_close(s);
        return st;
    }
    *out = s;
    return AE_OK;
}

void ae_st_close(ae_st_set *s) {
    if (!s) return;
    free_tensors(s->tensors, s->n);
    for (size_t i = 0; i < s->n_files; i++) ae_st_file_free(&s->files[i]);
    free(s->files);
    free(s->by_name);
    free(s->origin);
    free(s);
}

size_t ae_st_count(const ae_st_set *s) { return s->n; }

const ae_st_tensor *ae_st_at(const ae_st_set *s, size_t i) {
    return i < s->n ? &s->tensors[i] : NULL;
}

const ae_st_tensor *ae_st_find(const ae_st_set *s, const char *name) {
    size_t lo = 0, hi = s->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const ae_st_tensor *t = &s->tensors[s->by_name[mid]];
        int c = strcmp(name, t->name);
        if (c == 0) return t;
        if (c < 0) hi = mid;
        else lo = mid + 1;
    }
    return NULL;
}

const char *ae_st_metadata(const ae_st_set *s, const char *key) {
    if (s->n_files == 0) return NULL;
    const ae_st_file *f = &s->files[0];
    for (size_t i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta[2 * i], key) == 0) return f->meta[2 * i + 1];
    return NULL;
}

// ---- conversion ---------------------------------------------------------------------------------

// Exponent bits all ones: Inf or NaN, for F32 (4 bytes), BF16 and F16 (2 bytes), read as
// little-endian bytes.
static int nonfinite_at(const unsigned char *p, ae_dtype dt, size_t i) {
    if (dt == AE_DT_F32) {
        const unsigned char *q = p + 4 * i;
        uint32_t u = (uint32_t)q[0] | (uint32_t)q[1] << 8 | (uint32_t)q[2] << 16 | (uint32_t)q[3] << 24;
        return (u & 0x7f800000u) == 0x7f800000u;
    }
    uint16_t h = (uint16_t)(p[2 * i] | p[2 * i + 1] << 8);
    return dt == AE_DT_BF16 ? (h & 0x7f80u) == 0x7f80u : (h & 0x7c00u) == 0x7c00u;
}

int64_t ae_st_first_nonfinite(const ae_st_tensor *t) {
    if (t->dtype != AE_DT_F32 && t->dtype != AE_DT_BF16 && t->dtype != AE_DT_F16) return -1;
    int64_t first = INT64_MAX, n = t->numel;
#pragma omp parallel for reduction(min : first) if (n > (1 << 20))
    for (int64_t i = 0; i < n; i++)
        if (i < first && nonfinite_at(t->data, t->dtype, (size_t)i)) first = i;
    return first == INT64_MAX ? -1 : first;
}

ae_status ae_st_to_f32(const ae_st_tensor *t, float *dst) {
    const unsigned char *p = t->data;
    size_t n = (size_t)t->numel;
    switch (t->dtype) {
    case AE_DT_F32:
        for (size_t i = 0; i < n; i++, p += 4) {
            uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                         (uint32_t)p[3] << 24;
            memcpy(&dst[i], &u, 4);
        }
        return AE_OK;
    case AE_DT_BF16:
        for (size_t i = 0; i < n; i++, p += 2)
            dst[i] = ae_bf16_to_f32((uint16_t)(p[0] | p[1] << 8));
        return AE_OK;
    case AE_DT_F16:
        for (size_t i = 0; i < n; i++, p += 2)
            dst[i] = ae_f16_to_f32((uint16_t)(p[0] | p[1] << 8));
        return AE_OK;
    default:
        return ae_errorf(AE_ERR_UNSUPPORTED,
                         "%s: tensor \"%s\": dtype %s cannot be converted to f32 (need F32, F16 "
                         "or BF16)",
                         t->file, t->name, ae_dtype_name(t->dtype));
    }
}

ae_status ae_st_get(const ae_st_set *s, const char *name, int ndim, const int64_t *shape,
                    const ae_st_tensor **out) {
    const ae_st_tensor *t = ae_st_find(s, name);
    if (!t) return ae_errorf(AE_ERR_FORMAT, "%s: tensor \"%s\" not found", s->origin, name);
    int ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = t->shape[i] == shape[i];
    if (!ok) {
        char a[200], b[200];
        format_shape(a, sizeof a, t->ndim, t->shape);
        format_shape(b, sizeof b, ndim, shape);
        return ae_errorf(AE_ERR_FORMAT, "%s: tensor %s: shape %s, expected %s", t->file, name, a,
                         b);
    }
    if (t->dtype != AE_DT_F32 && t->dtype != AE_DT_F16 && t->dtype != AE_DT_BF16)
        return ae_errorf(AE_ERR_UNSUPPORTED,
                         "%s: tensor \"%s\": dtype %s cannot be converted to f32 (need F32, F16 "
                         "or BF16)",
                         t->file, t->name, ae_dtype_name(t->dtype));
    *out = t;
    return AE_OK;
}

ae_status ae_st_load_f32(const ae_st_set *s, const char *name, int ndim, const int64_t *shape,
                         float *dst) {
    const ae_st_tensor *t;
    AE_TRY(ae_st_get(s, name, ndim, shape, &t));
    return ae_st_to_f32(t, dst);
}
