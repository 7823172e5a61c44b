// Checkpoints of a distillation run: out/checkpoint/{params.safetensors, state.json}.
// params.safetensors holds every student parameter (F32, flattened, by HF name) and the AdamW
// moments of the current stage ("adam.m/<name>", "adam.v/<name>"). A new checkpoint is written
// to checkpoint.tmp.<pid>, the previous one moved to checkpoint.old, the new one renamed into
// place and the old one removed; if the process dies in between, checkpoint.old is used.
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "core/mem.h"
#include "io/safetensors.h"
#include "train/distill_internal.h"


static ae_status write_params(const ae_run *r, const char *path) {
    ae_st_writer *w;
    AE_TRY(ae_st_writer_init(&w));
    ae_status st = AE_OK;
    char name[128];
    for (int i = 0; i < r->np && st == AE_OK; i++) {
        int64_t shape[1] = {r->sp[i].numel};
        st = ae_st_writer_add(w, r->sp[i].name, AE_DT_F32, 1, shape, r->sp[i].data);
    }
    for (int k = 0; k < r->ntrain && st == AE_OK; k++) {
        const ae_named_param *p = &r->sp[r->trainable[k]];
        int64_t shape[1] = {p->numel};
        snprintf(name, sizeof name, "adam.m/%s", p->name);
        st = ae_st_writer_add(w, name, AE_DT_F32, 1, shape, r->opt.m[k]);
        snprintf(name, sizeof name, "adam.v/%s", p->name);
        if (st == AE_OK) st = ae_st_writer_add(w, name, AE_DT_F32, 1, shape, r->opt.v[k]);
    }
    if (st == AE_OK) return ae_st_writer_finish(w, path);
    ae_st_writer_free(w);
    return st;
}

static char *state_json(const ae_run *r) {
    cJSON *j = cJSON_CreateObject();
    char buf[32];
    cJSON_AddNumberToObject(j, "version", 1);
    cJSON_AddNumberToObject(j, "stage", r->stage);
    cJSON_AddNumberToObject(j, "step", (double)r->step);
    cJSON_AddNumberToObject(j, "opt_step", (double)r->opt.step);
    cJSON *fl = cJSON_AddArrayToObject(j, "final_loss");
    for (int i = 0; i < 2; i++) cJSON_AddItemToArray(fl, cJSON_CreateNumber(r->final_loss[i]));
    snprintf(buf, sizeof buf, "%" PRIu64, r->loader.draws);
    cJSON_AddStringToObject(j, "loader_draws", buf);
    cJSON *rng = cJSON_AddArrayToObject(j, "loader_rng");
    for (int i = 0; i < 4; i++) {
        snprintf(buf, sizeof buf, "%016" PRIx64, r->loader.rng.s[i]);
        cJSON_AddItemToArray(rng, cJSON_CreateString(buf));
    }
    cJSON_AddNumberToObject(j, "ctx", r->o->ctx);
    cJSON_AddNumberToObject(j, "batch", r->o->batch);
    cJSON_AddNumberToObject(j, "accum", r->o->accum);
    snprintf(buf, sizeof buf, "%" PRIu64, r->o->seed);
    cJSON_AddStringToObject(j, "seed", buf);
    char *s = cJSON_Print(j);
    cJSON_Delete(j);
    return s;
}

static ae_status write_checkpoint(const ae_run *r, const char *dir) {
    char *p = ae_path_join(dir, "params.safetensors");
    if (!p) return AE_ERR_NOMEM;
    ae_status st = write_params(r, p);
    free(p);
    AE_TRY(st);
    char *js = state_json(r), *sp = ae_path_join(dir, "state.json");
    ae_atomic_file f;
    st = (js && sp) ? ae_atomic_open(&f, sp) : AE_ERR_NOMEM;
    if (st == AE_OK) st = ae_atomic_write(&f, js, strlen(js));
    if (st == AE_OK) st = ae_atomic_commit(&f);
    else if (js && sp) ae_atomic_abort(&f);
    free(js);
    free(sp);
    return st;
}

static ae_status fill_checkpoint(void *ud, const char *tmp) { return write_checkpoint(ud, tmp); }

ae_status ae_ckpt_save(const ae_run *r) {
    char *dir = ae_path_join(r->out_dir, "checkpoint");
    if (!dir) return AE_ERR_NOMEM;
    // on failure the previous checkpoint (checkpoint/ or checkpoint.old/) stays valid
    ae_status st = ae_dir_write_atomic(dir, fill_checkpoint, (void *)r);
    if (st != AE_OK) ae_error_wrap(st, "saving checkpoint");
    free(dir);
    return st;
}

