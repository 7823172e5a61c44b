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

// Column widths of the table.
typedef struct {
    int name;
    int *val;  // (n_models)
    int *diff; // (n_models)
} widths;

// One row: measured into w (print == 0) or printed (print == 1). metric formats the numbers.
static void row(const ae_cli_eval_tasks *e, const char *name, const char *metric_name, int metric, int n,
                const cell *c, widths *w, int print) {
    char buf[160];
    if (!print && (int)strlen(name) > w->name) w->name = (int)strlen(name);
    if (print) printf("%-*s %-10s %6d", w->name, name, metric_name, n);
    for (int i = 0; i < e->n_models; i++) {
        int k = fmt_val(buf, sizeof buf, metric, c[i].v);
        if (!print && k > w->val[i]) w->val[i] = k;
        if (print) printf("  %s%*s", buf, w->val[i] - k, "");
    }
    for (int i = 1; i < e->n_models; i++) {
        int k = fmt_diff(buf, sizeof buf, metric, c[i].d);
        if (!print && k > w->diff[i]) w->diff[i] = k;
        if (print)
            printf("  %*s %4s", w->diff[i], buf, isnan(c[i].d.stderr_) ? "-" : c[i].significant ? "yes" : "no");
    }
    if (print) printf("\n");
}

// Group g's acc over its tasks in e: weighted (lm-eval's value: the micro average) or not (the
// macro average), for each model and for each difference to model 0. *n: the items.
static int compute_group(const ae_cli_eval_tasks *e, const ae_task_group *g, int weighted, cell *c, int *n) {
    int k = 0, nm = e->n_models;
    ae_metric_value *v = ae_calloc((size_t)(e->n_tasks * 2 * nm) + 1, sizeof *v);
    int *sizes = ae_calloc((size_t)e->n_tasks + 1, sizeof *sizes);
    cell *t = ae_calloc((size_t)nm, sizeof *t);
    int rc = v && sizes && t ? 0 : -1;
    *n = 0;
    for (int r = 0; rc == 0 && r < e->n_tasks; r++) {
        if (!ae_task_group_has(g, e->tasks[r].task.def)) continue;
        if (compute(e, &e->tasks[r], AE_METRIC_ACC, t)) rc = -1;
        for (int i = 0; rc == 0 && i < nm; i++) { // (model or difference, task)
            v[(size_t)i * e->n_tasks + k] = t[i].v;
            v[(size_t)(nm + i) * e->n_tasks + k] = t[i].d;
        }
        sizes[k++] = e->tasks[r].n_items;
        *n += e->tasks[r].n_items;
    }
    for (int i = 0; rc == 0 && i < nm; i++) {
        c[i].v = ae_task_group_aggregate(v + (size_t)i * e->n_tasks, sizes, k, weighted);
        c[i].d = ae_task_group_aggregate(v + (size_t)(nm + i) * e->n_tasks, sizes, k, weighted);
        c[i].significant = fabs(c[i].d.value) > 2 * c[i].d.stderr_;
    }
    free(v);
    free(sizes);
    free(t);
    return rc;
}

static const char *const k_group_metric[2] = {"acc_macro", "acc"}; // by weighted

// One pass over every row: widths (print == 0) or the rows themselves (print == 1).
static void table_rows(const ae_cli_eval_tasks *e, cell *c, widths *w, int print) {
    for (int t = 0; t < e->n_tasks; t++) {
        const ae_cli_task_run *r = &e->tasks[t];
        int first = 1;
        for (int k = 0; k < 3; k++) {
            int metric = k_metric_order[k];
            if (!(r->task.def->metrics & metric) || compute(e, r, metric, c)) continue;
            row(e, first ? r->task.def->name : "", ae_metric_name(metric), metric, r->n_items, c, w, print);
            first = 0;
        }
    }
    if (print && e->n_groups) printf("\n");
    for (int gi = 0; gi < e->n_groups; gi++)
        for (int weighted = 1, n; weighted >= 0; weighted--)
            if (compute_group(e, e->groups[gi], weighted, c, &n) == 0)
                row(e, weighted ? e->groups[gi]->name : "", k_group_metric[weighted], AE_METRIC_ACC, n, c, w, print);
}

