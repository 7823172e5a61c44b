// Record readers: each turns one file of a task into documents exactly as lm-eval's task YAML
// (doc_to_text / doc_to_choice / doc_to_target, process_docs) renders the same records. Both
// the official release layout and the Hugging Face dataset export are accepted where they
// differ (docs/EVAL.md). Every error names the file and the line.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "eval/tasks_internal.h"

#define MAX_CHOICES 16

typedef struct {
    const char *path;
    ae_task_split *out;
    char **labels; // piqa: the labels file's lines
    int n_labels;
} rd;

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

ae_status ae_push_mc(ae_task_split *out, int line, char *text, const char *const *choices, int n, int gold) {
    ae_task_doc d = {0};
    d.text = text;
    d.line = line;
    d.gold = gold;
    d.choices = ae_calloc((size_t)n, sizeof *d.choices);
    if (!text || !d.choices) {
        ae_task_doc_free(&d);
        return AE_ERR_NOMEM;
    }
    d.n_choices = n;
    for (int i = 0; i < n; i++)
        if (!(d.choices[i] = ae_strdup(choices[i]))) {
            ae_task_doc_free(&d);
            return AE_ERR_NOMEM;
        }
    return ae_split_push(out, &d);
}

static ae_status push_mc(rd *r, int line, char *text, const char *const *choices, int n, int gold) {
    return ae_push_mc(r->out, line, text, choices, n, gold);
}

// A label field: JSON int, or a string holding an int ("0", "1"), in [0, n).
ae_status ae_rec_index(const ae_rec_ctx *c, const cJSON *rec, const char *key, int n, int *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(rec, key);
    char *end = NULL;
    long x = -1;
    if (cJSON_IsNumber(v)) { // compared as a double first: a huge label must not reach the cast
        double d = v->valuedouble;
        if (d >= 0 && d < n && d == (double)(long)d) x = (long)d;
    } else if (cJSON_IsString(v) && v->valuestring[0]) {
        x = strtol(v->valuestring, &end, 10);
        if (*end) x = -1;
    } else if (!v) return ae_rec_error(c, "field \"%s\" is missing", key);
    if (x < 0 || x >= n) return ae_rec_error(c, "field \"%s\": expected an index in 0..%d", key, n - 1);
    *out = (int)x;
    return AE_OK;
}

// ---- ARC and OpenBookQA: AI2 layout {question: {stem, choices: [{text, label}]}, answerKey}
// or the HF layout {question | question_stem, choices: {text: [], label: []}, answerKey} ----
static ae_status ai2_choices(const ae_rec_ctx *c, const cJSON *rec, const char *stem_key,
                             const char **stem, const char **texts, const char **labels, int *n) {
    const cJSON *q = cJSON_GetObjectItemCaseSensitive(rec, "question");
    if (cJSON_IsObject(q)) { // AI2's release
        if (!(*stem = ae_rec_str(c, rec, "question.stem"))) return AE_ERR_FORMAT;
        const cJSON *ch = cJSON_GetObjectItemCaseSensitive(q, "choices");
        if (!cJSON_IsArray(ch) || !ch->child) return ae_rec_error(c, "field \"question.choices\" is not a non-empty array");
        *n = 0;
        for (const cJSON *e = ch->child; e; e = e->next) {
            if (*n == MAX_CHOICES) return ae_rec_error(c, "more than %d choices", MAX_CHOICES);
            if (!(texts[*n] = ae_rec_str(c, e, "text")) || !(labels[*n] = ae_rec_str(c, e, "label")))
                return ae_error_wrap(AE_ERR_FORMAT, "in question.choices");
            (*n)++;
        }
        return AE_OK;
    }
    if (!(*stem = ae_rec_str(c, rec, stem_key))) return AE_ERR_FORMAT;
    int nt = ae_rec_str_array(c, rec, "choices.text", texts, MAX_CHOICES);
    if (nt < 0) return AE_ERR_FORMAT;
    int nl = ae_rec_str_array(c, rec, "choices.label", labels, MAX_CHOICES);
    if (nl < 0) return AE_ERR_FORMAT;
    if (nt != nl) return ae_rec_error(c, "%d choice texts but %d labels", nt, nl);
    *n = nt;
    return AE_OK;
}

static ae_status gold_of(const ae_rec_ctx *c, const char *key, const char **labels, int n, int *gold) {
    for (int i = 0; i < n; i++)
        if (!strcmp(labels[i], key)) {
            *gold = i;
            return AE_OK;
        }
    return ae_rec_error(c, "answerKey \"%s\" is not one of the choice labels", key);
}

