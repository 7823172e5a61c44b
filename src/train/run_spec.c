#include "train/run_spec.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "core/mem.h"
#include "io/config_json.h"
#include "core/sha256.h"

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

// The figures of merit of an MLA teacher init (computed when the student is made; a resumed run
// writes those it read back: read_init_report): means, maxima and per layer.
static void add_init_report(cJSON *t, const ae_model *student, const ae_init_report *rep) {
    if (rep->n_layers == 0 || !student) return;
    cJSON_AddNumberToObject(t, "init_kv_rel_err_mean", rep->kv_rel_err_mean);
    cJSON_AddNumberToObject(t, "init_kv_rel_err_max", rep->kv_rel_err_max);
    cJSON_AddNumberToObject(t, "init_rope_logit_err_mean", rep->rope_logit_err_mean);
    cJSON_AddNumberToObject(t, "init_rope_logit_err_max", rep->rope_logit_err_max);
    cJSON_AddNumberToObject(t, "init_qk_logit_err_mean", rep->qk_logit_err_mean);
    cJSON_AddNumberToObject(t, "init_qk_logit_err_max", rep->qk_logit_err_max);
    cJSON *a = cJSON_AddArrayToObject(t, "init_layers");
    for (int l = 0; a && l < student->cfg.num_hidden_layers; l++) {
        if (student->cfg.layer_attn[l] != AE_ATTN_MLA) continue;
        const ae_mla_init_stats *st = &rep->layer[l];
        cJSON *e = cJSON_CreateObject();
        cJSON_AddNumberToObject(e, "layer", l);
        cJSON_AddNumberToObject(e, "kv_rel_err", st->kv_rel_err);
        cJSON_AddNumberToObject(e, "rope_logit_err", st->rope_logit_err);
        cJSON_AddNumberToObject(e, "rope_key_energy", st->rope_key_energy);
        cJSON_AddNumberToObject(e, "qk_logit_err", st->qk_logit_err);
        cJSON_AddNumberToObject(e, "rope_pairs_shifted", st->rope_shifted);
        cJSON_AddItemToArray(a, e);
    }
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
    cJSON_AddStringToObject(t, "init", ae_init_names[s->init_teacher]);
    cJSON_AddStringToObject(t, "seed", seed);
    if (rep && s->target == AE_ATTN_MLA && s->init_teacher) add_init_report(t, student, rep);
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
    cJSON_AddNumberToObject(h, "save_minutes", o->save_minutes);
    cJSON_AddStringToObject(h, "optim_state", o->optim_8bit ? "8bit" : "fp32");
    cJSON_AddStringToObject(h, "grad_dtype", o->grad_bf16 ? "bf16" : "fp32");
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

// ---- the settings table shared with the command line

#define OPT_AT(field) offsetof(ae_distill_opts, field)
const ae_run_setting ae_run_settings[] = {
    {"--ctx", "ctx", OPT_AT(ctx), 0, 2, AE_RUN_MAX_COUNT, 0},
    {"--batch", "batch", OPT_AT(batch), 0, 1, AE_RUN_MAX_COUNT, 0},
    {"--accum", "accum", OPT_AT(accum), 0, 1, AE_RUN_MAX_COUNT, 0},
    {"--save-every", "save_every", OPT_AT(save_every), 0, 1, AE_RUN_MAX_COUNT, 1},
    {"--log-every", "log_every", OPT_AT(log_every), 0, 1, AE_RUN_MAX_COUNT, 1},
    {"--stage1-lr", "stage1_lr", OPT_AT(lr[0]), 1, 0, 10, 0},
    {"--stage2-lr", "stage2_lr", OPT_AT(lr[1]), 1, 0, 10, 0},
    {"--warmup", "warmup_frac", OPT_AT(warmup_frac), 1, 0, 1, 0},
    {"--min-lr-ratio", "min_lr_ratio", OPT_AT(min_lr_ratio), 1, 0, 1, 0},
    {"--weight-decay", "weight_decay", OPT_AT(weight_decay), 1, 0, 10, 0},
    {"--clip", "clip", OPT_AT(clip), 1, 0, 1e6, 0},
    {"--tau", "tau", OPT_AT(tau), 1, 1e-3, 100, 0},
    {"--cos-weight", "cos_weight", OPT_AT(cos_weight), 1, 0, 1e3, 0},
    {"--stage1-block", "stage1_block", OPT_AT(s1_block), 1, 0, 1e3, 0},
    {NULL, NULL, 0, 0, 0, 0, 0},
};

// ---- checked reads of JSON fields

// x as messages show it: integers plainly, anything else with %g.
static const char *fmt_num(double x, char buf[40]) {
    if (x == floor(x) && fabs(x) < 1e15) snprintf(buf, 40, "%.0f", x);
    else snprintf(buf, 40, "%g", x);
    return buf;
}

static const char *type_name(ae_json_type t) {
    static const char *names[] = {"a number", "a string", "true or false", "an array", "an object"};
    return names[t];
}

static int has_type(const cJSON *v, ae_json_type t) {
    switch (t) {
    case AE_JSON_NUMBER: return cJSON_IsNumber(v);
    case AE_JSON_STRING: return cJSON_IsString(v) && v->valuestring;
    case AE_JSON_BOOL: return cJSON_IsBool(v);
    case AE_JSON_ARRAY: return cJSON_IsArray(v);
    case AE_JSON_OBJECT: return cJSON_IsObject(v);
    }
    return 0;
}

ae_status ae_json_check_type(const cJSON *v, const char *path, const char *name, ae_json_type type) {
    if (!v) return ae_errorf(AE_ERR_FORMAT, "%s: %s is missing", path, name);
    if (!has_type(v, type))
        return ae_errorf(AE_ERR_FORMAT, "%s: %s must be %s, not %s", path, name, type_name(type),
                         ae_cfg_jtype(v));
    return AE_OK;
}

ae_status ae_json_field(const cJSON *o, const char *path, const char *name, ae_json_type type,
                        const cJSON **v) {
    const char *dot = strrchr(name, '.');
    *v = cJSON_GetObjectItemCaseSensitive(o, dot ? dot + 1 : name);
    return ae_json_check_type(*v, path, name, type);
}

ae_status ae_json_int_value(const cJSON *v, const char *path, const char *name, double lo, double hi,
                            int64_t *out) {
    AE_TRY(ae_json_check_type(v, path, name, AE_JSON_NUMBER));
    double x = v->valuedouble;
    char a[40], b[40], c[40];
    if (x != floor(x))
        return ae_errorf(AE_ERR_FORMAT, "%s: %s is %s; must be an integer in [%s, %s]", path, name,
                         fmt_num(x, a), fmt_num(lo, b), fmt_num(hi, c));
    if (!(x >= lo && x <= hi) && lo == hi)
        return ae_errorf(AE_ERR_FORMAT, "%s: %s is %s; must be %s", path, name, fmt_num(x, a),
                         fmt_num(lo, b));
    if (!(x >= lo && x <= hi))
        return ae_errorf(AE_ERR_FORMAT, "%s: %s is %s; must be in [%s, %s]", path, name,
                         fmt_num(x, a), fmt_num(lo, b), fmt_num(hi, c));
    *out = (int64_t)x;
    return AE_OK;
}

ae_status ae_json_int(const cJSON *o, const char *path, const char *name, double lo, double hi,
                      int64_t *out) {
    const char *dot = strrchr(name, '.');
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, dot ? dot + 1 : name);
    return ae_json_int_value(v, path, name, lo, hi, out);
}