void ae_eval_tasks_print_table(const ae_cli_eval_tasks *e) {
    char name[128], buf[160];
    cell *c = ae_calloc((size_t)e->n_models, sizeof *c);
    widths w = {15, ae_calloc((size_t)e->n_models, sizeof(int)), ae_calloc((size_t)e->n_models, sizeof(int))};
    if (!c || !w.val || !w.diff) {
        free(c);
        free(w.val);
        free(w.diff);
        return;
    }
    for (int i = 0; i < e->n_models; i++) {
        w.val[i] = (int)strlen(short_name(e->models[i], name, sizeof name));
        snprintf(buf, sizeof buf, "diff %s", name);
        w.diff[i] = (int)strlen(buf);
    }
    table_rows(e, c, &w, 0);
    printf("%-*s %-10s %6s", w.name, "task", "metric", "n");
    for (int i = 0; i < e->n_models; i++) printf("  %-*s", w.val[i], short_name(e->models[i], name, sizeof name));
    for (int i = 1; i < e->n_models; i++) {
        snprintf(buf, sizeof buf, "diff %s", short_name(e->models[i], name, sizeof name));
        printf("  %*s %4s", w.diff[i], buf, ">2se");
    }
    printf("\n");
    table_rows(e, c, &w, 1);
    free(c);
    free(w.val);
    free(w.diff);
    printf("\n%d-shot; diff: model minus %s, paired over the same items; >2se: |diff| exceeds two "
           "standard errors of the paired difference.\n",
           e->shots, short_name(e->models[0], name, sizeof name));
    if (e->n_groups)
        printf("groups: acc as lm-eval reports it (weight_by_size: the micro average over the group's items, "
               "pooled standard error); acc_macro: the unweighted mean over its subjects.\n");
}

static cJSON *num_or_null(double x) { return isnan(x) ? cJSON_CreateNull() : cJSON_CreateNumber(x); }

// {"value": [...], "stderr": [...], "diff": [...], "diff_stderr": [...], "significant": [...]}
static void add_metric_json(cJSON *mo, const char *name, const cell *c, int n_models) {
    cJSON *m = cJSON_AddObjectToObject(mo, name);
    cJSON *val = cJSON_AddArrayToObject(m, "value"), *se = cJSON_AddArrayToObject(m, "stderr");
    cJSON *d = cJSON_AddArrayToObject(m, "diff"), *dse = cJSON_AddArrayToObject(m, "diff_stderr");
    cJSON *sig = cJSON_AddArrayToObject(m, "significant");
    for (int i = 0; i < n_models; i++) {
        cJSON_AddItemToArray(val, num_or_null(c[i].v.value));
        cJSON_AddItemToArray(se, num_or_null(c[i].v.stderr_));
        cJSON_AddItemToArray(d, i ? num_or_null(c[i].d.value) : cJSON_CreateNull());
        cJSON_AddItemToArray(dse, i ? num_or_null(c[i].d.stderr_) : cJSON_CreateNull());
        cJSON_AddItemToArray(sig, i && !isnan(c[i].d.stderr_) ? cJSON_CreateBool(c[i].significant) : cJSON_CreateNull());
    }
}

static void add_groups_json(const ae_cli_eval_tasks *e, cJSON *o, cell *c) {
    if (!e->n_groups) return;
    cJSON *gs = cJSON_AddArrayToObject(o, "groups");
    for (int gi = 0; gi < e->n_groups; gi++) {
        const ae_task_group *g = e->groups[gi];
        cJSON *go = cJSON_CreateObject();
        cJSON_AddItemToArray(gs, go);
        cJSON_AddStringToObject(go, "group", g->name);
        cJSON *names = cJSON_AddArrayToObject(go, "tasks");
        for (int t = 0; t < e->n_tasks; t++)
            if (ae_task_group_has(g, e->tasks[t].task.def))
                cJSON_AddItemToArray(names, cJSON_CreateString(e->tasks[t].task.def->name));
        cJSON *mo = cJSON_AddObjectToObject(go, "metrics");
        for (int weighted = 1, n = 0; weighted >= 0; weighted--) {
            if (compute_group(e, g, weighted, c, &n)) continue;
            if (weighted) cJSON_AddNumberToObject(go, "n", n);
            add_metric_json(mo, k_group_metric[weighted], c, e->n_models);
        }
    }
}

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
            add_metric_json(mo, ae_metric_name(metric), c, e->n_models);
        }
    }
    if (c) add_groups_json(e, o, c);
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
