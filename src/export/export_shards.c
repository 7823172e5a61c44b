// Sharded safetensors for export: a planning walk gives each tensor a file (in order; a file is
// closed when the next tensor would take it past the limit), then a writing walk converts the
// tensors of one file at a time to the output dtype and writes the file (ae_st_writer: temp
// file + rename), so at most one file's converted tensors are in memory.
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "core/mem.h"
#include "export/export_internal.h"
#include "io/safetensors.h"
#include "model/save.h"

// Upper bound of the header bytes one tensor adds beyond its name:
// "<name>":{"dtype":"BF16","shape":[r,c],"data_offsets":[b,e]}, with 20-digit numbers.
#define TENSOR_HEADER_MAX 140
// The 8-byte length, {"__metadata__":{"format":"pt"}} and the padding to 8 bytes.
#define FILE_HEADER_MAX 64
#define MAX_FILES 99999

typedef struct {
    const ae_model *m;
    ae_model_tensor_fn fn;
    void *ud;
} untie_walk;

ae_status ae_export_foreach_tensor(const ae_model *m, int untie_head, ae_model_tensor_fn fn,
                                   void *ud) {
    AE_TRY(ae_model_foreach_tensor(m, fn, ud));
    if (!untie_head || !m->cfg.tie_word_embeddings) return AE_OK;
    ae_model_tensor head = {.name = "lm_head.weight", .data = m->embed, .ndim = 2,
                            .shape = {m->cfg.vocab_size, m->cfg.hidden_size}};
    return fn(ud, &head);
}

typedef struct {
    ae_dtype dt;
    uint64_t limit;
    int n_files;
    uint64_t cur;      // bytes of the current file so far (header bound included)
    int64_t cur_count; // tensors in it
    int *file_of;      // (n) file of each tensor
    int64_t n, cap;
    uint64_t total;    // tensor bytes
} plan;

static ae_status plan_tensor(void *ud, const ae_model_tensor *t) {
    plan *p = ud;
    uint64_t bytes = (uint64_t)ae_model_tensor_numel(t) * ae_dtype_size(p->dt);
    uint64_t add = bytes + strlen(t->name) + TENSOR_HEADER_MAX;
    if (p->n_files == 0 || (p->cur_count > 0 && p->cur + add > p->limit)) {
        if (++p->n_files > MAX_FILES)
            return ae_errorf(AE_ERR_ARG, "--shard-size %llu: more than %d files would be needed",
                             (unsigned long long)p->limit, MAX_FILES);
        p->cur = FILE_HEADER_MAX;
        p->cur_count = 0;
    }
    if (p->n == p->cap) {
        int64_t cap = p->cap ? 2 * p->cap : 256;
        int *f = ae_realloc(p->file_of, sizeof(int) * (size_t)cap);
        if (!f) return AE_ERR_NOMEM;
        p->file_of = f;
        p->cap = cap;
    }
    p->file_of[p->n++] = p->n_files - 1;
    p->cur += add;
    p->cur_count++;
    p->total += bytes;
    return AE_OK;
}

typedef struct {
    const ae_model *m;
    const ae_st_set *src;
    const plan *p;
    const char *dir;
    int64_t idx;       // next tensor
    int file;          // file being filled (-1: none)
    char fname[64];
    ae_st_writer *w;
    void **bufs;       // converted tensors of the current file
    int nbufs, capbufs;
    cJSON *map;        // weight_map
} writer;

static void drop_bufs(writer *w) {
    for (int i = 0; i < w->nbufs; i++) free(w->bufs[i]);
    w->nbufs = 0;
}

static ae_status keep(writer *w, void *buf) {
    if (w->nbufs == w->capbufs) {
        int cap = w->capbufs ? 2 * w->capbufs : 64;
        void **nb = ae_realloc(w->bufs, sizeof(void *) * (size_t)cap);
        if (!nb) {
            free(buf);
            return AE_ERR_NOMEM;
        }
        w->bufs = nb;
        w->capbufs = cap;
    }
    w->bufs[w->nbufs++] = buf;
    return AE_OK;
}

static ae_status flush(writer *w) {
    char *path = ae_path_join(w->dir, w->fname);
    ae_status st = path ? ae_st_writer_finish(w->w, path) : AE_ERR_NOMEM;
    if (!path) ae_st_writer_free(w->w);
    w->w = NULL;
    free(path);
    drop_bufs(w);
    return st;
}

