// Helpers shared by the tasks_*.c files (not a public interface).
#ifndef AE_EVAL_TASKS_INTERNAL_H
#define AE_EVAL_TASKS_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "eval/tasks.h"

// ---- growable string ----
typedef struct {
    char *s;
    size_t len, cap;
    int failed;
} ae_sbuf;
void ae_sbuf_add(ae_sbuf *b, const char *s, size_t n);
void ae_sbuf_adds(ae_sbuf *b, const char *s);
// The string (heap, caller frees) or NULL after an allocation failure (error set).
char *ae_sbuf_take(ae_sbuf *b);

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
ae_status ae_rec_error(const ae_rec_ctx *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

// ---- docs ----
// Appends a doc to a split (takes ownership of its strings); AE_ERR_NOMEM.
ae_status ae_split_push(ae_task_split *s, ae_task_doc *d);
void ae_task_doc_free(ae_task_doc *d);

// ---- readers (tasks_read.c) ----
ae_status ae_read_arc(const char *path, ae_task_split *out);
ae_status ae_read_openbookqa(const char *path, ae_task_split *out);
ae_status ae_read_hellaswag(const char *path, ae_task_split *out);
ae_status ae_read_piqa(const char *path, ae_task_split *out);
ae_status ae_read_boolq(const char *path, ae_task_split *out);
ae_status ae_read_lambada(const char *path, ae_task_split *out);
ae_status ae_read_winogrande(const char *path, ae_task_split *out);
ae_status ae_read_sciq(const char *path, ae_task_split *out);

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