ae_status ae_json_num(const cJSON *o, const char *path, const char *name, double lo, double hi,
                      double *out) {
    const cJSON *v;
    AE_TRY(ae_json_field(o, path, name, AE_JSON_NUMBER, &v));
    double x = v->valuedouble;
    char a[40], b[40], c[40];
    if (!(x >= lo && x <= hi))
        return ae_errorf(AE_ERR_FORMAT, "%s: %s is %s; must be in [%s, %s]", path, name,
                         fmt_num(x, a), fmt_num(lo, b), fmt_num(hi, c));
    *out = x;
    return AE_OK;
}

ae_status ae_json_u64_value(const cJSON *v, const char *path, const char *name, uint64_t *out) {
    AE_TRY(ae_json_check_type(v, path, name, AE_JSON_STRING));
    const char *s = v->valuestring;
    size_t n = strlen(s);
    int digits = n >= 1 && n <= 20;
    for (size_t i = 0; digits && i < n; i++) digits = s[i] >= '0' && s[i] <= '9';
    errno = 0;
    unsigned long long x = digits ? strtoull(s, NULL, 10) : 0;
    if (!digits || errno == ERANGE)
        return ae_errorf(AE_ERR_FORMAT, "%s: %s is \"%.40s\"; must be a string of decimal digits "
                         "(an integer in [0, 2^64))", path, name, s);
    *out = x;
    return AE_OK;
}

