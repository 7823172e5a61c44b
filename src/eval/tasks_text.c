// Text helpers of the task readers: Python str semantics lm-eval's templates rely on, its
// hellaswag preprocessing, line and JSON-record iteration with file:line messages.
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <utf8proc.h>

#include "core/file.h"
#include "core/mem.h"
#include "eval/tasks_internal.h"

char *ae_strfmt(const char *fmt, ...) {
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *s = n >= 0 ? ae_malloc((size_t)n + 1) : NULL;
    if (s) vsnprintf(s, (size_t)n + 1, fmt, ap2);
    va_end(ap2);
    return s;
}

// Decodes the code point at s (valid UTF-8 assumed, as checked when files are read); *n bytes.
static uint32_t utf8_at(const char *s, int *n) {
    utf8proc_int32_t cp;
    utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)s, -1, &cp);
    if (k <= 0) {
        *n = 1;
        return (unsigned char)s[0];
    }
    *n = (int)k;
    return (uint32_t)cp;
}

int ae_py_isspace(uint32_t c) {
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
           c == 0x202F || c == 0x205F || c == 0x3000;
}

size_t ae_py_rstrip_len(const char *s, size_t n) {
    size_t keep = 0;
    for (size_t i = 0; i < n;) {
        int k;
        uint32_t c = utf8_at(s + i, &k);
        i += (size_t)k;
        if (!ae_py_isspace(c)) keep = i;
    }
    return keep;
}

char *ae_py_strip(const char *s, int left, int right) {
    size_t n = strlen(s), a = 0;
    if (left)
        while (a < n) {
            int k;
            if (!ae_py_isspace(utf8_at(s + a, &k))) break;
            a += (size_t)k;
        }
    size_t b = right ? a + ae_py_rstrip_len(s + a, n - a) : n;
    return ae_strndup(s + a, b - a);
}

static void add_cp(ae_sbuf *b, utf8proc_int32_t cp) {
    utf8proc_uint8_t tmp[8];
    utf8proc_ssize_t k = utf8proc_encode_char(cp, tmp);
    ae_sbuf_add(b, (const char *)tmp, (size_t)k);
}

char *ae_py_capitalize(const char *s) {
    ae_sbuf b = {0};
    for (size_t i = 0; s[i];) {
        int k;
        uint32_t c = utf8_at(s + i, &k);
        add_cp(&b, i == 0 ? utf8proc_totitle((utf8proc_int32_t)c) : utf8proc_tolower((utf8proc_int32_t)c));
        i += (size_t)k;
    }
    return ae_sbuf_take(&b);
}

double ae_py_len(const char *s) {
    double n = 0;
    for (size_t i = 0; s[i];) {
        int k;
        utf8_at(s + i, &k);
        i += (size_t)k;
        n += 1;
    }
    return n;
}

// Python's str.replace(old, new) (all non-overlapping occurrences, left to right).
static char *replace_all(const char *s, const char *old, const char *rep) {
    ae_sbuf b = {0};
    size_t lo = strlen(old);
    for (const char *p = s;;) {
        const char *h = strstr(p, old);
        if (!h) {
            ae_sbuf_adds(&b, p);
            break;
        }
        ae_sbuf_add(&b, p, (size_t)(h - p));
        ae_sbuf_adds(&b, rep);
        p = h + lo;
    }
    return ae_sbuf_take(&b);
}

// re.sub("\\[.*?\\]", "", s): from each '[' the shortest run to a ']' without a newline ('.'
// does not match "\n") is removed; a '[' with no such ']' stays.
static char *drop_brackets(const char *s) {
    ae_sbuf b = {0};
    for (size_t i = 0; s[i];) {
        if (s[i] == '[') {
            size_t j = i + 1;
            while (s[j] && s[j] != ']' && s[j] != '\n') j++;
            if (s[j] == ']') {
                i = j + 1;
                continue;
            }
        }
        ae_sbuf_add(&b, s + i, 1);
        i++;
    }
    return ae_sbuf_take(&b);
}

char *ae_hellaswag_preprocess(const char *s) {
    char *a = ae_py_strip(s, 1, 1);
    char *b = a ? replace_all(a, " [title]", ". ") : NULL;
    char *c = b ? drop_brackets(b) : NULL;
    char *d = c ? replace_all(c, "  ", " ") : NULL;
    free(a);
    free(b);
    free(c);
    return d;
}

