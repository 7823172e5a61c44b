#include "train/run_spec.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "core/mem.h"
#include "train/sha256.h"

static ae_status hash_into(ae_sha256_ctx *c, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return ae_errorf(AE_ERR_IO, "%s: cannot open for hashing", path);
    unsigned char buf[1 << 16];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) ae_sha256_update(c, buf, n);
    int err = ferror(f);
    fclose(f);
    return err ? ae_errorf(AE_ERR_IO, "%s: read error", path) : AE_OK;
}

ae_status ae_file_hash(const char *path, char hex[65]) {
    ae_sha256_ctx c;
    ae_sha256_init(&c);
    AE_TRY(hash_into(&c, path));
    uint8_t d[32];
    ae_sha256_final(&c, d);
    ae_sha256_hex(d, hex);
    return AE_OK;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

ae_status ae_model_dir_hash(const char *dir, char hex[65]) {
    DIR *d = opendir(dir);
    if (!d) return ae_errorf(AE_ERR_IO, "%s: cannot list folder", dir);
    char *names[4096];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 4096) {
        size_t len = strlen(e->d_name);
        if (!strcmp(e->d_name, "config.json") ||
            (len > 12 && !strcmp(e->d_name + len - 12, ".safetensors")))
            names[n++] = ae_strdup(e->d_name);
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof *names, cmp_str);
    ae_sha256_ctx c;
    ae_sha256_init(&c);
    ae_status st = AE_OK;
    for (int i = 0; i < n; i++) {
        char *p = ae_path_join(dir, names[i]);
        if (st == AE_OK) st = p ? hash_into(&c, p) : AE_ERR_NOMEM;
        free(p);
        free(names[i]);
    }
    uint8_t dg[32];
    ae_sha256_final(&c, dg);
    ae_sha256_hex(dg, hex);
    return st;
}

static cJSON *int_array(const int *v, int n) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(v[i]));
    return a;
}

char *ae_run_spec_json(const ae_run_spec *r, const ae_model *student, const ae_init_report *rep,
                       const ae_distill_result *res) {
    const ae_student_spec *s = &r->spec;
    const ae_distill_opts *o = &r->opts;
    static const char *gates[] = {"none", "elementwise", "head"};
    char seed[32];
    snprintf(seed, sizeof seed, "%" PRIu64, s->seed);
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "attnedit_version", AE_VERSION);
    cJSON_AddStringToObject(j, "status", res ? "done" : "training");
    cJSON_AddStringToObject(j, "teacher", r->teacher);
    cJSON_AddStringToObject(j, "teacher_sha256", r->teacher_hash);
    cJSON *t = cJSON_AddObjectToObject(j, "target");
    cJSON_AddStringToObject(t, "kind", ae_attn_kind_name(s->target));
    if (s->layers) cJSON_AddItemToObject(t, "layers", int_array(s->layers, s->n_layers));
    cJSON_AddNumberToObject(t, "kv_lora_rank", s->kv_lora_rank);
    cJSON_AddNumberToObject(t, "q_lora_rank", s->q_lora_rank);
    cJSON_AddNumberToObject(t, "qk_rope_dim", s->qk_rope_dim);
    cJSON_AddNumberToObject(t, "qk_nope_dim", s->qk_nope_dim);
    cJSON_AddNumberToObject(t, "v_head_dim", s->v_head_dim);
    cJSON_AddNumberToObject(t, "full_every", s->full_every);
    if (s->full_layers) cJSON_AddItemToObject(t, "full_layers", int_array(s->full_layers, s->n_full_layers));
    cJSON_AddNumberToObject(t, "window", s->window);
    cJSON_AddStringToObject(t, "gate", gates[s->gate]);
    cJSON_AddBoolToObject(t, "sinks", s->sinks);
    cJSON_AddStringToObject(t, "init", s->init_teacher ? "teacher" : "random");
    cJSON_AddStringToObject(t, "seed", seed);
    if (rep && s->target == AE_ATTN_MLA && s->init_teacher) {
        cJSON_AddNumberToObject(t, "init_kv_rel_err_mean", rep->kv_rel_err_mean);
        cJSON_AddNumberToObject(t, "init_kv_rel_err_max", rep->kv_rel_err_max);
    }
    cJSON_AddStringToObject(j, "data", r->data);
    cJSON_AddStringToObject(j, "data_sha256", r->data_hash);
    cJSON *h = cJSON_AddObjectToObject(j, "train");
    cJSON_AddNumberToObject(h, "ctx", o->ctx);
    cJSON_AddNumberToObject(h, "batch", o->batch);
    cJSON_AddNumberToObject(h, "accum", o->accum);
    cJSON_AddNumberToObject(h, "stage1_tokens", (double)o->stage_tokens[0]);
    cJSON_AddNumberToObject(h, "stage2_tokens", (double)o->stage_tokens[1]);
    cJSON_AddNumberToObject(h, "stage1_lr", o->lr[0]);
    cJSON_AddNumberToObject(h, "stage2_lr", o->lr[1]);
    cJSON_AddNumberToObject(h, "warmup_frac", o->warmup_frac);
    cJSON_AddNumberToObject(h, "min_lr_ratio", o->min_lr_ratio);
    cJSON_AddNumberToObject(h, "weight_decay", o->weight_decay);
    cJSON_AddNumberToObject(h, "clip", o->clip);
    cJSON_AddStringToObject(h, "stage1_loss", o->s1_normalized ? "normalized" : "mse");
    cJSON_AddNumberToObject(h, "stage1_block", o->s1_block);
    cJSON_AddNumberToObject(h, "tau", o->tau);
    cJSON_AddNumberToObject(h, "cos_weight", o->cos_weight);
    cJSON_AddStringToObject(h, "train", o->train_all ? "all" : "attention");
    cJSON_AddNumberToObject(h, "save_every", o->save_every);
    cJSON_AddNumberToObject(h, "log_every", o->log_every);
    snprintf(seed, sizeof seed, "%" PRIu64, o->seed);
    cJSON_AddStringToObject(h, "seed", seed);
    if (student) {
        cJSON_AddNumberToObject(j, "params", (double)student->n_params);
        cJSON_AddNumberToObject(j, "kv_bytes_per_token",
                                (double)(ae_config_kv_bytes(&student->cfg, 4096) / 4096));
    }
    if (res) {
        cJSON *rr = cJSON_AddObjectToObject(j, "result");
        cJSON_AddNumberToObject(rr, "stage1_tokens_done", (double)res->tokens_done[0]);
        cJSON_AddNumberToObject(rr, "stage2_tokens_done", (double)res->tokens_done[1]);
        cJSON_AddNumberToObject(rr, "stage1_final_loss", res->final_loss[0]);
        cJSON_AddNumberToObject(rr, "stage2_final_loss", res->final_loss[1]);
        cJSON_AddNumberToObject(rr, "wall_s", res->wall_s);
    }
    char *out = cJSON_Print(j);
    cJSON_Delete(j);
    return out;
}