ae_status ae_json_u64(const cJSON *o, const char *path, const char *name, uint64_t *out) {
    const char *dot = strrchr(name, '.');
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, dot ? dot + 1 : name);
    return ae_json_u64_value(v, path, name, out);
}

ae_status ae_json_enum(const cJSON *o, const char *path, const char *name,
                       const char *const *names, int n, int *out) {
    const cJSON *v;
    AE_TRY(ae_json_field(o, path, name, AE_JSON_STRING, &v));
    char allowed[256] = "";
    for (int i = 0; i < n; i++) {
        if (!strcmp(v->valuestring, names[i])) {
            *out = i;
            return AE_OK;
        }
        size_t len = strlen(allowed);
        snprintf(allowed + len, sizeof allowed - len, "%s\"%s\"", i ? ", " : "", names[i]);
    }
    return ae_errorf(AE_ERR_FORMAT, "%s: %s is \"%.40s\"; must be one of %s", path, name,
                     v->valuestring, allowed);
}

// ---- reading conversion.json back (--resume, --restart)

static ae_status read_str(const cJSON *o, const char *path, const char *name, char *dst, size_t cap) {
    const cJSON *v;
    AE_TRY(ae_json_field(o, path, name, AE_JSON_STRING, &v));
    if (!v->valuestring[0]) return ae_errorf(AE_ERR_FORMAT, "%s: %s is empty", path, name);
    if (strlen(v->valuestring) >= cap)
        return ae_errorf(AE_ERR_FORMAT, "%s: %s is longer than %zu bytes", path, name, cap - 1);
    memcpy(dst, v->valuestring, strlen(v->valuestring) + 1);
    return AE_OK;
}

static ae_status read_hash(const cJSON *o, const char *path, const char *name, char dst[65]) {
    const cJSON *v;
    AE_TRY(ae_json_field(o, path, name, AE_JSON_STRING, &v));
    int ok = strlen(v->valuestring) == 64;
    for (int i = 0; ok && i < 64; i++) ok = strchr("0123456789abcdef", v->valuestring[i]) != NULL;
    if (!ok)
        return ae_errorf(AE_ERR_FORMAT, "%s: %s is \"%.80s\"; must be a SHA-256 (64 hex digits)",
                         path, name, v->valuestring);
    memcpy(dst, v->valuestring, 65);
    return AE_OK;
}

static ae_status read_dim(const cJSON *o, const char *path, const char *name, int lo, int hi, int *out) {
    int64_t x;
    AE_TRY(ae_json_int(o, path, name, lo, hi, &x));
    *out = (int)x;
    return AE_OK;
}