static ae_status arc_rec(void *ud, const cJSON *rec, int line) {
    rd *r = ud;
    ae_rec_ctx c = {r->path, line};
    const char *stem, *texts[MAX_CHOICES], *labels[MAX_CHOICES], *key;
    int n, gold = 0;
    AE_TRY(ai2_choices(&c, rec, "question", &stem, texts, labels, &n));
    if (!(key = ae_rec_str(&c, rec, "answerKey"))) return AE_ERR_FORMAT;
    AE_TRY(gold_of(&c, key, labels, n, &gold)); // choices.label.index(answerKey)
    return push_mc(r, line, ae_strfmt("Question: %s\nAnswer:", stem), texts, n, gold);
}

ae_status ae_read_arc(const ae_task_def *def, const char *path, ae_task_split *out) {
    (void)def;
    rd r = {path, out, NULL, 0};
    return ae_jsonl_foreach(path, arc_rec, &r);
}

static ae_status obqa_rec(void *ud, const cJSON *rec, int line) {
    rd *r = ud;
    ae_rec_ctx c = {r->path, line};
    const char *stem, *texts[MAX_CHOICES], *labels[MAX_CHOICES], *key;
    int n, gold = 0;
    AE_TRY(ai2_choices(&c, rec, "question_stem", &stem, texts, labels, &n));
    if (!(key = ae_rec_str(&c, rec, "answerKey"))) return AE_ERR_FORMAT;
    while (*key == ' ' || *key == '\t') key++; // answerKey.lstrip()
    AE_TRY(gold_of(&c, key, labels, n, &gold));
    return push_mc(r, line, ae_strdup(stem), texts, n, gold); // doc_to_text: question_stem
}

// AI2's TSV: ID, Question Stem, Choices "(A) .. (B) .. (C) .. (D) ..", Complete Question,
// Answer Key; a header line first.
static ae_status obqa_tsv_line(void *ud, char *line, int lineno) {
    rd *r = ud;
    ae_rec_ctx c = {r->path, lineno};
    char *col[5];
    int n = 0;
    for (char *p = line; n < 5; n++) {
        col[n] = p;
        char *tab = strchr(p, '\t');
        if (!tab) {
            n++;
            break;
        }
        *tab = '\0';
        p = tab + 1;
    }
    if (lineno == 1) {
        if (n < 5 || strcmp(col[1], "Question Stem") || strcmp(col[2], "Choices") || strcmp(col[4], "Answer Key"))
            return ae_rec_error(&c, "expected the OpenBookQA header \"ID<TAB>Question Stem<TAB>Choices<TAB>"
                                    "Complete Question<TAB>Answer Key\"");
        return AE_OK;
    }
    if (n == 1 && !col[0][0]) return AE_OK; // blank line
    if (n < 5) return ae_rec_error(&c, "expected 5 tab-separated columns, found %d", n);
    const char *texts[MAX_CHOICES], *labels[MAX_CHOICES] = {"A", "B", "C", "D", "E", "F", "G", "H"};
    char *p = col[2];
    if (strncmp(p, "(A) ", 4) != 0) return ae_rec_error(&c, "choices do not start with \"(A) \"");
    int k = 0;
    p += 4;
    for (;;) {
        texts[k] = p;
        char next[8];
        snprintf(next, sizeof next, " (%c) ", 'A' + k + 1);
        char *h = k + 1 < 8 ? strstr(p, next) : NULL;
        k++;
        if (!h) break;
        *h = '\0';
        p = h + 5;
    }
    const char *key = col[4];
    while (*key == ' ') key++;
    int gold = 0;
    AE_TRY(gold_of(&c, key, labels, k, &gold));
    return push_mc(r, lineno, ae_strdup(col[1]), texts, k, gold);
}

ae_status ae_read_openbookqa(const ae_task_def *def, const char *path, ae_task_split *out) {
    (void)def;
    rd r = {path, out, NULL, 0};
    if (ends_with(path, ".tsv")) return ae_lines_foreach(path, obqa_tsv_line, &r);
    return ae_jsonl_foreach(path, obqa_rec, &r);
}

