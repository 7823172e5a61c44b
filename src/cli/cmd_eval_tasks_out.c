// attnedit eval tasks: the results table, its JSON form and the --samples JSON lines.
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/eval_tasks.h"
#include "core/mem.h"

static const int k_metric_order[] = {AE_METRIC_ACC, AE_METRIC_ACC_NORM, AE_METRIC_PPL};

static const char *short_name(const char *path, char *buf, size_t n) {
    size_t len = strlen(path);
    while (len > 1 && path[len - 1] == '/') len--;
    size_t b = len;
    while (b > 0 && path[b - 1] != '/') b--;
    snprintf(buf, n, "%.*s", (int)(len - b), path + b);
    return buf;
}

// Per-item values of `metric` for model i (heap, n_items).
static double *values(const ae_cli_task_run *r, int i, int metric) {
    double *v = ae_malloc(sizeof(double) * (size_t)(r->n_items ? r->n_items : 1));
    if (v) ae_task_metric_values(r->items, &r->scores[i], metric, v);
    return v;
}

typedef struct {
    ae_metric_value v;    // the model's metric
    ae_metric_value d;    // difference to model 0 (i > 0)
    int significant;      // |d| > 2 se(d)
} cell;

static int compute(const ae_cli_eval_tasks *e, const ae_cli_task_run *r, int metric, cell *c) {
    double *base = values(r, 0, metric);
    if (!base) return -1;
    for (int i = 0; i < e->n_models; i++) {
        double *x = i ? values(r, i, metric) : base;
        if (!x) {
            free(base);
            return -1;
        }
        c[i].v = ae_task_aggregate(metric, x, r->n_items);
        if (i) {
            c[i].d = ae_task_paired_diff(metric, base, x, r->n_items);
            c[i].significant = fabs(c[i].d.value) > 2 * c[i].d.stderr_;
            free(x);
        }
    }
    free(base);
    return 0;
}

// Formats a value; returns its width in columns ("±" is two bytes, one column).
static int fmt_val(char *buf, size_t n, int metric, ae_metric_value v) {
    const char *f = metric == AE_METRIC_PPL ? "%.3f ± %.3f" : "%.4f ± %.4f";
    if (isnan(v.stderr_)) return snprintf(buf, n, metric == AE_METRIC_PPL ? "%.3f" : "%.4f", v.value);
    return snprintf(buf, n, f, v.value, v.stderr_) - 1;
}

static int fmt_diff(char *buf, size_t n, int metric, ae_metric_value d) {
    return snprintf(buf, n, metric == AE_METRIC_PPL ? "%+.3f" : "%+.4f", d.value);
}

// One pass over every row: widths (print == 0) or the rows themselves (print == 1).
static void table_rows(const ae_cli_eval_tasks *e, cell *c, int *wv, int *wd, int print) {
    char buf[160];
    for (int t = 0; t < e->n_tasks; t++) {
        const ae_cli_task_run *r = &e->tasks[t];
        int first = 1;
        for (int k = 0; k < 3; k++) {
            int metric = k_metric_order[k];
            if (!(r->task.def->metrics & metric) || compute(e, r, metric, c)) continue;
            if (print) printf("%-15s %-10s %6d", first ? r->task.def->name : "", ae_metric_name(metric), r->n_items);
            first = 0;
            for (int i = 0; i < e->n_models; i++) {
                int w = fmt_val(buf, sizeof buf, metric, c[i].v);
                if (!print && w > wv[i]) wv[i] = w;
                if (print) printf("  %s%*s", buf, wv[i] - w, "");
            }
            for (int i = 1; i < e->n_models; i++) {
                int w = fmt_diff(buf, sizeof buf, metric, c[i].d);
                if (!print && w > wd[i]) wd[i] = w;
                if (print)
                    printf("  %*s %4s", wd[i], buf, isnan(c[i].d.stderr_) ? "-" : c[i].significant ? "yes" : "no");
            }
            if (print) printf("\n");
        }
    }
}

