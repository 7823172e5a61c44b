#include "model/save.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "core/file.h"
#include "core/mem.h"
#include "io/safetensors.h"
#include "model/tensors.h"

static const char *k_copied_files[] = {"tokenizer.json", "tokenizer_config.json",
                                       "generation_config.json", "special_tokens_map.json",
                                       "vocab.json", "merges.txt"};

ae_status ae_save_check_target(const char *out_dir, int force) {
    if (ae_path_exists(out_dir) && !force)
        return ae_errorf(AE_ERR_ARG, "output folder '%s' already exists (use --force to replace it)",
                         out_dir);
    if (ae_path_exists(out_dir) && !ae_path_is_dir(out_dir))
        return ae_errorf(AE_ERR_ARG, "output path '%s' exists and is not a folder", out_dir);
    return AE_OK;
}


static ae_status copy_file(const char *src, const char *dst) {
    char *buf;
    size_t len;
    AE_TRY(ae_file_read_all(src, &buf, &len));
    ae_atomic_file f;
    ae_status st = ae_atomic_open(&f, dst);
    if (st == AE_OK) st = ae_atomic_write(&f, buf, len);
    if (st == AE_OK) st = ae_atomic_commit(&f);
    else ae_atomic_abort(&f);
    free(buf);
    return st;
}

ae_status ae_write_text_file(const char *dir, const char *name, const char *text) {
    char *path = ae_path_join(dir, name);
    if (!path) return AE_ERR_NOMEM;
    ae_atomic_file f;
    ae_status st = ae_atomic_open(&f, path);
    if (st == AE_OK) st = ae_atomic_write(&f, text, strlen(text));
    if (st == AE_OK) st = ae_atomic_write(&f, "\n", 1);
    if (st == AE_OK) st = ae_atomic_commit(&f);
    else ae_atomic_abort(&f);
    free(path);
    return st;
}

static void set_item(cJSON *o, const char *key, cJSON *v) {
    if (cJSON_GetObjectItemCaseSensitive(o, key)) cJSON_ReplaceItemInObjectCaseSensitive(o, key, v);
    else cJSON_AddItemToObject(o, key, v);
}

// The source config.json with the target fields of m->cfg written over it.
static ae_status student_config(const ae_model *m, const char *src_dir, char **out) {
    char *path = ae_path_join(src_dir, "config.json"), *text;
    size_t len;
    if (!path) return AE_ERR_NOMEM;
    ae_status st = ae_file_read_all(path, &text, &len);
    free(path);
    if (st != AE_OK) return st;
    cJSON *o = cJSON_Parse(text);
    free(text);
    if (!o) return ae_errorf(AE_ERR_FORMAT, "%s/config.json: not valid JSON", src_dir);
    const ae_config *c = &m->cfg;
    if (c->target != AE_ATTN_GQA) {
        // attnedit's own names: stock transformers / vLLM refuse the folder ("does not
        // recognize this architecture") instead of loading it as a plain Qwen3 with the new
        // tensors dropped and the missing ones random. attnedit export makes engine folders.
        cJSON *arch = cJSON_CreateArray();
        cJSON_AddItemToArray(arch, cJSON_CreateString("AttneditStudentForCausalLM"));
        set_item(o, "architectures", arch);
        set_item(o, "model_type", cJSON_CreateString("attnedit_student"));
        set_item(o, "attnedit_base_architecture", cJSON_CreateString(c->base_architecture));
        set_item(o, "attention_target", cJSON_CreateString(ae_attn_kind_name(c->target)));
        cJSON *layers = cJSON_CreateArray();
        for (int l = 0; l < c->num_hidden_layers; l++)
            if (c->layer_attn[l] != AE_ATTN_GQA) cJSON_AddItemToArray(layers, cJSON_CreateNumber(l));
        set_item(o, "attention_replaced_layers", layers);
    }
    if (c->target == AE_ATTN_MLA) {
        set_item(o, "q_lora_rank", c->q_lora_rank ? cJSON_CreateNumber(c->q_lora_rank) : cJSON_CreateNull());
        set_item(o, "kv_lora_rank", cJSON_CreateNumber(c->kv_lora_rank));
        set_item(o, "qk_nope_head_dim", cJSON_CreateNumber(c->qk_nope_head_dim));
        set_item(o, "qk_rope_head_dim", cJSON_CreateNumber(c->qk_rope_head_dim));
        set_item(o, "v_head_dim", cJSON_CreateNumber(c->v_head_dim));
        set_item(o, "rope_interleave", cJSON_CreateTrue());
    }
    if (c->target == AE_ATTN_GATESWA) {
        static const char *gates[] = {"none", "elementwise", "head"};
        set_item(o, "attn_output_gate", cJSON_CreateString(gates[c->attn_gate]));
        set_item(o, "attn_sinks", cJSON_CreateBool(c->attn_sinks));
        set_item(o, "use_sliding_window", cJSON_CreateBool(c->use_sliding_window));
        set_item(o, "sliding_window",
                 c->sliding_window ? cJSON_CreateNumber(c->sliding_window) : cJSON_CreateNull());
        cJSON *types = cJSON_CreateArray();
        for (int l = 0; l < c->num_hidden_layers; l++)
            cJSON_AddItemToArray(types, cJSON_CreateString(c->layer_types[l] == AE_LAYER_SLIDING
                                                               ? "sliding_attention"
                                                               : "full_attention"));
        set_item(o, "layer_types", types);
    }
    *out = cJSON_Print(o);
    cJSON_Delete(o);
    return *out ? AE_OK : AE_ERR_NOMEM;
}