// ---- HellaSwag: {activity_label, ctx_a, ctx_b, endings, label} (rowanz jsonl or HF), or the
// text file of llama.cpp (6 lines per item: context, label, 4 endings) ----
static ae_status hs_push(rd *r, int line, const char *query_raw, const char *const *endings, int n,
                         int gold) {
    char *pe[MAX_CHOICES] = {0};
    ae_status st = AE_OK;
    for (int i = 0; i < n && st == AE_OK; i++)
        if (!(pe[i] = ae_hellaswag_preprocess(endings[i]))) st = AE_ERR_NOMEM;
    if (st == AE_OK) st = push_mc(r, line, ae_hellaswag_preprocess(query_raw), (const char *const *)pe, n, gold);
    for (int i = 0; i < n; i++) free(pe[i]);
    return st;
}

static ae_status hs_rec(void *ud, const cJSON *rec, int line) {
    rd *r = ud;
    ae_rec_ctx c = {r->path, line};
    const char *act, *ca, *cb, *endings[MAX_CHOICES];
    if (!(act = ae_rec_str(&c, rec, "activity_label")) || !(ca = ae_rec_str(&c, rec, "ctx_a")) ||
        !(cb = ae_rec_str(&c, rec, "ctx_b")))
        return AE_ERR_FORMAT;
    int n = ae_rec_str_array(&c, rec, "endings", endings, MAX_CHOICES), gold;
    if (n < 0) return AE_ERR_FORMAT;
    AE_TRY(ae_rec_index(&c, rec, "label", n, &gold));
    char *cap = ae_py_capitalize(cb); // ctx = ctx_a + " " + ctx_b.capitalize()
    char *q = cap ? ae_strfmt("%s: %s %s", act, ca, cap) : NULL;
    free(cap);
    if (!q) return AE_ERR_NOMEM;
    ae_status st = hs_push(r, line, q, endings, n, gold);
    free(q);
    return st;
}

typedef struct {
    rd *r;
    char *lines[6];
    int n, first;
} hs_txt;

static ae_status hs_txt_line(void *ud, char *line, int lineno) {
    hs_txt *h = ud;
    if (h->n == 0 && !line[0]) return AE_OK; // blank line between / after items
    if (h->n == 0) h->first = lineno;
    if (!(h->lines[h->n++] = ae_strdup(line))) return AE_ERR_NOMEM;
    if (h->n < 6) return AE_OK;
    ae_rec_ctx c = {h->r->path, h->first + 1};
    char *end;
    long gold = strtol(h->lines[1], &end, 10);
    ae_status st = AE_OK;
    if (!h->lines[1][0] || *end || gold < 0 || gold > 3)
        st = ae_rec_error(&c, "expected the gold ending (0-3) on the second line of an item, got \"%.40s\"",
                          h->lines[1]);
    if (st == AE_OK) st = hs_push(h->r, h->first, h->lines[0], (const char *const *)h->lines + 2, 4, (int)gold);
    for (int i = 0; i < 6; i++) free(h->lines[i]);
    h->n = 0;
    return st;
}

ae_status ae_read_hellaswag(const ae_task_def *def, const char *path, ae_task_split *out) {
    (void)def;
    rd r = {path, out, NULL, 0};
    if (!ends_with(path, ".txt")) return ae_jsonl_foreach(path, hs_rec, &r);
    hs_txt h = {&r, {0}, 0, 0};
    ae_status st = ae_lines_foreach(path, hs_txt_line, &h);
    for (int i = 0; i < h.n; i++) free(h.lines[i]);
    if (st == AE_OK && h.n)
        st = ae_errorf(AE_ERR_FORMAT, "%s:%d: incomplete item (%d of 6 lines: context, label, 4 endings)",
                       path, h.first, h.n);
    return st;
}

// ---- PIQA: {goal, sol1, sol2} with labels in <name>-labels.lst (official), or with "label" ----
static ae_status piqa_rec(void *ud, const cJSON *rec, int line) {
    rd *r = ud;
    ae_rec_ctx c = {r->path, line};
    const char *goal, *sol[2];
    if (!(goal = ae_rec_str(&c, rec, "goal")) || !(sol[0] = ae_rec_str(&c, rec, "sol1")) ||
        !(sol[1] = ae_rec_str(&c, rec, "sol2")))
        return AE_ERR_FORMAT;
    int gold = 0;
    if (cJSON_GetObjectItemCaseSensitive(rec, "label")) AE_TRY(ae_rec_index(&c, rec, "label", 2, &gold));
    else {
        int k = r->out->n;
        if (!r->labels) return ae_rec_error(&c, "no \"label\" field and no labels file beside the data");
        if (k >= r->n_labels)
            return ae_rec_error(&c, "the labels file has only %d lines for more records", r->n_labels);
        const char *l = r->labels[k];
        if (!l || (strcmp(l, "0") && strcmp(l, "1"))) // NULL: a blank line
            return ae_errorf(AE_ERR_FORMAT, "labels file of %s: line %d: expected 0 or 1, got \"%.20s\"",
                             r->path, k + 1, l ? l : "");
        gold = l[0] - '0';
    }
    return push_mc(r, line, ae_strfmt("Question: %s\nAnswer:", goal), sol, 2, gold);
}

