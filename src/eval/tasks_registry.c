// The task table (lm-eval 0.4.13's YAML, lm_eval/tasks/<task>/) and loading a task's files.
//
//   task            lm-eval splits (train/validation/test)   evaluates   metrics
//   arc_easy        train / validation / test                test        acc, acc_norm
//   arc_challenge   train / validation / test                test        acc, acc_norm
//   hellaswag       train / validation / -                   validation  acc, acc_norm
//   piqa            train / validation / -                   validation  acc, acc_norm
//   boolq           train / validation / -                   validation  acc
//   openbookqa      train / validation / test                test        acc, acc_norm
//   winogrande      train / validation / -                   validation  acc
//   sciq            train / validation / test                test        acc, acc_norm
//   lambada_openai  - / - / test                             test        perplexity, acc
//   mmlu_<subject>  dev (few-shot, first_n) / - / test       test        acc   (tasks_mmlu.c)
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "core/mem.h"
#include "eval/tasks_internal.h"

static const ae_task_def k_tasks[] = {
    {"arc_easy", "arc_easy", AE_TASK_MC, AE_METRIC_ACC | AE_METRIC_ACC_NORM,
     {{"ARC-Easy-Train.jsonl", "train.jsonl"},
      {"ARC-Easy-Dev.jsonl", "validation.jsonl"},
      {"ARC-Easy-Test.jsonl", "test.jsonl"}},
     ae_read_arc, NULL, NULL, 0},
    {"arc_challenge", "arc_challenge", AE_TASK_MC, AE_METRIC_ACC | AE_METRIC_ACC_NORM,
     {{"ARC-Challenge-Train.jsonl", "train.jsonl"},
      {"ARC-Challenge-Dev.jsonl", "validation.jsonl"},
      {"ARC-Challenge-Test.jsonl", "test.jsonl"}},
     ae_read_arc, NULL, NULL, 0},
    {"hellaswag", "hellaswag", AE_TASK_MC, AE_METRIC_ACC | AE_METRIC_ACC_NORM,
     {{"hellaswag_train.jsonl", "train.jsonl"},
      {"hellaswag_val.jsonl", "validation.jsonl", "hellaswag_val_full.txt"},
      {NULL}},
     ae_read_hellaswag, NULL, NULL, 0},
    {"piqa", "piqa", AE_TASK_MC, AE_METRIC_ACC | AE_METRIC_ACC_NORM,
     {{"train.jsonl"}, {"valid.jsonl", "validation.jsonl"}, {NULL}},
     ae_read_piqa, NULL, NULL, 0},
    {"boolq", "boolq", AE_TASK_MC, AE_METRIC_ACC,
     {{"train.jsonl"}, {"val.jsonl", "validation.jsonl"}, {NULL}},
     ae_read_boolq, NULL, NULL, 0},
    {"openbookqa", "openbookqa", AE_TASK_MC, AE_METRIC_ACC | AE_METRIC_ACC_NORM,
     {{"train.tsv", "train.jsonl"}, {"dev.tsv", "validation.jsonl", "dev.jsonl"}, {"test.tsv", "test.jsonl"}},
     ae_read_openbookqa, NULL, NULL, 0},
    {"winogrande", "winogrande", AE_TASK_MULTI_INPUT, AE_METRIC_ACC,
     {{"train_xl.jsonl", "train.jsonl"}, {"dev.jsonl", "validation.jsonl"}, {NULL}},
     ae_read_winogrande, NULL, NULL, 0},
    {"sciq", "sciq", AE_TASK_MC, AE_METRIC_ACC | AE_METRIC_ACC_NORM,
     {{"train.json", "train.jsonl"}, {"valid.json", "validation.jsonl"}, {"test.json", "test.jsonl"}},
     ae_read_sciq, NULL, NULL, 0},
    {"lambada_openai", "lambada", AE_TASK_LL, AE_METRIC_PPL | AE_METRIC_ACC,
     {{NULL}, {NULL}, {"lambada_test.jsonl", "test.jsonl", "lambada_openai.llm-foundry.jsonl"}},
     ae_read_lambada, NULL, NULL, 0},
};

#define N_TASKS ((int)(sizeof k_tasks / sizeof k_tasks[0]))

// The table above, then the MMLU subjects.
int ae_task_count(void) { return N_TASKS + ae_mmlu_count(); }
const ae_task_def *ae_task_at(int i) { return i >= 0 && i < N_TASKS ? &k_tasks[i] : ae_mmlu_at(i - N_TASKS); }

const ae_task_def *ae_task_find(const char *name) {
    for (int i = 0; i < ae_task_count(); i++)
        if (!strcmp(ae_task_at(i)->name, name)) return ae_task_at(i);
    return NULL;
}

