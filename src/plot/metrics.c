// metrics.jsonl reader (see metrics.h).
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "core/mem.h"
#include "plot/metrics.h"

// One parsed line, before sorting and de-duplication.
typedef struct {
    int stage;
    long line;   // for "later wins"
    double step, loss, kl, cos, top1;
    long long steps;
    double *layers; // (n_layers) or NULL
    int n_layers;
} rec;

void ae_metrics_free(ae_metrics *m) {
    for (int k = 0; k < 2; k++) {
        ae_metrics_stage *s = &m->s[k];
        free(s->step), free(s->loss), free(s->layer_loss), free(s->kl), free(s->cos), free(s->top1);
    }
    memset(m, 0, sizeof *m);
}

static ae_status bad(const char *name, long line, const char *what, const char *field) {
    return ae_errorf(AE_ERR_FORMAT, "%s:%ld: %s%s%s", name, line, what, field ? " " : "",
                     field ? field : "");
}

// Optional number field: NaN when absent; error when present but not a finite number.
static ae_status opt_num(const cJSON *o, const char *key, const char *name, long line, double *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    *out = NAN;
    if (!v) return AE_OK;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return ae_errorf(AE_ERR_FORMAT, "%s:%ld: field '%s' is not a number", name, line, key);
    *out = v->valuedouble;
    return AE_OK;
}

static ae_status parse_line(const char *s, size_t n, const char *name, long line, rec *r) {
    memset(r, 0, sizeof *r);
    r->line = line;
    const char *end = NULL;
    cJSON *o = cJSON_ParseWithLengthOpts(s, n, &end, 0);
    if (!o) return bad(name, line, "not valid JSON", NULL);
    while (end && end < s + n && (*end == ' ' || *end == '\t' || *end == '\r')) end++;
    if (end && end < s + n) {
        cJSON_Delete(o);
        return bad(name, line, "not valid JSON (text after the object)", NULL);
    }
    ae_status st = AE_OK;
    const cJSON *stage = cJSON_GetObjectItemCaseSensitive(o, "stage");
    const cJSON *step = cJSON_GetObjectItemCaseSensitive(o, "step");
    const cJSON *layers = cJSON_GetObjectItemCaseSensitive(o, "layer_loss");
    double steps = NAN;
    if (!cJSON_IsObject(o)) st = bad(name, line, "not a JSON object", NULL);
    else if (!stage) st = bad(name, line, "field 'stage' is missing", NULL);
    else if (!cJSON_IsNumber(stage) || (stage->valuedouble != 1 && stage->valuedouble != 2))
        st = bad(name, line, "field 'stage' is not 1 or 2", NULL);
    else if (!step) st = bad(name, line, "field 'step' is missing", NULL);
    else if (!cJSON_IsNumber(step) || !(step->valuedouble >= 0) || step->valuedouble > 1e15 ||
             floor(step->valuedouble) != step->valuedouble)
        st = bad(name, line, "field 'step' is not a whole number >= 0", NULL);
    if (st == AE_OK) st = opt_num(o, "loss", name, line, &r->loss);
    if (st == AE_OK && isnan(r->loss)) st = bad(name, line, "field 'loss' is missing", NULL);
    if (st == AE_OK) st = opt_num(o, "kl", name, line, &r->kl);
    if (st == AE_OK) st = opt_num(o, "cos", name, line, &r->cos);
    if (st == AE_OK) st = opt_num(o, "top1", name, line, &r->top1);
    if (st == AE_OK) st = opt_num(o, "steps", name, line, &steps);
    if (st == AE_OK && layers) {
        if (!cJSON_IsArray(layers)) st = bad(name, line, "field 'layer_loss' is not an array", NULL);
        int nl = cJSON_GetArraySize(layers), i = 0;
        if (st == AE_OK && nl > 0 && !(r->layers = ae_malloc(sizeof(double) * (size_t)nl))) st = AE_ERR_NOMEM;
        const cJSON *e;
        cJSON_ArrayForEach(e, layers) {
            if (st != AE_OK) break;
            if (!cJSON_IsNumber(e) || !isfinite(e->valuedouble))
                st = ae_errorf(AE_ERR_FORMAT, "%s:%ld: layer_loss[%d] is not a number", name, line, i);
            else r->layers[i++] = e->valuedouble;
        }
        r->n_layers = nl;
    }
    if (st == AE_OK) {
        r->stage = (int)stage->valuedouble;
        r->step = step->valuedouble;
        r->steps = isfinite(steps) && steps >= 0 && steps < 1e15 ? (long long)steps : 0;
    } else {
        free(r->layers);
        r->layers = NULL;
    }
    cJSON_Delete(o);
    return st;
}

static int cmp_rec(const void *a, const void *b) {
    const rec *x = a, *y = b;
    if (x->stage != y->stage) return x->stage - y->stage;
    if (x->step != y->step) return x->step < y->step ? -1 : 1;
    return x->line < y->line ? -1 : x->line > y->line;
}