static ae_status label_line(void *ud, char *line, int lineno) {
    rd *r = ud;
    if (!line[0]) return AE_OK;
    char **p = ae_realloc(r->labels, sizeof *p * (size_t)(lineno));
    if (!p) return AE_ERR_NOMEM;
    r->labels = p;
    while (r->n_labels < lineno - 1) r->labels[r->n_labels++] = NULL; // blank lines
    return (r->labels[r->n_labels++] = ae_strdup(line)) ? AE_OK : AE_ERR_NOMEM;
}

ae_status ae_read_piqa(const ae_task_def *def, const char *path, ae_task_split *out) {
    (void)def;
    rd r = {path, out, NULL, 0};
    ae_status st = AE_OK;
    if (ends_with(path, ".jsonl")) { // valid.jsonl -> valid-labels.lst
        char *lp = ae_strfmt("%.*s-labels.lst", (int)(strlen(path) - 6), path);
        if (!lp) return AE_ERR_NOMEM;
        FILE *f = fopen(lp, "rb");
        if (f) {
            fclose(f);
            st = ae_lines_foreach(lp, label_line, &r);
        }
        free(lp);
    }
    if (st == AE_OK) st = ae_jsonl_foreach(path, piqa_rec, &r);
    if (st == AE_OK && r.labels && r.n_labels != out->n)
        st = ae_errorf(AE_ERR_FORMAT, "%s: %d records but %d labels in its labels file", path, out->n, r.n_labels);
    for (int i = 0; i < r.n_labels; i++) free(r.labels[i]);
    free(r.labels);
    return st;
}

// ---- BoolQ (SuperGLUE layout or HF aps/super_glue export): {passage, question, label} with
// label true/false, "true"/"false" or 0/1 ----
static ae_status boolq_rec(void *ud, const cJSON *rec, int line) {
    rd *r = ud;
    ae_rec_ctx c = {r->path, line};
    const char *passage, *question;
    if (!(passage = ae_rec_str(&c, rec, "passage")) || !(question = ae_rec_str(&c, rec, "question")))
        return AE_ERR_FORMAT;
    const cJSON *l = cJSON_GetObjectItemCaseSensitive(rec, "label");
    int gold = -1;
    if (cJSON_IsBool(l)) gold = cJSON_IsTrue(l);
    else if (cJSON_IsString(l) && !strcmp(l->valuestring, "true")) gold = 1;
    else if (cJSON_IsString(l) && !strcmp(l->valuestring, "false")) gold = 0;
    else if (l && !cJSON_IsString(l)) AE_TRY(ae_rec_index(&c, rec, "label", 2, &gold));
    if (gold < 0)
        return ae_rec_error(&c, "field \"label\" %s (expected true/false or 0/1; the original Google "
                                "layout with \"answer\" is not read: use SuperGLUE's)", l ? "is invalid" : "is missing");
    static const char *const yn[2] = {"no", "yes"};
    return push_mc(r, line, ae_strfmt("%s\nQuestion: %s?\nAnswer:", passage, question), yn, 2, gold);
}

ae_status ae_read_boolq(const ae_task_def *def, const char *path, ae_task_split *out) {
    (void)def;
    rd r = {path, out, NULL, 0};
    return ae_jsonl_foreach(path, boolq_rec, &r);
}

