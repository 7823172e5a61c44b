// Helpers shared by the tasks_*.c files (not a public interface).
#ifndef AE_EVAL_TASKS_INTERNAL_H
#define AE_EVAL_TASKS_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "core/sbuf.h"
#include "eval/tasks.h"

// ---- Python str semantics (UTF-8 in, heap strings out) ----
int ae_py_isspace(uint32_t cp);              // str.isspace() of one code point
char *ae_py_strip(const char *s, int left, int right); // str.strip / lstrip / rstrip
size_t ae_py_rstrip_len(const char *s, size_t n);      // length of s[0..n) without trailing space
char *ae_py_capitalize(const char *s);       // str.capitalize()
double ae_py_len(const char *s);             // len(str): code points
// lm-eval hellaswag/utils.py preprocess: strip, " [title]" -> ". ", drop "[...]", "  " -> " ".
char *ae_hellaswag_preprocess(const char *s);
// printf into a heap string.
char *ae_strfmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

// ---- files ----
// Calls fn on each line (without its "\n" / "\r\n"), numbered from 1; stops at an error.
typedef ae_status (*ae_line_fn)(void *ud, char *line, int lineno);
ae_status ae_lines_foreach(const char *path, ae_line_fn fn, void *ud);
// Each non-blank line parsed as a JSON object; AE_ERR_FORMAT "<path>:<line>: ..." otherwise.
// A file whose first non-blank character is '[' is read as one JSON array of objects instead
// (records numbered by their line of the file).
typedef ae_status (*ae_json_rec_fn)(void *ud, const cJSON *rec, int lineno);
ae_status ae_jsonl_foreach(const char *path, ae_json_rec_fn fn, void *ud);
// Each record of a CSV file (RFC 4180 as Python's csv.reader reads it, excel dialect: ","
// separates, '"' quotes a field that starts with it, "" inside quotes is one '"', newlines
// inside quotes belong to the field, CRLF or LF ends a record, a '"' inside an unquoted field
// is kept), numbered by the line it starts on; blank lines are skipped. AE_ERR_FORMAT
// "<path>:<line>: ..." for a quoted field left open, a bare CR outside quotes, invalid UTF-8.
typedef ae_status (*ae_csv_rec_fn)(void *ud, char **fields, int n, int lineno);
ae_status ae_csv_foreach(const char *path, ae_csv_rec_fn fn, void *ud);

// ---- record fields (messages "<path>:<line>: field "x": ...") ----
typedef struct {
    const char *path;
    int line;
} ae_rec_ctx;
// A string field (a.b nested by dots); NULL with the error set when absent or not a string.
const char *ae_rec_str(const ae_rec_ctx *c, const cJSON *rec, const char *key);
// A JSON array field of strings; returns the count, or -1 (error set).
int ae_rec_str_array(const ae_rec_ctx *c, const cJSON *rec, const char *key, const char **out,
                     int max);
// An index field in [0, n): a JSON integer or a string holding one ("0", "1") (tasks_read.c).
ae_status ae_rec_index(const ae_rec_ctx *c, const cJSON *rec, const char *key, int n, int *out);
ae_status ae_rec_error(const ae_rec_ctx *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

// ---- docs ----
// Appends a doc to a split (takes ownership of its strings); AE_ERR_NOMEM.
ae_status ae_split_push(ae_task_split *s, ae_task_doc *d);
void ae_task_doc_free(ae_task_doc *d);

// ---- readers (tasks_read.c, tasks_mmlu.c) ----
ae_status ae_read_arc(const ae_task_def *def, const char *path, ae_task_split *out);
ae_status ae_read_openbookqa(const ae_task_def *def, const char *path, ae_task_split *out);
ae_status ae_read_hellaswag(const ae_task_def *def, const char *path, ae_task_split *out);
ae_status ae_read_piqa(const ae_task_def *def, const char *path, ae_task_split *out);
ae_status ae_read_boolq(const ae_task_def *def, const char *path, ae_task_split *out);
ae_status ae_read_lambada(const ae_task_def *def, const char *path, ae_task_split *out);
ae_status ae_read_winogrande(const ae_task_def *def, const char *path, ae_task_split *out);
ae_status ae_read_sciq(const ae_task_def *def, const char *path, ae_task_split *out);
// MMLU: Hendrycks' CSV (question, A, B, C, D, answer letter) or the Hugging Face cais/mmlu
// export ({question, subject, choices: [4], answer: 0-3}; an all/ file keeps def's subject).
ae_status ae_read_mmlu(const ae_task_def *def, const char *path, ae_task_split *out);
// The MMLU subject tasks (tasks_mmlu.c), appended to the task table by tasks_registry.c.
int ae_mmlu_count(void);
const ae_task_def *ae_mmlu_at(int i);
// Adds a multiple-choice doc (tasks_read.c): takes text (may be NULL: AE_ERR_NOMEM), copies
// the choices.
ae_status ae_push_mc(ae_task_split *out, int line, char *text, const char *const *choices, int n, int gold);

// The file names split s of a task tries, ", "-separated, into buf (tasks_registry.c).
void ae_task_split_names(const ae_task_def *d, int s, char *buf, size_t n);

// ---- requests as the model sees them (tasks_score.c, tasks_batch.c) ----
// A request tokenised as lm-eval's HF backend does (tasks_score.c: ae_enc_req_make).
typedef struct {
    int32_t *ids; // (n_ctx + n_cont) context tokens then continuation tokens
    int n_ctx, n_cont;
} ae_enc_req;
// The model's input of a request cut to max_len: (ctx + cont)[-(max_len + 1):][:-1], split
// into a prefix of n_prefix tokens (run once for the choices that share it) and a tail of
// n_tail = n_cont tokens whose logit rows score the continuation ids[n_ctx .. n_ctx + n_cont).
typedef struct {
    const int32_t *in; // (n_prefix + n_tail) points into the ae_enc_req
    int n_prefix, n_tail, truncated;
} ae_req_view;
ae_req_view ae_req_view_of(const ae_enc_req *r, int max_len);
// 1 when a and b have the same prefix tokens (so one run of it serves both).
int ae_req_same_prefix(const ae_req_view *a, const ae_req_view *b);
// Scores the out->n_items items many per forward through the paged forward (tasks_batch.c):
// `batch` items at most per forward; fills out->ll, greedy, truncated (out allocated by the
// caller, out->first set). enc: (out->n_req) the encoded requests, already checked.
ae_status ae_task_score_batched(const ae_model *m, const ae_enc_req *enc, int max_len, int batch,
                                ae_task_progress_fn progress, void *ud, ae_task_scores *out);

// ---- Python's random.Random (MT19937) as lm-eval's few-shot sampler uses it ----
typedef struct {
    uint32_t mt[624];
    int mti;
} ae_pyrandom;
void ae_pyrandom_seed(ae_pyrandom *r, uint64_t seed);     // random.Random(seed), seed >= 0
uint32_t ae_pyrandom_getrandbits(ae_pyrandom *r, int k);  // k in 1..32
uint32_t ae_pyrandom_randbelow(ae_pyrandom *r, uint32_t n); // n >= 1
// random.sample(range(n), k) (CPython 3.11-3.13): indices into the population; k <= n.
ae_status ae_pyrandom_sample(ae_pyrandom *r, int n, int k, int *out);

#endif