// An optional list of layer indices ("target.layers"): absent = NULL; else 1 to 1024 distinct
// integers in [0, AE_RUN_MAX_DIM] (checked against the student's layer count later).
static ae_status read_layers(const cJSON *t, const char *path, const char *name, int *dst, int *n,
                             const int **ptr) {
    const char *key = strrchr(name, '.') + 1;
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(t, key), *e;
    *ptr = NULL;
    *n = 0;
    if (!a) return AE_OK;
    AE_TRY(ae_json_check_type(a, path, name, AE_JSON_ARRAY));
    int count = cJSON_GetArraySize(a);
    if (count < 1 || count > 1024)
        return ae_errorf(AE_ERR_FORMAT, "%s: %s has %d entries; must have 1 to 1024 layer indices",
                         path, name, count);
    cJSON_ArrayForEach(e, a) {
        char item[64];
        int64_t l;
        snprintf(item, sizeof item, "%s[%d]", name, *n);
        AE_TRY(ae_json_int_value(e, path, item, 0, AE_RUN_MAX_DIM, &l));
        for (int i = 0; i < *n; i++)
            if (dst[i] == l)
                return ae_errorf(AE_ERR_FORMAT, "%s: %s is %d, listed twice", path, item, (int)l);
        dst[(*n)++] = (int)l;
    }
    *ptr = dst;
    return AE_OK;
}

// The figures of merit of an MLA teacher init that add_init_report wrote (absent: n_layers 0),
// so that a resumed run writes them again.
static ae_status read_init_report(const cJSON *t, const char *path, ae_init_report *rep) {
    static const char *totals[] = {"kv_rel_err_mean", "kv_rel_err_max", "rope_logit_err_mean",
                                   "rope_logit_err_max", "qk_logit_err_mean", "qk_logit_err_max"};
    static const char *figures[] = {"kv_rel_err", "rope_logit_err", "rope_key_energy", "qk_logit_err"};
    double *total[] = {&rep->kv_rel_err_mean, &rep->kv_rel_err_max, &rep->rope_logit_err_mean,
                       &rep->rope_logit_err_max, &rep->qk_logit_err_mean, &rep->qk_logit_err_max};
    memset(rep, 0, sizeof *rep);
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(t, "init_layers"), *e;
    if (!a) return AE_OK;
    AE_TRY(ae_json_check_type(a, path, "target.init_layers", AE_JSON_ARRAY));
    char name[96];
    for (int i = 0; i < 6; i++) {
        snprintf(name, sizeof name, "target.init_%s", totals[i]);
        AE_TRY(ae_json_num(t, path, name, 0, DBL_MAX, total[i]));
    }
    int i = 0;
    cJSON_ArrayForEach(e, a) {
        int64_t l, shifted;
        snprintf(name, sizeof name, "target.init_layers[%d]", i);
        AE_TRY(ae_json_check_type(e, path, name, AE_JSON_OBJECT));
        snprintf(name, sizeof name, "target.init_layers[%d].layer", i);
        AE_TRY(ae_json_int(e, path, name, 0, AE_MAX_LAYERS - 1, &l));
        ae_mla_init_stats *st = &rep->layer[l];
        double *figure[] = {&st->kv_rel_err, &st->rope_logit_err, &st->rope_key_energy, &st->qk_logit_err};
        for (int f = 0; f < 4; f++) {
            snprintf(name, sizeof name, "target.init_layers[%d].%s", i, figures[f]);
            AE_TRY(ae_json_num(e, path, name, 0, DBL_MAX, figure[f]));
        }
        snprintf(name, sizeof name, "target.init_layers[%d].rope_pairs_shifted", i);
        AE_TRY(ae_json_int(e, path, name, 0, INT_MAX, &shifted));
        st->rope_shifted = (int)shifted;
        i++;
    }
    rep->n_layers = i;
    return AE_OK;
}