// ---- LAMBADA (OpenAI): {text} split at the last " ", or {context, continuation} ----
static ae_status lambada_rec(void *ud, const cJSON *rec, int line) {
    rd *r = ud;
    ae_rec_ctx c = {r->path, line};
    char *text;
    if (cJSON_GetObjectItemCaseSensitive(rec, "text")) {
        const char *t = ae_rec_str(&c, rec, "text");
        if (!t) return AE_ERR_FORMAT;
        text = ae_strdup(t);
    } else {
        const char *a = ae_rec_str(&c, rec, "context"), *b = a ? ae_rec_str(&c, rec, "continuation") : NULL;
        if (!b) return ae_error_wrap(AE_ERR_FORMAT, "expected {\"text\"} or {\"context\", \"continuation\"}");
        text = ae_strfmt("%s %s", a, b);
    }
    if (!text) return AE_ERR_NOMEM;
    // doc_to_text: text.split(' ')[:-1] joined by ' '; doc_to_target: ' ' + text.split(' ')[-1]
    char *sp = strrchr(text, ' ');
    ae_task_doc d = {0};
    d.line = line;
    d.text = ae_strndup(text, sp ? (size_t)(sp - text) : 0);
    d.target = ae_strfmt(" %s", sp ? sp + 1 : text);
    free(text);
    if (!d.text || !d.target) {
        ae_task_doc_free(&d);
        return AE_ERR_NOMEM;
    }
    return ae_split_push(r->out, &d);
}

ae_status ae_read_lambada(const ae_task_def *def, const char *path, ae_task_split *out) {
    (void)def;
    rd r = {path, out, NULL, 0};
    return ae_jsonl_foreach(path, lambada_rec, &r);
}

// ---- WinoGrande: {sentence, option1, option2, answer "1"|"2"} ----
static ae_status wino_rec(void *ud, const cJSON *rec, int line) {
    rd *r = ud;
    ae_rec_ctx c = {r->path, line};
    const char *s, *o1, *o2, *ans;
    if (!(s = ae_rec_str(&c, rec, "sentence")) || !(o1 = ae_rec_str(&c, rec, "option1")) ||
        !(o2 = ae_rec_str(&c, rec, "option2")) || !(ans = ae_rec_str(&c, rec, "answer")))
        return AE_ERR_FORMAT;
    if (strcmp(ans, "1") && strcmp(ans, "2")) return ae_rec_error(&c, "field \"answer\": expected \"1\" or \"2\"");
    const char *blank = strchr(s, '_');
    if (!blank) return ae_rec_error(&c, "field \"sentence\" has no \"_\" to fill in");
    ae_task_doc d = {0};
    d.line = line;
    d.gold = ans[0] - '1';
    d.n_choices = 2;
    d.choices = ae_calloc(2, sizeof *d.choices);
    if (d.choices) {
        d.choices[0] = ae_strfmt("%.*s%s", (int)(blank - s), s, o1); // sentence[:idx] + option
        d.choices[1] = ae_strfmt("%.*s%s", (int)(blank - s), s, o2);
    }
    d.target = ae_py_strip(blank + 1, 1, 1); // sentence[idx + 1:].strip()
    if (!d.choices || !d.choices[0] || !d.choices[1] || !d.target) {
        ae_task_doc_free(&d);
        return AE_ERR_NOMEM;
    }
    return ae_split_push(r->out, &d);
}

ae_status ae_read_winogrande(const ae_task_def *def, const char *path, ae_task_split *out) {
    (void)def;
    rd r = {path, out, NULL, 0};
    return ae_jsonl_foreach(path, wino_rec, &r);
}

// ---- SciQ: {question, distractor1..3, correct_answer, support} (official .json arrays or HF
// jsonl) ----
static ae_status sciq_rec(void *ud, const cJSON *rec, int line) {
    rd *r = ud;
    ae_rec_ctx c = {r->path, line};
    const char *q, *sup, *ch[4];
    if (!(q = ae_rec_str(&c, rec, "question")) || !(sup = ae_rec_str(&c, rec, "support")) ||
        !(ch[0] = ae_rec_str(&c, rec, "distractor1")) || !(ch[1] = ae_rec_str(&c, rec, "distractor2")) ||
        !(ch[2] = ae_rec_str(&c, rec, "distractor3")) || !(ch[3] = ae_rec_str(&c, rec, "correct_answer")))
        return AE_ERR_FORMAT;
    char *ls = ae_py_strip(sup, 1, 0);
    char *text = ls ? ae_strfmt("%s\nQuestion: %s\nAnswer:", ls, q) : NULL;
    free(ls);
    return push_mc(r, line, text, ch, 4, 3);
}

ae_status ae_read_sciq(const ae_task_def *def, const char *path, ae_task_split *out) {
    (void)def;
    rd r = {path, out, NULL, 0};
    return ae_jsonl_foreach(path, sciq_rec, &r);
}