static ae_status alloc_stage(ae_metrics_stage *s, int n, int nl) {
    s->step = ae_calloc((size_t)n, sizeof(double));
    s->loss = ae_calloc((size_t)n, sizeof(double));
    s->kl = ae_calloc((size_t)n, sizeof(double));
    s->cos = ae_calloc((size_t)n, sizeof(double));
    s->top1 = ae_calloc((size_t)n, sizeof(double));
    s->layer_loss = nl ? ae_calloc((size_t)n * (size_t)nl, sizeof(double)) : NULL;
    if (!s->step || !s->loss || !s->kl || !s->cos || !s->top1 || (nl && !s->layer_loss))
        return AE_ERR_NOMEM;
    return AE_OK;
}

// Sorted records (stage, step, line) -> the stages, keeping the last line of each step.
static ae_status collect(rec *r, size_t n, const char *name, ae_metrics *m) {
    qsort(r, n, sizeof *r, cmp_rec);
    for (int k = 0; k < 2; k++) {
        ae_metrics_stage *s = &m->s[k];
        int count = 0, nl = 0;
        long nl_line = 0;
        for (size_t i = 0; i < n; i++) {
            if (r[i].stage != k + 1) continue;
            if (r[i].n_layers && nl && r[i].n_layers != nl)
                return ae_errorf(AE_ERR_FORMAT, "%s:%ld: layer_loss has %d values, line %ld has %d", name,
                                 r[i].line, r[i].n_layers, nl_line, nl);
            if (r[i].n_layers) nl = r[i].n_layers, nl_line = r[i].line;
            if (i + 1 < n && r[i + 1].stage == r[i].stage && r[i + 1].step == r[i].step) continue;
            count++;
        }
        if (!count) continue;
        AE_TRY(alloc_stage(s, count, nl));
        s->n_layers = nl;
        long last_line = -1;
        int j = 0;
        for (size_t i = 0; i < n; i++) {
            if (r[i].stage != k + 1) continue;
            if (i + 1 < n && r[i + 1].stage == r[i].stage && r[i + 1].step == r[i].step) continue;
            s->step[j] = r[i].step;
            s->loss[j] = r[i].loss;
            s->kl[j] = r[i].kl, s->cos[j] = r[i].cos, s->top1[j] = r[i].top1;
            s->has_kl |= !isnan(r[i].kl), s->has_cos |= !isnan(r[i].cos), s->has_top1 |= !isnan(r[i].top1);
            for (int l = 0; l < nl; l++) s->layer_loss[(size_t)j * nl + l] = r[i].n_layers ? r[i].layers[l] : NAN;
            if (r[i].line > last_line) last_line = r[i].line, s->steps = r[i].steps;
            j++;
        }
        s->n = count;
    }
    return AE_OK;
}

ae_status ae_metrics_parse(const char *text, size_t len, const char *name, ae_metrics *m) {
    memset(m, 0, sizeof *m);
    rec *r = NULL;
    size_t n = 0, cap = 0;
    ae_status st = AE_OK;
    long line = 0;
    for (size_t pos = 0; pos < len && st == AE_OK;) {
        const char *s = text + pos, *nl = memchr(s, '\n', len - pos);
        size_t l = nl ? (size_t)(nl - s) : len - pos;
        pos += l + (nl ? 1 : 0);
        line++;
        size_t a = 0;
        while (a < l && (s[a] == ' ' || s[a] == '\t' || s[a] == '\r')) a++;
        if (a == l) continue; // blank
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 256;
            rec *p = realloc(r, nc * sizeof *r);
            if (!p) {
                st = ae_errorf(AE_ERR_NOMEM, "%s: out of memory", name);
                break;
            }
            r = p, cap = nc;
        }
        st = parse_line(s, l, name, line, &r[n]);
        if (st != AE_OK && !nl && n > 0) { // an unfinished last line: being written
            st = AE_OK;
            break;
        }
        if (st == AE_OK) n++;
    }
    if (st == AE_OK && n == 0)
        st = ae_errorf(AE_ERR_FORMAT, "%s: no metrics records (the file is empty: the run has not "
                       "logged a progress line yet; see --log-every)", name);
    if (st == AE_OK) st = collect(r, n, name, m);
    for (size_t i = 0; i < n; i++) free(r[i].layers);
    free(r);
    if (st != AE_OK) ae_metrics_free(m);
    return st;
}

ae_status ae_metrics_read(const char *path, ae_metrics *m) {
    memset(m, 0, sizeof *m);
    AE_TRY(ae_file_check_regular("metrics file", path, "a metrics.jsonl file"));
    char *text;
    size_t len;
    AE_TRY(ae_file_read_all(path, &text, &len));
    ae_status st = ae_metrics_parse(text, len, path, m);
    free(text);
    return st;
}