// The tensor's values in dt, as a host buffer (kept until its file is written), read from
// the model's file (any float dtype, through f32).
static ae_status convert(writer *w, const ae_model_tensor *t, const void **out) {
    size_t n = (size_t)ae_model_tensor_numel(t), nz = n ? n : 1;
    ae_dtype dt = w->p->dt;
    const ae_st_tensor *s = ae_export_source(w->src, w->m, t->name);
    if (!s) return AE_ERR_FORMAT;
    float *f = NULL;
    AE_TRY(ae_export_read_f32(s, &f));
    if (dt == AE_DT_F32) {
        *out = f;
        return keep(w, f);
    }
    ae_status st = AE_OK;
    uint16_t *h = ae_malloc(sizeof(uint16_t) * nz);
    for (size_t i = 0; h && i < n; i++) {
        h[i] = dt == AE_DT_BF16 ? ae_f32_to_bf16(f[i]) : ae_f32_to_f16(f[i]);
        float back = dt == AE_DT_BF16 ? ae_bf16_to_f32(h[i]) : ae_f16_to_f32(h[i]);
        if (!isfinite(back)) {
            st = ae_errorf(AE_ERR_ARG, "tensor '%s': element %zu = %g does not fit in %s (max %g); "
                           "export with --dtype %s", t->name, i, (double)f[i],
                           dt == AE_DT_BF16 ? "bfloat16" : "float16",
                           dt == AE_DT_BF16 ? 3.3895e38 : 65504.0,
                           dt == AE_DT_BF16 ? "f32" : "bf16 or f32");
            break;
        }
    }
    ae_free_aligned(f);
    if (!h) return AE_ERR_NOMEM;
    if (st != AE_OK) {
        free(h);
        return st;
    }
    *out = h;
    return keep(w, h);
}

static ae_status write_tensor(void *ud, const ae_model_tensor *t) {
    writer *w = ud;
    int f = w->p->file_of[w->idx++];
    if (f != w->file) {
        if (w->w) AE_TRY(flush(w));
        w->file = f;
        if (w->p->n_files == 1) snprintf(w->fname, sizeof w->fname, "model.safetensors");
        else
            snprintf(w->fname, sizeof w->fname, "model-%05d-of-%05d.safetensors", f + 1,
                     w->p->n_files);
        AE_TRY(ae_st_writer_init(&w->w));
        AE_TRY(ae_st_writer_metadata(w->w, "format", "pt"));
    }
    const void *data = NULL;
    AE_TRY(convert(w, t, &data));
    AE_TRY(ae_st_writer_add(w->w, t->name, w->p->dt, t->ndim, t->shape, data));
    if (!cJSON_AddStringToObject(w->map, t->name, w->fname)) return AE_ERR_NOMEM;
    return AE_OK;
}

// {"metadata": {"total_parameters": P, "total_size": bytes}, "weight_map": {name: file}}
static ae_status write_index(const char *dir, cJSON *map, const plan *p, int64_t params) {
    cJSON *o = cJSON_CreateObject(), *meta = cJSON_AddObjectToObject(o, "metadata");
    cJSON_AddNumberToObject(meta, "total_parameters", (double)params);
    cJSON_AddNumberToObject(meta, "total_size", (double)p->total);
    cJSON_AddItemReferenceToObject(o, "weight_map", map);
    char *text = cJSON_Print(o);
    cJSON_Delete(o);
    if (!text) return AE_ERR_NOMEM;
    ae_status st = ae_write_text_file(dir, "model.safetensors.index.json", text);
    free(text);
    return st;
}

ae_status ae_export_write_shards(const ae_model *m, const ae_st_set *src, int untie_head,
                                 const char *dir, ae_dtype dt, uint64_t shard_size,
                                 ae_export_report *rep) {
    plan p = {.dt = dt, .limit = shard_size ? shard_size : AE_EXPORT_DEFAULT_SHARD};
    ae_status st = ae_export_foreach_tensor(m, untie_head, plan_tensor, &p);
    writer w = {.m = m, .src = src, .p = &p, .dir = dir, .file = -1, .map = cJSON_CreateObject()};
    if (st == AE_OK && !w.map) st = AE_ERR_NOMEM;
    if (st == AE_OK) st = ae_export_foreach_tensor(m, untie_head, write_tensor, &w);
    if (st == AE_OK && w.w) st = flush(&w);
    if (w.w) ae_st_writer_free(w.w);
    drop_bufs(&w);
    free(w.bufs);
    int64_t params = (int64_t)(p.total / ae_dtype_size(dt));
    if (st == AE_OK && p.n_files > 1) st = write_index(dir, w.map, &p, params);
    cJSON_Delete(w.map);
    free(p.file_of);
    if (st == AE_OK && rep) {
        rep->n_shards = p.n_files;
        rep->total_bytes = p.total;
        rep->n_tensors = p.n;
    }
    return st;
}
