// Pass-key results as JSON (see passkey.h and docs/EVAL.md for the keys).
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "eval/passkey.h"

static cJSON *trial_json(const ae_passkey_prompt *p, const ae_passkey_score *x) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "key", p->key);
    cJSON_AddStringToObject(o, "prediction", x->pred ? x->pred : "");
    cJSON_AddBoolToObject(o, "correct", x->correct);
    cJSON_AddNumberToObject(o, "key_loglik", x->loglik);
    cJSON_AddNumberToObject(o, "prompt_tokens", x->n);
    cJSON_AddNumberToObject(o, "answer_tokens", p->n_answer);
    cJSON_AddNumberToObject(o, "key_position", p->key_pos);
    cJSON_AddNumberToObject(o, "filler_depth",
                            p->filler_tokens > 0 ? (double)p->filler_before / p->filler_tokens : 0.0);
    return o;
}

static cJSON *model_json(const ae_passkey_set *s, const ae_passkey_model *mo) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", mo->name ? mo->name : "");
    if (mo->path) cJSON_AddStringToObject(o, "path", mo->path);
    if (mo->max_positions > 0) cJSON_AddNumberToObject(o, "max_position_embeddings", mo->max_positions);
    cJSON *cells = cJSON_AddArrayToObject(o, "cells");
    for (int li = 0; li < s->n_lengths; li++)
        for (int di = 0; di < s->n_depths; di++) {
            double acc, ll;
            ae_passkey_cell(s, mo->scores, li, di, &acc, &ll);
            cJSON *c = cJSON_CreateObject();
            cJSON_AddNumberToObject(c, "length", s->lengths[li]);
            cJSON_AddNumberToObject(c, "depth", s->depths[di]);
            cJSON_AddNumberToObject(c, "accuracy", acc);
            cJSON_AddNumberToObject(c, "key_loglik", ll);
            cJSON *tr = cJSON_AddArrayToObject(c, "trials");
            for (int t = 0; t < s->trials; t++) {
                int i = ae_passkey_index(s, li, di, t);
                cJSON_AddItemToArray(tr, trial_json(&s->prompts[i], &mo->scores[i]));
            }
            cJSON_AddItemToArray(cells, c);
        }
    return o;
}

char *ae_passkey_json(const ae_passkey_set *s, const ae_passkey_model *models, int n_models) {
    cJSON *o = cJSON_CreateObject();
    cJSON *a = cJSON_AddArrayToObject(o, "lengths");
    for (int i = 0; i < s->n_lengths; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(s->lengths[i]));
    a = cJSON_AddArrayToObject(o, "depths");
    for (int i = 0; i < s->n_depths; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(s->depths[i]));
    cJSON_AddNumberToObject(o, "trials", s->trials);
    cJSON_AddNumberToObject(o, "digits", s->digits);
    if (s->seed <= ((uint64_t)1 << 53)) cJSON_AddNumberToObject(o, "seed", (double)s->seed);
    else { // beyond a double's exact integers: as a string
        char b[24];
        snprintf(b, sizeof b, "%llu", (unsigned long long)s->seed);
        cJSON_AddStringToObject(o, "seed", b);
    }
    a = cJSON_AddArrayToObject(o, "models");
    for (int i = 0; i < n_models; i++) cJSON_AddItemToArray(a, model_json(s, &models[i]));
    char *text = cJSON_Print(o);
    cJSON_Delete(o);
    return text;
}

ae_status ae_passkey_write_json(const char *path, const ae_passkey_set *s,
                                const ae_passkey_model *models, int n_models) {
    char *text = ae_passkey_json(s, models, n_models);
    if (!text) return ae_errorf(AE_ERR_NOMEM, "pass key: out of memory writing the JSON");
    ae_atomic_file f;
    ae_status st = ae_atomic_open(&f, path);
    if (st == AE_OK) {
        st = ae_atomic_write(&f, text, strlen(text));
        if (st == AE_OK) st = ae_atomic_write(&f, "\n", 1);
        if (st == AE_OK) st = ae_atomic_commit(&f);
        else ae_atomic_abort(&f);
    }
    free(text);
    return st;
}