void ae_eval_tasks_print_table(const ae_cli_eval_tasks *e) {
    char name[128], buf[160];
    cell *c = ae_calloc((size_t)e->n_models, sizeof *c);
    int *wv = ae_calloc((size_t)e->n_models, sizeof *wv), *wd = ae_calloc((size_t)e->n_models, sizeof *wd);
    if (!c || !wv || !wd) {
        free(c);
        free(wv);
        free(wd);
        return;
    }
    for (int i = 0; i < e->n_models; i++) {
        wv[i] = (int)strlen(short_name(e->models[i], name, sizeof name));
        snprintf(buf, sizeof buf, "diff %s", name);
        wd[i] = (int)strlen(buf);
    }
    table_rows(e, c, wv, wd, 0);
    printf("%-15s %-10s %6s", "task", "metric", "n");
    for (int i = 0; i < e->n_models; i++) printf("  %-*s", wv[i], short_name(e->models[i], name, sizeof name));
    for (int i = 1; i < e->n_models; i++) {
        snprintf(buf, sizeof buf, "diff %s", short_name(e->models[i], name, sizeof name));
        printf("  %*s %4s", wd[i], buf, ">2se");
    }
    printf("\n");
    table_rows(e, c, wv, wd, 1);
    free(c);
    free(wv);
    free(wd);
    printf("\n%d-shot; diff: model minus %s, paired over the same items; >2se: |diff| exceeds two "
           "standard errors of the paired difference.\n",
           e->shots, short_name(e->models[0], name, sizeof name));
}

static cJSON *num_or_null(double x) { return isnan(x) ? cJSON_CreateNull() : cJSON_CreateNumber(x); }

void ae_eval_tasks_print_json(const ae_cli_eval_tasks *e) {
    static const char *const split_names[3] = {"train", "validation", "test"};
    cJSON *o = cJSON_CreateObject();
    cJSON *ms = cJSON_AddArrayToObject(o, "models");
    for (int i = 0; i < e->n_models; i++) cJSON_AddItemToArray(ms, cJSON_CreateString(e->models[i]));
    cJSON_AddNumberToObject(o, "shots", e->shots);
    cJSON_AddNumberToObject(o, "seed", (double)e->seed);
    cJSON *ts = cJSON_AddArrayToObject(o, "tasks");
    cell *c = ae_calloc((size_t)e->n_models, sizeof *c);
    for (int t = 0; c && t < e->n_tasks; t++) {
        const ae_cli_task_run *r = &e->tasks[t];
        cJSON *to = cJSON_CreateObject();
        cJSON_AddItemToArray(ts, to);
        cJSON_AddStringToObject(to, "task", r->task.def->name);
        cJSON_AddStringToObject(to, "split", split_names[r->task.eval_split]);
        cJSON_AddStringToObject(to, "file", r->task.split[r->task.eval_split].path);
        cJSON_AddNumberToObject(to, "n", r->n_items);
        cJSON *tr = cJSON_AddArrayToObject(to, "truncated");
        for (int i = 0; i < e->n_models; i++) cJSON_AddItemToArray(tr, cJSON_CreateNumber(r->scores[i].n_truncated));
        cJSON *mo = cJSON_AddObjectToObject(to, "metrics");
        for (int k = 0; k < 3; k++) {
            int metric = k_metric_order[k];
            if (!(r->task.def->metrics & metric) || compute(e, r, metric, c)) continue;
            cJSON *m = cJSON_AddObjectToObject(mo, ae_metric_name(metric));
            cJSON *val = cJSON_AddArrayToObject(m, "value"), *se = cJSON_AddArrayToObject(m, "stderr");
            cJSON *d = cJSON_AddArrayToObject(m, "diff"), *dse = cJSON_AddArrayToObject(m, "diff_stderr");
            cJSON *sig = cJSON_AddArrayToObject(m, "significant");
            for (int i = 0; i < e->n_models; i++) {
                cJSON_AddItemToArray(val, num_or_null(c[i].v.value));
                cJSON_AddItemToArray(se, num_or_null(c[i].v.stderr_));
                cJSON_AddItemToArray(d, i ? num_or_null(c[i].d.value) : cJSON_CreateNull());
                cJSON_AddItemToArray(dse, i ? num_or_null(c[i].d.stderr_) : cJSON_CreateNull());
                cJSON_AddItemToArray(sig, i && !isnan(c[i].d.stderr_) ? cJSON_CreateBool(c[i].significant)
                                                                     : cJSON_CreateNull());
            }
        }
    }
    free(c);
    char *s = cJSON_PrintUnformatted(o);
    if (s) puts(s);
    free(s);
    cJSON_Delete(o);
}