// Reads a whole text file, checked up front to be UTF-8 without NULs (so that a bad byte is
// reported with its line). *text: heap, NUL-terminated.
static ae_status read_text(const char *path, const char *expected, char **text, size_t *len) {
    AE_TRY(ae_file_check_regular("data file", path, expected));
    AE_TRY(ae_file_read_all(path, text, len));
    int line = 1;
    for (size_t i = 0; i < *len;) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)*text + i, (utf8proc_ssize_t)(*len - i), &cp);
        if (k <= 0 || cp == 0) {
            free(*text);
            *text = NULL;
            return ae_errorf(AE_ERR_FORMAT, "%s:%d: not valid UTF-8 text (byte offset %zu)", path, line, i);
        }
        if (cp == '\n') line++;
        i += (size_t)k;
    }
    return AE_OK;
}

ae_status ae_lines_foreach(const char *path, ae_line_fn fn, void *ud) {
    char *text;
    size_t len;
    AE_TRY(read_text(path, "a text file", &text, &len));
    ae_status st = AE_OK;
    int line = 0;
    for (char *p = text; st == AE_OK && p < text + len;) {
        char *nl = memchr(p, '\n', (size_t)(text + len - p));
        char *end = nl ? nl : text + len;
        if (end > p && end[-1] == '\r') end[-1] = '\0';
        *end = '\0';
        st = fn(ud, p, ++line);
        p = end + 1;
    }
    free(text);
    return st;
}

// ---- CSV (Python csv.reader, excel dialect, strict=False) ----
typedef struct {
    ae_strv f;      // fields of the record being read
    ae_sbuf cur;    // the field being read
} csv_rec;

static ae_status csv_end_field(csv_rec *r) {
    char *s = ae_sbuf_take(&r->cur);
    return s && ae_strv_push(&r->f, s) ? AE_OK : AE_ERR_NOMEM;
}


enum { CSV_START, CSV_FIELD, CSV_QUOTED, CSV_QUOTE_IN_QUOTED };

ae_status ae_csv_foreach(const char *path, ae_csv_rec_fn fn, void *ud) {
    char *text;
    size_t len;
    AE_TRY(read_text(path, "a CSV file", &text, &len));
    csv_rec r = {0};
    ae_status st = AE_OK;
    int state = CSV_START, line = 1, rec_line = 1, quote_line = 1;
    int fresh = 1; // nothing of the record read yet
    for (size_t i = 0; st == AE_OK && i <= len; i++) {
        char c = i < len ? text[i] : '\0'; // '\0': the end of the file
        int eol = c == '\n' || c == '\r' || c == '\0';
        if (fresh) rec_line = line;
        if (c == '\r' && state != CSV_QUOTED) {
            if (i + 1 < len && text[i + 1] != '\n') {
                st = ae_errorf(AE_ERR_FORMAT, "%s:%d: a carriage return without a line feed outside quotes",
                               path, line);
                break;
            }
            if (i + 1 < len) i++; // CRLF: one line end (a CR that ends the file too)
            c = '\n';
        }
        if (state == CSV_QUOTED) {
            if (c == '\0') {
                st = ae_errorf(AE_ERR_FORMAT, "%s:%d: the quoted field that starts on this line is not closed",
                               path, quote_line);
                break;
            }
            if (c == '"') state = CSV_QUOTE_IN_QUOTED;
            else ae_sbuf_add(&r.cur, &c, 1);
            if (c == '\n') line++;
            continue;
        }
        if (state == CSV_QUOTE_IN_QUOTED && c == '"') { // "" inside quotes: one quote
            ae_sbuf_add(&r.cur, &c, 1);
            state = CSV_QUOTED;
            continue;
        }
        if (eol) {
            if (!fresh) { // a blank line is no record
                st = csv_end_field(&r);
                if (st == AE_OK) st = fn(ud, r.f.v, r.f.n, rec_line);
                ae_strv_clear(&r.f);
            }
            fresh = 1;
            state = CSV_START;
            if (c == '\n') line++;
            continue;
        }
        fresh = 0;
        if (c == ',') {
            st = csv_end_field(&r);
            state = CSV_START;
        } else if (c == '"' && state == CSV_START) {
            state = CSV_QUOTED;
            quote_line = line;
        } else { // a quote inside an unquoted field, or text after a closing quote, is kept
            ae_sbuf_add(&r.cur, &c, 1);
            state = CSV_FIELD;
        }
    }
    ae_strv_free(&r.f);
    free(r.cur.s);
    free(text);
    return st;
}

typedef struct {
    const char *path;
    ae_json_rec_fn fn;
    void *ud;
} jsonl_ctx;

static int blank(const char *s) {
    for (; *s; s++)
        if (*s != ' ' && *s != '\t' && *s != '\r') return 0;
    return 1;
}

static ae_status jsonl_line(void *ud, char *line, int lineno) {
    jsonl_ctx *c = ud;
    if (blank(line)) return AE_OK;
    cJSON *rec = cJSON_Parse(line);
    if (!rec || !cJSON_IsObject(rec)) {
        cJSON_Delete(rec);
        return ae_errorf(AE_ERR_FORMAT, "%s:%d: not a JSON object (expected one record per line)",
                         c->path, lineno);
    }
    ae_status st = c->fn(c->ud, rec, lineno);
    cJSON_Delete(rec);
    return st;
}

