// attnedit eval tasks --model M[,M2,...] --tasks a,b [--shots K] [--limit N] [--data-dir DIR]
//                     [--json] [--samples FILE] [--seed S] [--max-length N] [--batch N]
//                     [--device D]
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "cli/eval_tasks.h"
#include "core/mem.h"
#include "core/progress.h"
#include "io/config.h"

static const char k_help[] =
    "usage: attnedit eval tasks --model M[,M2,...] --tasks T1,T2,... [--shots K] [--limit N]\n"
    "         [--data-dir DIR] [--json] [--samples FILE] [--seed S] [--max-length N]\n"
    "         [--batch N] [--device cpu|cuda[:N]]\n"
    "  Scores each model on benchmark tasks exactly as lm-evaluation-harness 0.4.13 does (same\n"
    "  prompts, few-shot examples, log-likelihood requests and metrics; docs/EVAL.md): one table\n"
    "  with a column per model, the difference of each to the first and whether it exceeds two\n"
    "  standard errors (paired over the same items).\n"
    "  tasks: arc_easy arc_challenge hellaswag piqa boolq openbookqa winogrande sciq lambada_openai\n"
    "  mmlu (57 subjects; also its groups mmlu_stem mmlu_humanities mmlu_social_sciences mmlu_other,\n"
    "  or one subject: mmlu_<subject>); a group reports lm-eval's acc (micro) and acc_macro.\n"
    "  --data-dir: folder with one sub-folder per task (default: $AE_EVAL_DATA).\n"
    "  --shots K: few-shot examples per item, drawn as lm-eval draws them (seed --seed, 1234).\n"
    "  --limit N: only the first N items of each task (each MMLU subject).\n"
    "  --max-length N: context window in tokens (default: the model's max_position_embeddings);\n"
    "  longer requests are cut from the left, as lm-eval does, and counted.\n"
    "  --batch N: items scored per forward (default 32; their shared prefixes run once, every\n"
    "  choice then reads the prefix's KV pages); 1: one request at a time. Same results.\n"
    "  --samples FILE: one JSON line per model and item (prompt, continuations, log-likelihoods,\n"
    "  predictions). --json: the table as JSON. Progress (items/s, ETA) goes to stderr.\n";

// Splits "a,b,c" into heap strings; empty parts are an error.
static ae_status split_list(const char *s, const char *opt, char ***out, int *n) {
    *out = NULL;
    *n = 0;
    int cap = 1;
    for (const char *p = s; *p; p++) cap += *p == ',';
    char **v = ae_calloc((size_t)cap, sizeof *v);
    if (!v) return AE_ERR_NOMEM;
    for (const char *p = s;;) {
        const char *c = strchr(p, ',');
        size_t len = c ? (size_t)(c - p) : strlen(p);
        if (len == 0) {
            for (int i = 0; i < *n; i++) free(v[i]);
            free(v);
            *n = 0;
            return ae_errorf(AE_ERR_ARG, "%s: empty name in '%s'", opt, s);
        }
        v[(*n)++] = ae_strndup(p, len);
        if (!c) break;
        p = c + 1;
    }
    *out = v;
    return AE_OK;
}

typedef struct {
    const char *task, *model;
    ae_progress pg;
} progress_ctx;

static void fmt_eta(double s, char *buf, size_t n) {
    if (s >= 3600) snprintf(buf, n, "%dh%02dm", (int)(s / 3600), (int)(s / 60) % 60);
    else snprintf(buf, n, "%dm%02ds", (int)(s / 60), (int)s % 60);
}

static void progress(void *ud, int done, int total) {
    progress_ctx *p = ud;
    if (!ae_progress_due(&p->pg, done == total)) return;
    double rate = done / (ae_progress_elapsed(&p->pg) + 1e-9);
    char eta[32];
    fmt_eta(rate > 0 ? (total - done) / rate : 0, eta, sizeof eta);
    ae_progress_line(&p->pg, done == total, "%s [%s]: %d/%d items, %.1f items/s, ETA %s", p->task,
                     p->model, done, total, rate, eta);
}

static const char *base_name(const char *path) {
    static char buf[256];
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') n--;
    size_t b = n;
    while (b > 0 && path[b - 1] != '/') b--;
    snprintf(buf, sizeof buf, "%.*s", (int)(n - b), path + b);
    return buf;
}