char *ae_task_file_name(const ae_task_def *def, int s, int i) {
    if (s < 0 || s > 2 || i < 0 || i >= 4 || !def->files[s][i]) return NULL;
    const char *f = def->files[s][i], *pct = def->subject ? strstr(f, "%s") : NULL;
    if (!pct) return ae_strdup(f);
    return ae_strfmt("%.*s%s%s", (int)(pct - f), f, def->subject, pct + 2);
}

char *ae_task_description(const ae_task_def *def) {
    if (!def->subject) return ae_strdup("");
    char *s = ae_strfmt("The following are multiple choice questions (with answers) about %s.\n\n", def->subject);
    for (char *p = s ? strchr(s, '_') : NULL; p; p = strchr(p, '_')) *p = ' ';
    return s;
}

static const char *const k_split_names[3] = {"train", "validation", "test"};

// The first of the split's file names that exists in dir (heap path), or NULL.
static char *find_file(const ae_task_def *d, const char *dir, int s) {
    for (int i = 0; i < 4; i++) {
        char *name = ae_task_file_name(d, s, i);
        if (!name) break;
        char *p = ae_path_join(dir, name);
        free(name);
        if (p && ae_path_exists(p)) return p;
        free(p);
    }
    return NULL;
}

static ae_status read_split(const ae_task_def *d, const char *dir, int s, ae_task_split *out) {
    out->path = find_file(d, dir, s);
    if (!out->path) return AE_OK;
    AE_TRY(d->read(d, out->path, out));
    if (out->n == 0) return ae_errorf(AE_ERR_FORMAT, "%s: no records", out->path);
    return AE_OK;
}

void ae_task_split_names(const ae_task_def *d, int s, char *buf, size_t n) {
    buf[0] = '\0';
    for (int i = 0; i < 4; i++) {
        char *name = ae_task_file_name(d, s, i);
        if (!name) break;
        size_t l = strlen(buf);
        snprintf(buf + l, n - l, "%s%s", i ? ", " : "", name);
        free(name);
    }
}

ae_status ae_task_load(const ae_task_def *def, const char *data_dir, int need_fewshot, ae_task *out) {
    memset(out, 0, sizeof *out);
    out->def = def;
    if (!ae_path_is_dir(data_dir))
        return ae_errorf(AE_ERR_ARG, "data folder '%s' %s", data_dir,
                         ae_path_exists(data_dir) ? "is not a folder" : "does not exist");
    char *dir = ae_path_join(data_dir, def->folder);
    if (!dir) return AE_ERR_NOMEM;
    ae_status st = AE_OK;
    if (!ae_path_is_dir(dir))
        st = ae_errorf(AE_ERR_ARG, "%s: no folder '%s' for task %s (docs/EVAL.md: data layout)", data_dir,
                       def->folder, def->name);
    // lm-eval evaluates the test split when the task has one, else validation.
    out->eval_split = def->files[AE_SPLIT_TEST][0] ? AE_SPLIT_TEST : AE_SPLIT_VALIDATION;
    if (st == AE_OK) st = read_split(def, dir, out->eval_split, &out->split[out->eval_split]);
    if (st == AE_OK && !out->split[out->eval_split].path) {
        char names[512];
        ae_task_split_names(def, out->eval_split, names, sizeof names);
        st = ae_errorf(AE_ERR_ARG, "%s: task %s evaluates its %s split: no such file (looked for %s)", dir,
                       def->name, k_split_names[out->eval_split], names);
    }
    // Few-shot pool (lm-eval's Task.fewshot_docs): train if present, else validation, else test;
    // a first_n task's named split (the train slot) only.
    out->fewshot_split = -1;
    for (int s = 0; st == AE_OK && need_fewshot && s < 3 && out->fewshot_split < 0; s++) {
        if (!def->files[s][0] || (def->fewshot_first_n && s != AE_SPLIT_TRAIN)) continue;
        if (s != out->eval_split) st = read_split(def, dir, s, &out->split[s]);
        if (st == AE_OK && out->split[s].path) out->fewshot_split = s;
    }
    out->fewshot_extra = def->files[AE_SPLIT_TEST][0] == NULL && !def->fewshot_first_n;
    free(dir);
    if (st != AE_OK) ae_task_free(out);
    return st;
}

void ae_task_free(ae_task *t) {
    for (int s = 0; s < 3; s++) {
        for (int i = 0; i < t->split[s].n; i++) ae_task_doc_free(&t->split[s].docs[i]);
        free(t->split[s].docs);
        free(t->split[s].path);
    }
    memset(t, 0, sizeof *t);
}