typedef struct {
    const ae_backend *be;
    ae_st_writer *w;
    void **bufs; // host copies, freed after the file is written
    int nbufs, capbufs;
} tensor_sink;

static ae_status keep(tensor_sink *s, void *buf) {
    if (s->nbufs == s->capbufs) {
        int cap = s->capbufs ? 2 * s->capbufs : 64;
        void **nb = ae_realloc(s->bufs, sizeof(void *) * (size_t)cap);
        if (!nb) {
            free(buf);
            return AE_ERR_NOMEM;
        }
        s->bufs = nb;
        s->capbufs = cap;
    }
    s->bufs[s->nbufs++] = buf;
    return AE_OK;
}

// Adds a tensor in `dtype` (F32, BF16 or F16): host F32 tensors are written in place, others
// are read back from the backend and converted into a kept host copy.
static ae_status add_tensor(tensor_sink *s, const char *name, ae_ptr data, int ndim,
                            const int64_t *shape, ae_dtype dtype) {
    int64_t n = ndim == 1 ? shape[0] : shape[0] * shape[1];
    size_t nz = (size_t)(n ? n : 1);
    const void *src = data.data;
    if (!(s->be->host_memory && dtype == AE_DT_F32)) {
        float *f = ae_alloc_f32(nz);
        if (!f) return AE_ERR_NOMEM;
        ae_status st = s->be->download(s->be, f, AE_DT_F32, data, (size_t)n);
        if (st == AE_OK && dtype != AE_DT_F32) {
            uint16_t *h = ae_malloc(sizeof(uint16_t) * nz);
            if (h)
                for (int64_t i = 0; i < n; i++)
                    h[i] = dtype == AE_DT_BF16 ? ae_f32_to_bf16(f[i]) : ae_f32_to_f16(f[i]);
            ae_free_aligned(f);
            f = NULL;
            if (!h) return AE_ERR_NOMEM;
            src = h;
            st = keep(s, h);
        } else if (st == AE_OK) {
            src = f;
            st = keep(s, f);
        } else {
            ae_free_aligned(f);
        }
        AE_TRY(st);
    }
    return ae_st_writer_add(s->w, name, dtype, ndim, shape, src);
}

typedef struct {
    tensor_sink *s;
    ae_dtype base;
} weights_job;

// Replaced attention modules are written F32 (they were trained in fp32); the rest in `base`.
static ae_status add_model_tensor(void *ud, const ae_model_tensor *t) {
    const weights_job *j = ud;
    return add_tensor(j->s, t->name, t->data, t->ndim, t->shape, t->replaced ? AE_DT_F32 : j->base);
}

static ae_status write_weights(const ae_model *m, const char *path, ae_dtype base) {
    tensor_sink s = {.be = m->be};
    AE_TRY(ae_st_writer_init(&s.w));
    weights_job j = {&s, base};
    ae_status st = ae_st_writer_metadata(s.w, "format", "pt");
    if (st == AE_OK) st = ae_model_foreach_tensor(m, add_model_tensor, &j);
    if (st == AE_OK) st = ae_st_writer_finish(s.w, path);
    else ae_st_writer_free(s.w);
    for (int i = 0; i < s.nbufs; i++) free(s.bufs[i]);
    free(s.bufs);
    return st;
}

static ae_status write_folder(const ae_model *m, const char *tmp, const ae_save_opts *o) {
    char *cfg = NULL;
    AE_TRY(student_config(m, o->src_dir, &cfg));
    ae_status st = ae_write_text_file(tmp, "config.json", cfg);
    free(cfg);
    AE_TRY(st);
    if (o->metadata_json) AE_TRY(ae_write_text_file(tmp, "conversion.json", o->metadata_json));
    AE_TRY(ae_copy_support_files(o->src_dir, tmp));
    return ae_model_save_weights(m, tmp, o->all_f32);
}

ae_status ae_copy_support_files(const char *src_dir, const char *dst_dir) {
    for (size_t i = 0; i < sizeof k_copied_files / sizeof *k_copied_files; i++) {
        char *src = ae_path_join(src_dir, k_copied_files[i]);
        char *dst = ae_path_join(dst_dir, k_copied_files[i]);
        ae_status st = AE_OK;
        if (!src || !dst) st = AE_ERR_NOMEM;
        else if (ae_path_exists(src)) st = copy_file(src, dst);
        free(src);
        free(dst);
        AE_TRY(st);
    }
    return AE_OK;
}

ae_status ae_model_save_weights(const ae_model *m, const char *out_dir, int all_f32) {
    char *wpath = ae_path_join(out_dir, "model.safetensors");
    if (!wpath) return AE_ERR_NOMEM;
    ae_status st = write_weights(m, wpath, all_f32 ? AE_DT_F32 : m->src_dtype);
    free(wpath);
    return st;
}

typedef struct {
    const ae_model *m;
    const ae_save_opts *o;
} save_job;

static ae_status fill_folder(void *ud, const char *tmp) {
    const save_job *j = ud;
    return write_folder(j->m, tmp, j->o);
}

ae_status ae_model_save(const ae_model *m, const char *out_dir, const ae_save_opts *o) {
    AE_TRY(ae_save_check_target(out_dir, o->force));
    save_job j = {m, o};
    return ae_dir_write_atomic(out_dir, fill_folder, &j);
}