// Loads model i and scores it on every task.
static int run_model(ae_cli_eval_tasks *e, int i, const ae_backend *be) {
    ae_model *m = NULL;
    ae_tokenizer *tok = NULL;
    int rc = 0;
    if (ae_tokenizer_load(e->models[i], &tok) != AE_OK || ae_model_load(e->models[i], be, &m) != AE_OK) {
        rc = ae_cli_fail("eval tasks");
        goto done;
    }
    int max_len = e->max_len_opt ? e->max_len_opt : m->cfg.max_position_embeddings;
    for (int t = 0; t < e->n_tasks && rc == 0; t++) {
        ae_cli_task_run *r = &e->tasks[t];
        progress_ctx pc = {r->task.def->name, base_name(e->models[i]), {0}};
        ae_progress_start(&pc.pg, 1);
        if (ae_task_score(m, tok, r->items, r->n_items, max_len, e->batch, progress, &pc, &r->scores[i]) != AE_OK) {
            ae_error_wrap(AE_ERR_ARG, "%s: %s", e->models[i], r->task.def->name);
            rc = ae_cli_fail("eval tasks");
            break;
        }
        if (r->scores[i].n_truncated)
            fprintf(stderr,
                    "attnedit eval tasks: %s [%s]: %d of %d items longer than %d tokens: cut from the "
                    "left, as lm-eval does\n",
                    r->task.def->name, pc.model, r->scores[i].n_truncated, r->n_items, max_len);
    }
done:
    ae_model_free(m);
    ae_tokenizer_free(tok);
    return rc;
}

static void free_all(ae_cli_eval_tasks *e, char **tasks, int n_tasks, const ae_task_def **defs) {
    for (int t = 0; t < e->n_tasks; t++) {
        ae_cli_task_run *r = &e->tasks[t];
        for (int i = 0; r->scores && i < e->n_models; i++) ae_task_scores_free(&r->scores[i]);
        free(r->scores);
        ae_task_items_free(r->items, r->n_items);
        ae_task_free(&r->task);
    }
    free(e->tasks);
    free(e->groups);
    free((void *)defs);
    for (int i = 0; i < e->n_models; i++) free(e->models[i]);
    free(e->models);
    for (int i = 0; i < n_tasks; i++) free(tasks[i]);
    free(tasks);
}

static int unknown_task(const char *name) {
    fprintf(stderr, "attnedit eval tasks: unknown task '%s' (available:", name);
    int subjects = 0;
    for (int i = 0; i < ae_task_count(); i++)
        if (ae_task_at(i)->subject) subjects++;
        else fprintf(stderr, " %s", ae_task_at(i)->name);
    for (int i = ae_task_group_count() - 1; i >= 0; i--) fprintf(stderr, " %s", ae_task_group_at(i)->name);
    fprintf(stderr, " mmlu_<subject> for one of the %d MMLU subjects in docs/EVAL.md)\n", subjects);
    return 1;
}

// Adds def to the tasks to run; a task named twice (directly or through a group) is an error.
static int add_task(const ae_task_def **defs, int *n, const ae_task_def *def, const char *via) {
    for (int i = 0; i < *n; i++)
        if (defs[i] == def) {
            fprintf(stderr, "attnedit eval tasks: task '%s' is listed twice%s%s%s\n", def->name,
                    via ? " (group " : "", via ? via : "", via ? " includes it)" : "");
            return 1;
        }
    defs[(*n)++] = def;
    return 0;
}

// The tasks (and groups to report) of the --tasks list: a group stands for its subjects, and
// `mmlu` also reports its four categories, as lm-eval does.
static int expand_tasks(ae_cli_eval_tasks *e, char **names, int n_names, const ae_task_def ***defs, int *n_defs) {
    int cap = n_names + ae_task_count(); // a task may come once
    *defs = ae_calloc((size_t)cap, sizeof **defs);
    e->groups = ae_calloc((size_t)(n_names * ae_task_group_count()) + 1, sizeof *e->groups);
    if (!*defs || !e->groups) return ae_cli_fail("eval tasks");
    for (int t = 0; t < n_names; t++) {
        const ae_task_group *g = ae_task_group_find(names[t]);
        if (!g) {
            const ae_task_def *d = ae_task_find(names[t]);
            if (!d) return unknown_task(names[t]);
            if (add_task(*defs, n_defs, d, NULL)) return 1;
            continue;
        }
        for (int i = 0; i < ae_task_count(); i++)
            if (ae_task_group_has(g, ae_task_at(i)) && add_task(*defs, n_defs, ae_task_at(i), g->name)) return 1;
        for (int i = 0; i < ae_task_group_count(); i++) { // the group and, for mmlu, its categories
            const ae_task_group *sub = ae_task_group_at(i);
            if (sub == g || (!g->category && sub->category)) e->groups[e->n_groups++] = sub;
        }
    }
    return 0;
}