static int all_same(char *const *v, int n) {
    for (int i = 1; i < n; i++)
        if (strcmp(v[i], v[0])) return 0;
    return 1;
}

static cJSON *item_json(const ae_cli_eval_tasks *e, const ae_cli_task_run *r, int i, int k) {
    const ae_task_item *it = &r->items[k];
    const ae_task_scores *s = &r->scores[i];
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "model", e->models[i]);
    cJSON_AddStringToObject(o, "task", r->task.def->name);
    cJSON_AddNumberToObject(o, "doc_id", it->doc);
    if (all_same(it->ctx, it->n)) cJSON_AddStringToObject(o, "prompt", it->ctx[0]);
    else cJSON_AddItemToObject(o, "prompt", cJSON_CreateStringArray((const char *const *)it->ctx, it->n));
    cJSON_AddItemToObject(o, "continuations", cJSON_CreateStringArray((const char *const *)it->cont, it->n));
    cJSON_AddNumberToObject(o, "target", it->gold);
    cJSON *ll = cJSON_AddArrayToObject(o, "loglikelihoods"), *g = cJSON_AddArrayToObject(o, "is_greedy");
    cJSON *nt = cJSON_AddArrayToObject(o, "tokens");
    for (int j = 0; j < it->n; j++) {
        cJSON_AddItemToArray(ll, cJSON_CreateNumber(s->ll[s->first[k] + j]));
        cJSON_AddItemToArray(g, cJSON_CreateBool(s->greedy[s->first[k] + j]));
        cJSON_AddItemToArray(nt, cJSON_CreateNumber(s->n_tokens[s->first[k] + j]));
    }
    int p, q;
    ae_task_predict(r->items, s, k, &p, &q);
    if (r->task.def->kind == AE_TASK_LL) {
        cJSON_AddNumberToObject(o, "acc", s->greedy[s->first[k]]);
    } else {
        cJSON_AddNumberToObject(o, "pred", p);
        cJSON_AddNumberToObject(o, "acc", p == it->gold);
        if (r->task.def->metrics & AE_METRIC_ACC_NORM) {
            cJSON_AddNumberToObject(o, "pred_norm", q);
            cJSON_AddNumberToObject(o, "acc_norm", q == it->gold);
        }
    }
    cJSON_AddBoolToObject(o, "truncated", s->truncated[k]);
    return o;
}

ae_status ae_eval_tasks_write_samples(const ae_cli_eval_tasks *e, ae_atomic_file *f) {
    for (int i = 0; i < e->n_models; i++)
        for (int t = 0; t < e->n_tasks; t++)
            for (int k = 0; k < e->tasks[t].n_items; k++) {
                cJSON *o = item_json(e, &e->tasks[t], i, k);
                char *s = o ? cJSON_PrintUnformatted(o) : NULL;
                cJSON_Delete(o);
                if (!s) return ae_errorf(AE_ERR_NOMEM, "out of memory writing --samples");
                ae_status st = ae_atomic_write(f, s, strlen(s));
                if (st == AE_OK) st = ae_atomic_write(f, "\n", 1);
                free(s);
                AE_TRY(st);
            }
    return AE_OK;
}
