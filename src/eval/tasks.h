// Benchmark tasks scored as lm-evaluation-harness (lm-eval 0.4.13) scores them: the same
// documents, prompt text, few-shot examples and delimiters, log-likelihood requests,
// tokenisation of (context, continuation) pairs, left truncation, metrics and standard errors.
//
// A task reads local files (never the network): one sub-folder of the data folder per task,
// holding the official release files or the Hugging Face dataset exports (docs/EVAL.md lists
// the layout of each). Files:
//   tasks_registry.c  the task table: names, folders, file names per split, readers, metrics
//   tasks_mmlu.c      MMLU: the 57 subjects and their groups, the CSV reader, its records
//   tasks_read.c      the record readers of each task (jsonl/json/tsv/txt, label files)
//   tasks_text.c      text helpers: lm-eval's preprocessing, Python str semantics, jsonl lines
//   tasks_prompt.c    few-shot sampling (Python's random.Random) and (context, continuation)s
//   tasks_score.c     log-likelihood of requests through the model's forward (shared prefixes)
//   tasks_batch.c     the same, many items per forward over the paged KV cache (shared pages)
//   tasks_metrics.c   acc, acc_norm, perplexity, standard errors, paired differences, groups
#ifndef AE_EVAL_TASKS_H
#define AE_EVAL_TASKS_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "model/model.h"
#include "tok/tokenizer.h"

typedef enum {
    AE_TASK_MC = 0,          // multiple choice: one context, one continuation per choice
    AE_TASK_LL = 1,          // loglikelihood of one target (lambada): acc = greedy, perplexity
    AE_TASK_MULTI_INPUT = 2, // one context per choice, one shared continuation (winogrande)
} ae_task_kind;

enum { AE_METRIC_ACC = 1, AE_METRIC_ACC_NORM = 2, AE_METRIC_PPL = 4 };

// One document after lm-eval's doc_to_text / doc_to_choice / doc_to_target (and process_docs).
typedef struct {
    char *text;     // MC, LL: the question (doc_to_text); MULTI_INPUT: NULL
    char **choices; // (n_choices) MC: answer texts; MULTI_INPUT: the filled-in contexts; LL: NULL
    int n_choices;
    int gold;       // index of the right choice (MC, MULTI_INPUT); 0 for LL
    char *target;   // LL: the continuation; MULTI_INPUT: the shared continuation; MC: NULL
    int line;       // record's line (1-based) in its source file, for messages
} ae_task_doc;

typedef struct {
    char *path;       // source file, NULL when the split is absent
    ae_task_doc *docs;
    int n;
} ae_task_split;

typedef enum { AE_SPLIT_TRAIN = 0, AE_SPLIT_VALIDATION = 1, AE_SPLIT_TEST = 2 } ae_split_id;

typedef struct ae_task_def ae_task_def;

// Reader of one split file into docs (tasks_read.c, tasks_mmlu.c). Errors name the file and line.
typedef ae_status (*ae_task_reader)(const ae_task_def *def, const char *path, ae_task_split *out);

struct ae_task_def {
    const char *name;   // "arc_easy"
    const char *folder; // sub-folder of the data folder
    ae_task_kind kind;
    int metrics;        // AE_METRIC_* the task reports (lm-eval's metric_list)
    // File names tried in order for each split (train, validation, test); an empty list means
    // lm-eval's task has no such split. "%s" stands for the subject (MMLU).
    const char *files[3][4];
    ae_task_reader read;
    // MMLU (lm-eval's mmlu/default): the subject ("high_school_us_history"), which names its
    // files, its description line and the "subject" of an all/ export; NULL for other tasks.
    const char *subject;
    const char *group;  // the category group of an MMLU subject ("mmlu_stem"), else NULL
    // 1: lm-eval's YAML names the few-shot split (MMLU's dev, read into the train slot), the
    // only pool, and its sampler is first_n (the first K examples in order, no randomness).
    int fewshot_first_n;
};

// All tasks, in a fixed order; NULL when unknown.
const ae_task_def *ae_task_find(const char *name);
int ae_task_count(void);
const ae_task_def *ae_task_at(int i);
// File name i (0-based) that split s of the task tries, with the subject filled in (heap), or
// NULL past the last one.
char *ae_task_file_name(const ae_task_def *def, int s, int i);
// lm-eval's description line (prepended to every context): MMLU's "The following are multiple
// choice questions (with answers) about <subject, _ as spaces>.\n\n"; "" for other tasks. Heap.
char *ae_task_description(const ae_task_def *def);

// Groups of tasks (lm-eval group YAMLs): "mmlu" (the 57 subjects) and its categories
// "mmlu_stem", "mmlu_humanities", "mmlu_social_sciences", "mmlu_other". lm-eval aggregates a
// group over its leaf tasks with weight_by_size: the mean over all their items (micro average).
typedef struct {
    const char *name;
    const char *category; // the subjects' ae_task_def.group this group takes; NULL: every subject
} ae_task_group;
const ae_task_group *ae_task_group_find(const char *name); // NULL when not a group
int ae_task_group_count(void);
const ae_task_group *ae_task_group_at(int i);
// Whether task def belongs to group g.
int ae_task_group_has(const ae_task_group *g, const ae_task_def *def);