int ae_cmd_eval_tasks(int argc, char **argv) {
    ae_args a = {argc, argv, 0, "eval tasks"};
    const char *models = NULL, *tasks_s = NULL, *data_dir = NULL, *samples = NULL, *device = NULL, *v;
    ae_cli_eval_tasks e = {0};
    e.seed = 1234;
    e.batch = AE_TASK_BATCH_DEFAULT;
    int json = 0, r;
    while (a.i < a.argc) {
        ae_status st = AE_OK;
        if ((r = ae_args_value(&a, "--model", &models)) || (r = ae_args_value(&a, "--tasks", &tasks_s)) ||
            (r = ae_args_value(&a, "--data-dir", &data_dir)) || (r = ae_args_value(&a, "--samples", &samples)) ||
            (r = ae_args_value(&a, "--device", &device))) {
        } else if ((r = ae_args_value(&a, "--shots", &v))) {
            if (r > 0) st = ae_parse_int(v, "--shots", 0, 1000, &e.shots);
        } else if ((r = ae_args_value(&a, "--limit", &v))) {
            if (r > 0) st = ae_parse_int(v, "--limit", 1, 1 << 30, &e.limit);
        } else if ((r = ae_args_value(&a, "--max-length", &v))) {
            if (r > 0) st = ae_parse_int(v, "--max-length", 2, 1 << 24, &e.max_len_opt);
        } else if ((r = ae_args_value(&a, "--batch", &v))) {
            if (r > 0) st = ae_parse_int(v, "--batch", 1, 1 << 16, &e.batch);
        } else if ((r = ae_args_value(&a, "--seed", &v))) {
            if (r > 0) st = ae_parse_u64(v, "--seed", &e.seed);
        } else if (ae_args_flag(&a, "--json")) json = 1;
        else if (ae_args_flag(&a, "--help")) {
            fputs(k_help, stdout);
            return 0;
        } else st = ae_args_unknown(&a);
        if (r < 0 || st != AE_OK) return ae_cli_fail("eval tasks");
    }
    if (!models || !tasks_s) {
        fprintf(stderr, "attnedit eval tasks: need --model and --tasks\n%s", k_help);
        return 2;
    }
    if (!data_dir) data_dir = getenv("AE_EVAL_DATA");
    if (!data_dir || !data_dir[0]) {
        fprintf(stderr, "attnedit eval tasks: no data folder: pass --data-dir DIR or set AE_EVAL_DATA "
                        "(docs/EVAL.md: layout)\n");
        return 2;
    }
    char **tasks = NULL;
    const ae_task_def **defs = NULL;
    int n_tasks = 0, n_defs = 0, rc = 0;
    if (split_list(models, "--model", &e.models, &e.n_models) != AE_OK ||
        split_list(tasks_s, "--tasks", &tasks, &n_tasks) != AE_OK)
        return ae_cli_fail("eval tasks");
    for (int i = 0; i < e.n_models && rc == 0; i++) rc = ae_cli_check_model("eval tasks", e.models[i]) ? 1 : 0;
    if (rc == 0) rc = expand_tasks(&e, tasks, n_tasks, &defs, &n_defs);
    if (rc == 0 && !(e.tasks = ae_calloc((size_t)n_defs, sizeof *e.tasks))) rc = ae_cli_fail("eval tasks");
    if (rc) {
        free_all(&e, tasks, n_tasks, defs);
        return rc;
    }
    // Every task's files are read and every request built before any model runs.
    for (int t = 0; t < n_defs && rc == 0; t++) {
        ae_cli_task_run *tr = &e.tasks[e.n_tasks];
        if (ae_task_load(defs[t], data_dir, e.shots > 0, &tr->task) != AE_OK) {
            rc = ae_cli_fail("eval tasks");
            break;
        }
        e.n_tasks++;
        tr->scores = ae_calloc((size_t)e.n_models, sizeof *tr->scores);
        if (!tr->scores || ae_task_build(&tr->task, e.shots, e.limit, e.seed, &tr->items, &tr->n_items) != AE_OK)
            rc = ae_cli_fail("eval tasks");
    }
    ae_atomic_file sf = {0};
    int sf_open = 0;
    if (rc == 0 && samples) {
        if (ae_atomic_open(&sf, samples) != AE_OK) rc = ae_cli_fail("eval tasks");
        else sf_open = 1;
    }
    const ae_backend *be = NULL;
    if (rc == 0 && ae_cli_open_device("eval tasks", device, &be)) rc = 1;
    for (int i = 0; i < e.n_models && rc == 0; i++) rc = run_model(&e, i, be);
    if (rc == 0) {
        if (json) ae_eval_tasks_print_json(&e);
        else ae_eval_tasks_print_table(&e);
        if (sf_open) {
            ae_status st = ae_eval_tasks_write_samples(&e, &sf);
            if (st != AE_OK) ae_atomic_abort(&sf);
            else st = ae_atomic_commit(&sf);
            sf_open = 0;
            if (st != AE_OK) rc = ae_cli_fail("eval tasks");
        }
    }
    if (sf_open) ae_atomic_abort(&sf);
    ae_backend_close(be);
    free_all(&e, tasks, n_tasks, defs);
    return rc;
}