// "target": the fields of the run's own target within the command-line limits (and what the
// student needs: a GateSWA pattern); those of the other target are unused, only in [0, limit].
static ae_status parse_target(const cJSON *t, const char *path, ae_run_spec *r) {
    static const char *kinds[] = {"mla", "gateswa"}, *gates[] = {"none", "elementwise", "head"};
    ae_student_spec *s = &r->spec;
    int k, mla, gswa, v;
    AE_TRY(ae_json_enum(t, path, "target.kind", kinds, 2, &k));
    s->target = k == 0 ? AE_ATTN_MLA : AE_ATTN_GATESWA;
    mla = s->target == AE_ATTN_MLA, gswa = !mla;
    AE_TRY(read_layers(t, path, "target.layers", r->layers, &s->n_layers, &s->layers));
    AE_TRY(read_layers(t, path, "target.full_layers", r->full_layers, &s->n_full_layers, &s->full_layers));
    AE_TRY(read_dim(t, path, "target.kv_lora_rank", mla, AE_RUN_MAX_DIM, &s->kv_lora_rank));
    AE_TRY(read_dim(t, path, "target.q_lora_rank", 0, AE_RUN_MAX_DIM, &s->q_lora_rank));
    AE_TRY(read_dim(t, path, "target.qk_rope_dim", 2 * mla, AE_RUN_MAX_DIM, &s->qk_rope_dim));
    AE_TRY(read_dim(t, path, "target.qk_nope_dim", 0, AE_RUN_MAX_DIM, &s->qk_nope_dim));
    AE_TRY(read_dim(t, path, "target.v_head_dim", mla, AE_RUN_MAX_DIM, &s->v_head_dim));
    AE_TRY(read_dim(t, path, "target.full_every", gswa && !s->full_layers, AE_RUN_MAX_DIM, &s->full_every));
    AE_TRY(read_dim(t, path, "target.window", gswa, AE_RUN_MAX_WINDOW, &s->window));
    AE_TRY(ae_json_enum(t, path, "target.gate", gates, 3, &v));
    s->gate = (ae_gate_kind)v;
    const cJSON *b;
    AE_TRY(ae_json_field(t, path, "target.sinks", AE_JSON_BOOL, &b));
    s->sinks = cJSON_IsTrue(b);
    AE_TRY(ae_json_enum(t, path, "target.init", ae_init_names, AE_N_INITS, &s->init_teacher));
    AE_TRY(ae_json_u64(t, path, "target.seed", &s->seed));
    return read_init_report(t, path, &r->init_report);
}

// "train": every setting of the table, the budgets, the losses' kinds and the seed.
static ae_status parse_train(const cJSON *h, const char *path, ae_run_spec *r) {
    static const char *losses[] = {"mse", "normalized"}, *trains[] = {"attention", "all"};
    ae_distill_opts *o = &r->opts;
    char name[64];
    for (const ae_run_setting *e = ae_run_settings; e->option; e++) {
        snprintf(name, sizeof name, "train.%s", e->field);
        double lo = e->zero_ok ? 0 : e->lo, x = 0;
        int64_t n = 0;
        if (e->is_float) {
            AE_TRY(ae_json_num(h, path, name, lo, e->hi, &x));
            *(float *)((char *)o + e->offset) = (float)x;
        } else {
            AE_TRY(ae_json_int(h, path, name, lo, e->hi, &n));
            *(int *)((char *)o + e->offset) = (int)n;
        }
    }
    for (int s = 0; s < 2; s++) {
        snprintf(name, sizeof name, "train.stage%d_tokens", s + 1);
        AE_TRY(ae_json_int(h, path, name, 0, AE_RUN_MAX_TOKENS, &o->stage_tokens[s]));
    }
    o->save_minutes = 0.0f; // optional: runs of earlier versions lack it
    if (cJSON_GetObjectItemCaseSensitive(h, "save_minutes")) {
        double x;
        AE_TRY(ae_json_num(h, path, "train.save_minutes", 0, AE_RUN_MAX_MINUTES, &x));
        o->save_minutes = (float)x;
    }
    static const char *states[] = {"fp32", "8bit"};
    o->optim_8bit = 0; // optional: runs of earlier versions lack it (F32 moments)
    if (cJSON_GetObjectItemCaseSensitive(h, "optim_state"))
        AE_TRY(ae_json_enum(h, path, "train.optim_state", states, 2, &o->optim_8bit));
    static const char *grads[] = {"fp32", "bf16"};
    o->grad_bf16 = 0; // optional: runs before --grad-dtype lack it (F32 gradients)
    if (cJSON_GetObjectItemCaseSensitive(h, "grad_dtype"))
        AE_TRY(ae_json_enum(h, path, "train.grad_dtype", grads, 2, &o->grad_bf16));
    AE_TRY(ae_json_enum(h, path, "train.stage1_loss", losses, 2, &o->s1_normalized));
    AE_TRY(ae_json_enum(h, path, "train.train", trains, 2, &o->train_all));
    return ae_json_u64(h, path, "train.seed", &o->seed);
}