// ---- reading it back for --resume
static ae_status need(const cJSON *o, const char *key, int type_num, const char *path, const cJSON **v) {
    *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!*v || (type_num ? !cJSON_IsNumber(*v) : !cJSON_IsString(*v)))
        return ae_errorf(AE_ERR_FORMAT, "%s: field \"%s\" missing or of the wrong type", path, key);
    return AE_OK;
}

static ae_status num(const cJSON *o, const char *key, const char *path, double *out) {
    const cJSON *v;
    AE_TRY(need(o, key, 1, path, &v));
    *out = v->valuedouble;
    return AE_OK;
}

static ae_status str(const cJSON *o, const char *key, const char *path, char *dst, size_t cap) {
    const cJSON *v;
    AE_TRY(need(o, key, 0, path, &v));
    snprintf(dst, cap, "%s", v->valuestring);
    return AE_OK;
}

static ae_status ints(const cJSON *o, const char *key, int *dst, int *n, const int **ptr) {
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, key), *e;
    *ptr = NULL;
    *n = 0;
    if (!a) return AE_OK;
    cJSON_ArrayForEach(e, a) if (*n < 1024) dst[(*n)++] = e->valueint;
    *ptr = dst;
    return AE_OK;
}

static ae_status parse(const cJSON *j, const char *path, ae_run_spec *r) {
    char buf[64];
    double x;
    AE_TRY(str(j, "teacher", path, r->teacher, sizeof r->teacher));
    AE_TRY(str(j, "teacher_sha256", path, r->teacher_hash, sizeof r->teacher_hash));
    AE_TRY(str(j, "data", path, r->data, sizeof r->data));
    AE_TRY(str(j, "data_sha256", path, r->data_hash, sizeof r->data_hash));
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "target");
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(j, "train");
    if (!cJSON_IsObject(t) || !cJSON_IsObject(h))
        return ae_errorf(AE_ERR_FORMAT, "%s: fields \"target\" and \"train\" must be objects", path);
    ae_student_spec *s = &r->spec;
    AE_TRY(str(t, "kind", path, buf, sizeof buf));
    s->target = !strcmp(buf, "mla") ? AE_ATTN_MLA : !strcmp(buf, "gateswa") ? AE_ATTN_GATESWA : AE_ATTN_GQA;
    if (s->target == AE_ATTN_GQA) return ae_errorf(AE_ERR_FORMAT, "%s: unknown target \"%s\"", path, buf);
    AE_TRY(ints(t, "layers", r->layers, &s->n_layers, &s->layers));
    AE_TRY(ints(t, "full_layers", r->full_layers, &s->n_full_layers, &s->full_layers));
    AE_TRY(num(t, "kv_lora_rank", path, &x)); s->kv_lora_rank = (int)x;
    AE_TRY(num(t, "q_lora_rank", path, &x)); s->q_lora_rank = (int)x;
    AE_TRY(num(t, "qk_rope_dim", path, &x)); s->qk_rope_dim = (int)x;
    AE_TRY(num(t, "qk_nope_dim", path, &x)); s->qk_nope_dim = (int)x;
    AE_TRY(num(t, "v_head_dim", path, &x)); s->v_head_dim = (int)x;
    AE_TRY(num(t, "full_every", path, &x)); s->full_every = (int)x;
    AE_TRY(num(t, "window", path, &x)); s->window = (int)x;
    AE_TRY(str(t, "gate", path, buf, sizeof buf));
    s->gate = !strcmp(buf, "head") ? AE_GATE_HEAD : !strcmp(buf, "none") ? AE_GATE_NONE : AE_GATE_ELEMENTWISE;
    s->sinks = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(t, "sinks"));
    AE_TRY(str(t, "init", path, buf, sizeof buf));
    s->init_teacher = !strcmp(buf, "teacher");
    AE_TRY(str(t, "seed", path, buf, sizeof buf));
    s->seed = strtoull(buf, NULL, 10);
    ae_distill_opts *o = &r->opts;
    AE_TRY(num(h, "ctx", path, &x)); o->ctx = (int)x;
    AE_TRY(num(h, "batch", path, &x)); o->batch = (int)x;
    AE_TRY(num(h, "accum", path, &x)); o->accum = (int)x;
    AE_TRY(num(h, "stage1_tokens", path, &x)); o->stage_tokens[0] = (int64_t)x;
    AE_TRY(num(h, "stage2_tokens", path, &x)); o->stage_tokens[1] = (int64_t)x;
    AE_TRY(num(h, "stage1_lr", path, &x)); o->lr[0] = (float)x;
    AE_TRY(num(h, "stage2_lr", path, &x)); o->lr[1] = (float)x;
    AE_TRY(num(h, "warmup_frac", path, &x)); o->warmup_frac = (float)x;
    AE_TRY(num(h, "min_lr_ratio", path, &x)); o->min_lr_ratio = (float)x;
    AE_TRY(num(h, "weight_decay", path, &x)); o->weight_decay = (float)x;
    AE_TRY(num(h, "clip", path, &x)); o->clip = (float)x;
    AE_TRY(str(h, "stage1_loss", path, buf, sizeof buf));
    o->s1_normalized = !strcmp(buf, "normalized");
    AE_TRY(num(h, "stage1_block", path, &x)); o->s1_block = (float)x;
    AE_TRY(num(h, "tau", path, &x)); o->tau = (float)x;
    AE_TRY(num(h, "cos_weight", path, &x)); o->cos_weight = (float)x;
    AE_TRY(str(h, "train", path, buf, sizeof buf));
    o->train_all = !strcmp(buf, "all");
    AE_TRY(num(h, "save_every", path, &x)); o->save_every = (int)x;
    AE_TRY(num(h, "log_every", path, &x)); o->log_every = (int)x;
    AE_TRY(str(h, "seed", path, buf, sizeof buf));
    o->seed = strtoull(buf, NULL, 10);
    return AE_OK;
}

ae_status ae_run_spec_load(const char *out_dir, ae_run_spec *r) {
    memset(r, 0, sizeof *r);
    char *path = ae_path_join(out_dir, "conversion.json"), *text = NULL;
    size_t len;
    if (!path) return AE_ERR_NOMEM;
    ae_status st = ae_file_read_all(path, &text, &len);
    if (st == AE_OK) {
        cJSON *j = cJSON_Parse(text);
        st = j ? parse(j, path, r) : ae_errorf(AE_ERR_FORMAT, "%s: not valid JSON", path);
        cJSON_Delete(j);
    }
    if (st != AE_OK && st != AE_ERR_NOMEM)
        ae_error_wrap(st, "--resume %s is not a conversion folder", out_dir);
    free(text);
    free(path);
    return st;
}