// A file holding one JSON array of records (SciQ's official .json files).
static ae_status json_array(const char *path, ae_json_rec_fn fn, void *ud) {
    char *text;
    size_t len;
    AE_TRY(ae_file_read_all(path, &text, &len));
    const char *end = NULL;
    cJSON *arr = cJSON_ParseWithOpts(text, &end, 0);
    ae_status st = AE_OK;
    if (!arr || !cJSON_IsArray(arr)) {
        int line = 1;
        for (const char *p = text; end && p < end; p++) line += *p == '\n';
        st = ae_errorf(AE_ERR_FORMAT, "%s:%d: not valid JSON (expected an array of records)", path, line);
    }
    int idx = 0;
    for (const cJSON *r = arr ? arr->child : NULL; st == AE_OK && r; r = r->next) {
        idx++;
        if (!cJSON_IsObject(r))
            st = ae_errorf(AE_ERR_FORMAT, "%s: record %d: not a JSON object", path, idx);
        else
            st = fn(ud, r, idx);
    }
    cJSON_Delete(arr);
    free(text);
    return st;
}

ae_status ae_jsonl_foreach(const char *path, ae_json_rec_fn fn, void *ud) {
    AE_TRY(ae_file_check_regular("data file", path, "a JSON lines file"));
    FILE *f = fopen(path, "rb");
    int first = EOF;
    if (f) {
        while ((first = fgetc(f)) != EOF && (first == ' ' || first == '\n' || first == '\r' || first == '\t'))
            ;
        fclose(f);
    }
    if (first == '[') return json_array(path, fn, ud);
    jsonl_ctx c = {path, fn, ud};
    return ae_lines_foreach(path, jsonl_line, &c);
}

ae_status ae_rec_error(const ae_rec_ctx *c, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return ae_errorf(AE_ERR_FORMAT, "%s:%d: %s", c->path, c->line, msg);
}

static const cJSON *rec_get(const cJSON *rec, const char *key) {
    char part[64];
    const cJSON *o = rec;
    while (o && *key) {
        const char *dot = strchr(key, '.');
        size_t n = dot ? (size_t)(dot - key) : strlen(key);
        if (n >= sizeof part) return NULL;
        memcpy(part, key, n);
        part[n] = '\0';
        o = cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, part) : NULL;
        key += n + (dot ? 1 : 0);
    }
    return o;
}

const char *ae_rec_str(const ae_rec_ctx *c, const cJSON *rec, const char *key) {
    const cJSON *v = rec_get(rec, key);
    if (!v) {
        ae_rec_error(c, "field \"%s\" is missing", key);
        return NULL;
    }
    if (!cJSON_IsString(v)) {
        ae_rec_error(c, "field \"%s\" is not a string", key);
        return NULL;
    }
    return v->valuestring;
}

int ae_rec_str_array(const ae_rec_ctx *c, const cJSON *rec, const char *key, const char **out,
                     int max) {
    const cJSON *v = rec_get(rec, key);
    if (!v || !cJSON_IsArray(v)) {
        ae_rec_error(c, "field \"%s\" is %s", key, v ? "not an array" : "missing");
        return -1;
    }
    int n = 0;
    for (const cJSON *e = v->child; e; e = e->next) {
        if (!cJSON_IsString(e)) {
            ae_rec_error(c, "field \"%s\": element %d is not a string", key, n);
            return -1;
        }
        if (n == max) {
            ae_rec_error(c, "field \"%s\" has more than %d elements", key, max);
            return -1;
        }
        out[n++] = e->valuestring;
    }
    if (n == 0) {
        ae_rec_error(c, "field \"%s\" is empty", key);
        return -1;
    }
    return n;
}

ae_status ae_split_push(ae_task_split *s, ae_task_doc *d) {
    if (s->n == 0 || (s->n >= 16 && (s->n & (s->n - 1)) == 0)) { // capacity 16, 32, 64, ...
        size_t cap = s->n ? (size_t)s->n * 2 : 16;
        ae_task_doc *p = ae_realloc(s->docs, cap * sizeof *p);
        if (!p) {
            ae_task_doc_free(d);
            return AE_ERR_NOMEM;
        }
        s->docs = p;
    }
    s->docs[s->n++] = *d;
    return AE_OK;
}

void ae_task_doc_free(ae_task_doc *d) {
    free(d->text);
    free(d->target);
    for (int i = 0; i < d->n_choices; i++) free(d->choices[i]);
    free(d->choices);
    memset(d, 0, sizeof *d);
}