typedef struct {
    const ae_task_def *def;
    ae_task_split split[3];
    int eval_split;    // test when the task has one and its file exists, else validation
    int fewshot_split; // train if present, else validation, else test (lm-eval's rule)
    // 1: lm-eval draws shots + 1 examples and drops the document being evaluated (its test
    // split is null, so fewshot_split == test_split holds); 0: it draws `shots`.
    int fewshot_extra;
} ae_task;

// Reads the task's files from data_dir/<folder>: every split the task defines whose file
// exists; at least the evaluation split must. The few-shot pool is read only when
// need_fewshot. Errors name the folder, file and line.
ae_status ae_task_load(const ae_task_def *def, const char *data_dir, int need_fewshot, ae_task *out);
void ae_task_free(ae_task *t);

// Requests of one evaluated document: (ctx[i], cont[i]) for each choice i (LL: one).
typedef struct {
    int n;
    char **ctx;      // (n) heap strings
    char **cont;     // (n)
    double *len;     // (n) length of choice i in code points (acc_norm's divisor)
    int gold;
    int doc;         // index in the evaluation split
} ae_task_item;

// Builds the requests of the first `limit` documents (all when limit <= 0) of the evaluation
// split with `shots` few-shot examples drawn as lm-eval draws them (random.Random(seed),
// seed 1234 by default, one generator for the whole task, documents in order; first_n tasks:
// the first `shots` examples), after the task's description. AE_ERR_ARG when shots exceed the
// examples available.
ae_status ae_task_build(const ae_task *t, int shots, int limit, uint64_t seed,
                        ae_task_item **items, int *n_items);
void ae_task_items_free(ae_task_item *items, int n);

// Per-request results of one model on one task.
typedef struct {
    int n_items;
    int n_req;         // total requests
    int *first;        // (n_items + 1) offsets of each item's requests
    double *ll;        // (n_req) sum of log p(continuation tokens)
    unsigned char *greedy; // (n_req) 1 when every continuation token is the argmax
    int *n_tokens;     // (n_req) continuation tokens
    unsigned char *truncated; // (n_items) any request of the item cut from the left
    int n_truncated;
} ae_task_scores;

// Progress callback: done/total items.
typedef void (*ae_task_progress_fn)(void *ud, int done, int total);

// Scores every request with lm-eval's HF-backend protocol: context and continuation tokenised
// as one string and split after the context's tokens (trailing whitespace of the context moved
// to the continuation); input (context + continuation)[-(max_len + 1):][:-1]; log-likelihood =
// sum of the continuation tokens' log-probabilities, greedy = each is the argmax. A shared
// prefix (the context of every choice) is run once per item. batch > 1: up to `batch` items
// per forward (their prefixes in one forward, then every choice's rows in a second one, over
// the paged KV cache: tasks_batch.c), when the backend has the paged ops; batch 1, or a
// backend without them: one request at a time through the contiguous forward. The results
// agree to fp32 rounding. progress is called after each forward's items.
#define AE_TASK_BATCH_DEFAULT 32
ae_status ae_task_score(const ae_model *m, const ae_tokenizer *tok, const ae_task_item *items,
                        int n_items, int max_len, int batch, ae_task_progress_fn progress, void *ud,
                        ae_task_scores *out);
void ae_task_scores_free(ae_task_scores *s);

// Predictions of item i: argmax of ll (pred) and of ll / len (pred_norm), first on ties.
void ae_task_predict(const ae_task_item *it, const ae_task_scores *s, int i, int *pred,
                     int *pred_norm);

// Per-item values of one metric (acc, acc_norm: 0/1; ppl: the target's log-likelihood).
// vals: (n_items) caller-allocated.
void ae_task_metric_values(const ae_task_item *items, const ae_task_scores *s, int metric,
                           double *vals);

typedef struct {
    double value;  // acc / acc_norm: mean; ppl: exp(-mean ll)
    double stderr_; // lm-eval's mean_stderr (sample std / sqrt(n)); ppl: delta method; NaN if n < 2
} ae_metric_value;

ae_metric_value ae_task_aggregate(int metric, const double *vals, int n);
// Difference b - a of paired per-item values (same items): the mean difference, its standard
// error (sample std of the differences / sqrt(n)); for ppl the difference of perplexities with
// the error of the mean log-likelihood difference carried by the delta method.
ae_metric_value ae_task_paired_diff(int metric, const double *a, const double *b, int n);
const char *ae_metric_name(int metric);
// A group's value from its k tasks' values (v[i].value, v[i].stderr_) and sizes (items), as
// lm-eval's Group.aggregate computes it. weight_by_size 1: sum(value * size) / sum(size) (the
// micro average) with pooled_sample_stderr, sqrt(sum((n_i - 1) n_i se_i^2) / (N - k) / N);
// 0: the unweighted mean (macro average) with sqrt(sum(se_i^2)) / k. The stderr is NaN when
// any task's is (lm-eval: "N/A").
ae_metric_value ae_task_group_aggregate(const ae_metric_value *v, const int *sizes, int k,
                                        int weight_by_size);

#endif