static ae_status parse_state(ae_run *r, const char *path) {
    char *text;
    size_t len;
    AE_TRY(ae_file_read_all(path, &text, &len));
    cJSON *j = cJSON_Parse(text);
    free(text);
    if (!j) return ae_errorf(AE_ERR_FORMAT, "%s: not valid JSON", path);
    ae_status st = AE_OK;
    const cJSON *stage = cJSON_GetObjectItem(j, "stage"), *step = cJSON_GetObjectItem(j, "step");
    const cJSON *ostep = cJSON_GetObjectItem(j, "opt_step"), *draws = cJSON_GetObjectItem(j, "loader_draws");
    const cJSON *rng = cJSON_GetObjectItem(j, "loader_rng");
    const cJSON *ctx = cJSON_GetObjectItem(j, "ctx"), *batch = cJSON_GetObjectItem(j, "batch");
    const cJSON *accum = cJSON_GetObjectItem(j, "accum"), *seed = cJSON_GetObjectItem(j, "seed");
    if (!cJSON_IsNumber(stage) || !cJSON_IsNumber(step) || !cJSON_IsNumber(ostep) ||
        !cJSON_IsString(draws) || !cJSON_IsArray(rng) || cJSON_GetArraySize(rng) != 4 ||
        !cJSON_IsNumber(ctx) || !cJSON_IsNumber(batch) || !cJSON_IsNumber(accum) || !cJSON_IsString(seed)) {
        st = ae_errorf(AE_ERR_FORMAT, "%s: missing or mistyped fields", path);
    } else if (ctx->valueint != r->o->ctx || batch->valueint != r->o->batch ||
               accum->valueint != r->o->accum || strtoull(seed->valuestring, NULL, 10) != r->o->seed) {
        st = ae_errorf(AE_ERR_ARG, "%s: checkpoint of a run with other ctx/batch/accum/seed", path);
    } else {
        r->stage = stage->valueint;
        r->step = (int64_t)step->valuedouble;
        st = ae_run_setup_stage(r);
        r->opt.step = (int64_t)ostep->valuedouble;
        r->loader.draws = strtoull(draws->valuestring, NULL, 10);
        const cJSON *fl = cJSON_GetObjectItem(j, "final_loss");
        for (int i = 0; i < 2 && cJSON_GetArrayItem(fl, i); i++)
            r->final_loss[i] = cJSON_GetArrayItem(fl, i)->valuedouble;
        for (int i = 0; i < 4; i++)
            r->loader.rng.s[i] = strtoull(cJSON_GetArrayItem(rng, i)->valuestring, NULL, 16);
    }
    cJSON_Delete(j);
    return st;
}

static ae_status load_tensor(const ae_st_set *s, const char *path, const char *name, float *dst,
                             int64_t numel) {
    const ae_st_tensor *t = ae_st_find(s, name);
    if (!t || t->numel != numel)
        return ae_errorf(AE_ERR_FORMAT, "%s: tensor '%s' missing or of the wrong size", path, name);
    return ae_st_to_f32(t, dst);
}

ae_status ae_ckpt_load(ae_run *r, int *found) {
    *found = 0;
    char *dir = ae_path_join(r->out_dir, "checkpoint");
    if (!dir) return AE_ERR_NOMEM;
    char *state = ae_path_join(dir, "state.json");
    if (state && !ae_path_exists(state)) { // died between the two renames: use the old one
        free(dir), free(state);
        dir = ae_path_join(r->out_dir, "checkpoint.old");
        state = dir ? ae_path_join(dir, "state.json") : NULL;
    }
    ae_status st = (dir && state) ? AE_OK : AE_ERR_NOMEM;
    if (st == AE_OK && ae_path_exists(state)) {
        *found = 1;
        st = parse_state(r, state);
        char *pp = ae_path_join(dir, "params.safetensors");
        ae_st_set *s = NULL;
        if (st == AE_OK) st = pp ? ae_st_open_file(pp, &s) : AE_ERR_NOMEM;
        char name[128];
        for (int i = 0; st == AE_OK && i < r->np; i++)
            st = load_tensor(s, pp, r->sp[i].name, r->sp[i].data, r->sp[i].numel);
        for (int k = 0; st == AE_OK && k < r->ntrain; k++) {
            const ae_named_param *p = &r->sp[r->trainable[k]];
            snprintf(name, sizeof name, "adam.m/%s", p->name);
            st = load_tensor(s, pp, name, r->opt.m[k], p->numel);
            snprintf(name, sizeof name, "adam.v/%s", p->name);
            if (st == AE_OK) st = load_tensor(s, pp, name, r->opt.v[k], p->numel);
        }
        if (s) ae_st_close(s);
        free(pp);
    }
    free(dir);
    free(state);
    return st;
}