// Rules between fields: the run trains (a budget and a data file) and has one seed.
static ae_status check_run(const ae_run_spec *r, const char *path) {
    if (r->opts.stage_tokens[0] == 0 && r->opts.stage_tokens[1] == 0)
        return ae_errorf(AE_ERR_FORMAT, "%s: train.stage1_tokens and train.stage2_tokens are both 0: "
                         "this student was written without training, there is nothing to resume or "
                         "restart", path);
    if (r->opts.seed != r->spec.seed)
        return ae_errorf(AE_ERR_FORMAT, "%s: train.seed is %" PRIu64 " but target.seed is %" PRIu64
                         "; a run has one seed", path, r->opts.seed, r->spec.seed);
    return AE_OK;
}

static ae_status parse(const cJSON *j, const char *path, ae_run_spec *r) {
    static const char *status[] = {"training", "done"};
    const cJSON *t, *h;
    if (!cJSON_IsObject(j)) return ae_errorf(AE_ERR_FORMAT, "%s: must be a JSON object", path);
    AE_TRY(ae_json_enum(j, path, "status", status, 2, &r->done));
    AE_TRY(read_str(j, path, "teacher", r->teacher, sizeof r->teacher));
    AE_TRY(read_hash(j, path, "teacher_sha256", r->teacher_hash));
    AE_TRY(read_str(j, path, "data", r->data, sizeof r->data));
    AE_TRY(read_hash(j, path, "data_sha256", r->data_hash));
    AE_TRY(ae_json_field(j, path, "target", AE_JSON_OBJECT, &t));
    AE_TRY(ae_json_field(j, path, "train", AE_JSON_OBJECT, &h));
    AE_TRY(parse_target(t, path, r));
    AE_TRY(parse_train(h, path, r));
    return check_run(r, path);
}

ae_status ae_run_spec_load(const char *out_dir, ae_run_spec *r) {
    memset(r, 0, sizeof *r);
    char *path = ae_path_join(out_dir, "conversion.json"), *text = NULL;
    size_t len;
    if (!path) return AE_ERR_NOMEM;
    ae_status st = ae_file_read_all(path, &text, &len);
    if (st == AE_ERR_IO) ae_error_wrap(st, "%s is not a conversion folder", out_dir);
    if (st == AE_OK) {
        cJSON *j = cJSON_Parse(text);
        st = j ? parse(j, path, r) : ae_errorf(AE_ERR_FORMAT, "%s: not valid JSON", path);
        cJSON_Delete(j);
    }
    free(text);
    free(path);
    return st;
}

// ---- the spec against the student's config.json

static int in_list(const int *v, int n, int x) {
    for (int i = 0; i < n; i++)
        if (v[i] == x) return 1;
    return 0;
}

static ae_status check_layer_list(const int *v, int n, int L, const char *path, const char *name) {
    for (int i = 0; i < n; i++)
        if (v[i] >= L)
            return ae_errorf(AE_ERR_FORMAT, "%s: %s[%d] is %d; the student has %d layers (indices "
                             "0 to %d)", path, name, i, v[i], L, L - 1);
    return AE_OK;
}

static ae_status check_dim(const char *path, const char *name, int spec, const char *key, int cfg) {
    if (spec == cfg) return AE_OK;
    return ae_errorf(AE_ERR_FORMAT, "%s: %s is %d but the student's config.json has %s %d", path,
                     name, spec, key, cfg);
}

