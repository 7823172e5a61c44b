// attnedit eval tasks: state shared by the command (cmd_eval_tasks.c) and its output
// (cmd_eval_tasks_out.c: table, JSON, --samples).
#ifndef AE_CLI_EVAL_TASKS_H
#define AE_CLI_EVAL_TASKS_H

#include <stdint.h>

#include "core/file.h"
#include "eval/tasks.h"

typedef struct {
    ae_task task;
    ae_task_item *items;
    int n_items;
    ae_task_scores *scores; // (n_models)
} ae_cli_task_run;

typedef struct {
    char **models; // (n_models) folders as given
    int n_models;
    ae_cli_task_run *tasks; // (n_tasks)
    int n_tasks;
    const ae_task_group **groups; // (n_groups) groups to report, each over its tasks in `tasks`
    int n_groups;
    int shots, limit, max_len_opt;
    int batch; // items per forward (--batch)
    uint64_t seed;
} ae_cli_eval_tasks;

// The results table (a column per model, the difference to the first, |diff| > 2 se) on stdout;
// then each group's rows: acc (lm-eval's weight_by_size value, the micro average) and acc_macro.
void ae_eval_tasks_print_table(const ae_cli_eval_tasks *e);
// The same as one JSON object on stdout.
void ae_eval_tasks_print_json(const ae_cli_eval_tasks *e);
// One JSON line per model, task and item (prompt, continuations, log-likelihoods, prediction),
// written to f (opened by the caller before the run, so that a bad path fails early; the
// caller commits it).
ae_status ae_eval_tasks_write_samples(const ae_cli_eval_tasks *e, ae_atomic_file *f);

#endif