static ae_status check_mla(const ae_student_spec *s, const ae_config *c, const char *path) {
    AE_TRY(check_dim(path, "target.kv_lora_rank", s->kv_lora_rank, "kv_lora_rank", c->kv_lora_rank));
    AE_TRY(check_dim(path, "target.q_lora_rank", s->q_lora_rank, "q_lora_rank", c->q_lora_rank));
    AE_TRY(check_dim(path, "target.qk_rope_dim", s->qk_rope_dim, "qk_rope_head_dim", c->qk_rope_head_dim));
    AE_TRY(check_dim(path, "target.qk_nope_dim", s->qk_nope_dim, "qk_nope_head_dim", c->qk_nope_head_dim));
    return check_dim(path, "target.v_head_dim", s->v_head_dim, "v_head_dim", c->v_head_dim);
}

static ae_status check_gateswa(const ae_student_spec *s, const ae_config *c, const char *path) {
    static const char *gates[] = {"none", "elementwise", "head"};
    AE_TRY(check_dim(path, "target.window", s->window, "sliding_window", c->sliding_window));
    if ((int)s->gate != c->attn_gate)
        return ae_errorf(AE_ERR_FORMAT, "%s: target.gate is \"%s\" but the student's config.json has "
                         "attn_output_gate \"%s\"", path, gates[s->gate], gates[c->attn_gate]);
    if (!s->sinks != !c->attn_sinks)
        return ae_errorf(AE_ERR_FORMAT, "%s: target.sinks is %s but the student's config.json has "
                         "attn_sinks %s", path, s->sinks ? "true" : "false", c->attn_sinks ? "true" : "false");
    for (int l = 0; l < c->num_hidden_layers; l++) {
        if (c->layer_attn[l] == AE_ATTN_GQA) continue;
        int full = s->full_layers ? in_list(s->full_layers, s->n_full_layers, l)
                                  : l % s->full_every == s->full_every - 1;
        if (full != (c->layer_types[l] == AE_LAYER_FULL))
            return ae_errorf(AE_ERR_FORMAT, "%s: target.%s gives layer %d %s attention but the "
                             "student's config.json has %s attention there", path,
                             s->full_layers ? "full_layers" : "full_every", l,
                             full ? "full" : "sliding-window", full ? "sliding-window" : "full");
    }
    return AE_OK;
}

static ae_status check_student(const ae_run_spec *r, const ae_config *c, const char *path) {
    const ae_student_spec *s = &r->spec;
    int L = c->num_hidden_layers;
    if (c->target != s->target)
        return ae_errorf(AE_ERR_FORMAT, "%s: target.kind is \"%s\" but the student's config.json has "
                         "attention_target \"%s\"", path, ae_attn_kind_name(s->target),
                         ae_attn_kind_name(c->target));
    AE_TRY(check_layer_list(s->layers, s->n_layers, L, path, "target.layers"));
    AE_TRY(check_layer_list(s->full_layers, s->n_full_layers, L, path, "target.full_layers"));
    for (int l = 0; l < L; l++)
        if ((!s->layers || in_list(s->layers, s->n_layers, l)) != (c->layer_attn[l] != AE_ATTN_GQA))
            return ae_errorf(AE_ERR_FORMAT, "%s: target.layers %s layer %d but the student's "
                             "config.json %s it", path, c->layer_attn[l] == AE_ATTN_GQA ? "replaces" :
                             "does not replace", l, c->layer_attn[l] == AE_ATTN_GQA ? "does not replace" :
                             "replaces");
    return s->target == AE_ATTN_MLA ? check_mla(s, c, path) : check_gateswa(s, c, path);
}

ae_status ae_run_spec_check_student(const ae_run_spec *r, const char *out_dir) {
    ae_config c;
    memset(&c, 0, sizeof c);
    AE_TRY(ae_config_load(out_dir, &c));
    char *path = ae_path_join(out_dir, "conversion.json");
    ae_status st = path ? check_student(r, &c, path) : AE_ERR_NOMEM;
    free(path);
    ae_config_free(&c);
    return st;
}
