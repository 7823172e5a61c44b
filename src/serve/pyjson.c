// JSON rewritten as Python's json.dumps(json.loads(text), ensure_ascii=False) writes it
// (serve/pyjson.h): a recursive-descent reader that writes as it reads, except objects, whose
// members are gathered first so that a repeated key keeps its first place and its last value.
#include "serve/pyjson.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <utf8proc.h>

#include "core/sbuf.h"

#define MAX_DEPTH 1000

typedef struct {
    const char *s;
    size_t n, i;
    int depth;
    const char *err; // what is wrong at byte i (NULL: nothing)
} reader;

static int bad(reader *r, const char *what) {
    if (!r->err) r->err = what;
    return -1;
}

static void ws(reader *r) {
    while (r->i < r->n && (r->s[r->i] == ' ' || r->s[r->i] == '\t' || r->s[r->i] == '\n' ||
                           r->s[r->i] == '\r'))
        r->i++;
}

static int peek(const reader *r) { return r->i < r->n ? (unsigned char)r->s[r->i] : -1; }

static int hex4(reader *r, unsigned *out) {
    if (r->n - r->i < 4) return bad(r, "a \\u escape needs four hex digits");
    unsigned v = 0;
    for (int k = 0; k < 4; k++) {
        char c = r->s[r->i + (size_t)k];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return bad(r, "a \\u escape needs four hex digits");
        v = v * 16 + (unsigned)d;
    }
    r->i += 4;
    *out = v;
    return 0;
}

// The string at r->i (at its opening quote), its characters decoded into dec (may be NULL).
static int read_string(reader *r, ae_sbuf *dec) {
    r->i++; // '"'
    while (r->i < r->n) {
        char c = r->s[r->i];
        if (c == '"') {
            r->i++;
            return 0;
        }
        if (c != '\\') {
            size_t j = r->i;
            while (j < r->n && r->s[j] != '"' && r->s[j] != '\\') j++;
            if (dec) ae_sbuf_add(dec, r->s + r->i, j - r->i);
            r->i = j;
            continue;
        }
        if (++r->i >= r->n) break;
        char e = r->s[r->i++];
        const char *simple = strchr("\"\\/bfnrt", e);
        if (e && simple) {
            const char map[] = "\"\\/\b\f\n\r\t";
            if (dec) ae_sbuf_add(dec, &map[simple - "\"\\/bfnrt"], 1);
            continue;
        }
        if (e != 'u') return bad(r, "unknown escape in a string");
        unsigned cp;
        if (hex4(r, &cp)) return -1;
        if (cp >= 0xDC00 && cp <= 0xDFFF) return bad(r, "a lone low surrogate in a string");
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            unsigned lo;
            if (r->n - r->i < 2 || r->s[r->i] != '\\' || r->s[r->i + 1] != 'u')
                return bad(r, "a lone high surrogate in a string");
            r->i += 2;
            if (hex4(r, &lo)) return -1;
            if (lo < 0xDC00 || lo > 0xDFFF) return bad(r, "a lone high surrogate in a string");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        }
        if (dec) {
            utf8proc_uint8_t u[4];
            ae_sbuf_add(dec, (const char *)u, (size_t)utf8proc_encode_char((utf8proc_int32_t)cp, u));
        }
    }
    return bad(r, "an unterminated string");
}

// s[0, n) as a Python json string literal (ensure_ascii=False).
static void write_string(ae_sbuf *out, const char *s, size_t n) {
    static const char hexd[] = "0123456789abcdef";
    ae_sbuf_add(out, "\"", 1);
    size_t run = 0; // start of the bytes not yet written
    for (size_t k = 0; k < n; k++) {
        unsigned char c = (unsigned char)s[k];
        const char *esc = c == '"' ? "\\\"" : c == '\\' ? "\\\\" : c == '\n' ? "\\n"
                          : c == '\r' ? "\\r" : c == '\t' ? "\\t" : c == '\b' ? "\\b"
                          : c == '\f' ? "\\f" : NULL;
        if (!esc && c >= 0x20) continue;
        ae_sbuf_add(out, s + run, k - run);
        run = k + 1;
        if (esc) {
            ae_sbuf_adds(out, esc);
        } else {
            char u[6] = {'\\', 'u', '0', '0', hexd[c >> 4], hexd[c & 15]};
            ae_sbuf_add(out, u, 6);
        }
    }
    ae_sbuf_add(out, s + run, n - run);
    ae_sbuf_add(out, "\"", 1);
}

// The p-digit decimal one unit in the last digit above (dir 1) or below (dir -1) the one of
// buf ("d.ddde±X", as %.*e writes it, no sign), written back into buf in that form.
static void step_decimal(char *buf, size_t cap, int dir) {
    char dig[24];
    int k = 0, e = 0;
    const char *q = buf;
    for (; *q && *q != 'e'; q++)
        if (*q != '.') dig[k++] = *q;
    e = atoi(q + 1);
    int i = k - 1;
    for (; i >= 0; i--) { // carry or borrow
        if (dir > 0 && dig[i] == '9') dig[i] = '0';
        else if (dir < 0 && dig[i] == '0') dig[i] = '9';
        else break;
    }
    if (i < 0) { // 9.99 + 1 unit = 10.0: one digit more in front
        memmove(dig + 1, dig, (size_t)k);
        dig[0] = '1';
        e++;
    } else {
        dig[i] = (char)(dig[i] + dir);
    }
    int lead = dig[0] == '0' ? 1 : 0; // 1.00 - 1 unit = 0.99
    if (lead) e--;
    int len = 0;
    len += snprintf(buf + len, cap - (size_t)len, "%c", dig[lead]);
    if (k - lead > 1) len += snprintf(buf + len, cap - (size_t)len, ".%.*s", k - lead - 1, dig + lead + 1);
    snprintf(buf + len, cap - (size_t)len, "e%+d", e);
}

// The shortest decimal that reads back as v > 0, and of those the nearest (Python's repr,
// David Gay's mode 0), as printf's "d.ddde±X" in buf. At a power of two the doubles that round
// to v lie twice as far above it as below, so the nearest p-digit decimal can miss while the
// next one up reads back: both neighbours are tried at each length.
static void shortest(double v, char *buf, size_t cap) {
    char alt[40];
    for (int p = 1; p <= 17; p++) {
        snprintf(buf, cap, "%.*e", p - 1, v);
        if (strtod(buf, NULL) == v) return;
        for (int dir = -1; dir <= 1; dir += 2) {
            snprintf(alt, sizeof alt, "%s", buf);
            step_decimal(alt, sizeof alt, dir);
            if (strtod(alt, NULL) == v) {
                snprintf(buf, cap, "%s", alt);
                return;
            }
        }
    }
}

// Python's repr of a finite or infinite double: the shortest digits that read back as v, in
// fixed notation for decimal-point positions -4 < p <= 16 (with ".0" when integral), else
// d.ddde±XX.
static void write_double(ae_sbuf *out, double v) {
    if (isinf(v)) {
        ae_sbuf_adds(out, v < 0 ? "-Infinity" : "Infinity");
        return;
    }
    if (v == 0) {
        ae_sbuf_adds(out, signbit(v) ? "-0.0" : "0.0");
        return;
    }
    if (v < 0) ae_sbuf_add(out, "-", 1);
    char buf[40];
    shortest(fabs(v), buf, sizeof buf);
    const char *q = buf;
    char dig[24];
    int k = 0;
    for (; *q && *q != 'e'; q++)
        if (*q != '.') dig[k++] = *q;
    while (k > 1 && dig[k - 1] == '0') k--;
    int decpt = atoi(q + 1) + 1; // v = 0.d1d2... x 10^decpt
    if (decpt > -4 && decpt <= 16) {
        if (decpt <= 0) {
            ae_sbuf_adds(out, "0.");
            for (int z = 0; z < -decpt; z++) ae_sbuf_add(out, "0", 1);
            ae_sbuf_add(out, dig, (size_t)k);
        } else if (decpt >= k) {
            ae_sbuf_add(out, dig, (size_t)k);
            for (int z = k; z < decpt; z++) ae_sbuf_add(out, "0", 1);
            ae_sbuf_adds(out, ".0");
        } else {
            ae_sbuf_add(out, dig, (size_t)decpt);
            ae_sbuf_add(out, ".", 1);
            ae_sbuf_add(out, dig + decpt, (size_t)(k - decpt));
        }
        return;
    }
    ae_sbuf_add(out, dig, 1);
    if (k > 1) {
        ae_sbuf_add(out, ".", 1);
        ae_sbuf_add(out, dig + 1, (size_t)(k - 1));
    }
    snprintf(buf, sizeof buf, "e%c%02d", decpt - 1 < 0 ? '-' : '+', abs(decpt - 1));
    ae_sbuf_adds(out, buf);
}

static int is_digit(int c) { return c >= '0' && c <= '9'; }

static int read_number(reader *r, ae_sbuf *out) {
    size_t a = r->i, j = a;
    int real = 0;
    if (j < r->n && r->s[j] == '-') j++;
    if (j < r->n && r->s[j] == '0') j++;
    else if (j < r->n && is_digit(r->s[j])) while (j < r->n && is_digit(r->s[j])) j++;
    else return bad(r, "a number needs digits");
    if (j < r->n && r->s[j] == '.') {
        real = 1;
        if (++j >= r->n || !is_digit(r->s[j])) return bad(r, "a number's fraction needs digits");
        while (j < r->n && is_digit(r->s[j])) j++;
    }
    if (j < r->n && (r->s[j] == 'e' || r->s[j] == 'E')) {
        real = 1;
        if (++j < r->n && (r->s[j] == '+' || r->s[j] == '-')) j++;
        if (j >= r->n || !is_digit(r->s[j])) return bad(r, "a number's exponent needs digits");
        while (j < r->n && is_digit(r->s[j])) j++;
    }
    r->i = j;
    if (!out) return 0;
    if (!real) { // a Python int: the literal itself, -0 being 0
        if (j - a == 2 && r->s[a] == '-' && r->s[a + 1] == '0') ae_sbuf_add(out, "0", 1);
        else ae_sbuf_add(out, r->s + a, j - a);
        return 0;
    }
    char *lit = malloc(j - a + 1);
    if (!lit) {
        out->failed = 1;
        return 0;
    }
    memcpy(lit, r->s + a, j - a);
    lit[j - a] = 0;
    write_double(out, strtod(lit, NULL));
    free(lit);
    return 0;
}

static int read_value(reader *r, ae_sbuf *out);

static int read_array(reader *r, ae_sbuf *out) {
    r->i++; // '['
    if (out) ae_sbuf_add(out, "[", 1);
    ws(r);
    if (peek(r) == ']') {
        r->i++;
        if (out) ae_sbuf_add(out, "]", 1);
        return 0;
    }
    for (int first = 1;; first = 0) {
        if (out && !first) ae_sbuf_adds(out, ", ");
        if (read_value(r, out)) return -1;
        ws(r);
        int c = peek(r);
        r->i++;
        if (c == ']') break;
        if (c != ',') return r->i--, bad(r, "an array needs ',' or ']' here");
    }
    if (out) ae_sbuf_add(out, "]", 1);
    return 0;
}

typedef struct {
    ae_sbuf key, val; // key decoded; val written
} member;

static void free_members(member *m, int n) {
    for (int k = 0; k < n; k++) free(m[k].key.s), free(m[k].val.s);
    free(m);
}

static int read_object(reader *r, ae_sbuf *out) {
    r->i++; // '{'
    member *m = NULL;
    int n = 0, cap = 0, rc = -1;
    ws(r);
    if (peek(r) == '}') {
        r->i++;
        if (out) ae_sbuf_adds(out, "{}");
        return 0;
    }
    for (;;) {
        ws(r);
        if (peek(r) != '"') {
            bad(r, "an object needs a string key here");
            goto done;
        }
        member cur = {{0}, {0}};
        if (read_string(r, out ? &cur.key : NULL)) {
            free(cur.key.s);
            goto done;
        }
        ws(r);
        if (peek(r) != ':') {
            free(cur.key.s);
            bad(r, "an object needs ':' after a key");
            goto done;
        }
        r->i++;
        if (read_value(r, out ? &cur.val : NULL)) {
            free(cur.key.s), free(cur.val.s);
            goto done;
        }
        int at = -1;
        for (int k = 0; out && k < n && at < 0; k++)
            if (m[k].key.len == cur.key.len && !memcmp(m[k].key.s ? m[k].key.s : "", cur.key.s ? cur.key.s : "", cur.key.len))
                at = k;
        if (at >= 0) { // json.loads: the last value, at the first place
            free(m[at].val.s);
            m[at].val = cur.val;
            free(cur.key.s);
        } else if (out) {
            if (n == cap) {
                cap = cap ? 2 * cap : 8;
                member *g = realloc(m, sizeof *m * (size_t)cap);
                if (!g) {
                    free(cur.key.s), free(cur.val.s);
                    out->failed = 1;
                    rc = 0;
                    goto done;
                }
                m = g;
            }
            m[n++] = cur;
        }
        ws(r);
        int c = peek(r);
        r->i++;
        if (c == '}') break;
        if (c != ',') {
            r->i--;
            bad(r, "an object needs ',' or '}' here");
            goto done;
        }
    }
    if (out) {
        ae_sbuf_add(out, "{", 1);
        for (int k = 0; k < n; k++) {
            if (k) ae_sbuf_adds(out, ", ");
            write_string(out, m[k].key.s ? m[k].key.s : "", m[k].key.len);
            ae_sbuf_adds(out, ": ");
            ae_sbuf_add(out, m[k].val.s ? m[k].val.s : "", m[k].val.len);
            if (m[k].key.failed || m[k].val.failed) out->failed = 1;
        }
        ae_sbuf_add(out, "}", 1);
    }
    rc = 0;
done:
    free_members(m, n);
    return rc;
}

static int literal(reader *r, ae_sbuf *out, const char *word) {
    size_t k = strlen(word);
    if (r->n - r->i < k || memcmp(r->s + r->i, word, k)) return bad(r, "not a JSON value");
    r->i += k;
    if (out) ae_sbuf_add(out, word, k);
    return 0;
}

static int read_value(reader *r, ae_sbuf *out) {
    ws(r);
    int c = peek(r), rc;
    switch (c) {
    case '{':
    case '[':
        if (++r->depth > MAX_DEPTH) return bad(r, "nested deeper than 1000");
        rc = c == '{' ? read_object(r, out) : read_array(r, out);
        r->depth--;
        return rc;
    case '"': {
        if (!out) return read_string(r, NULL);
        ae_sbuf dec = {0};
        rc = read_string(r, &dec);
        if (!rc) write_string(out, dec.s ? dec.s : "", dec.len);
        if (dec.failed) out->failed = 1;
        free(dec.s);
        return rc;
    }
    case 't': return literal(r, out, "true");
    case 'f': return literal(r, out, "false");
    case 'n': return literal(r, out, "null");
    default:
        if (c == '-' || is_digit(c)) return read_number(r, out);
        return bad(r, c < 0 ? "the text ends where a value should be" : "not a JSON value");
    }
}

// Reads one value (written into b, or only read when b is null) and the whitespace after it.
static ae_status read_one(const char *text, size_t n, ae_sbuf *b, size_t *used) {
    reader r = {text, n, 0, 0, NULL};
    if (read_value(&r, b)) return ae_errorf(AE_ERR_FORMAT, "JSON: %s (byte %zu)", r.err, r.i);
    ws(&r);
    if (used) *used = r.i;
    return AE_OK;
}

ae_status ae_pyjson_dump(const char *text, size_t n, char **out, size_t *used) {
    ae_sbuf b = {0};
    *out = NULL;
    ae_status st = read_one(text, n, &b, used);
    if (st != AE_OK) {
        free(b.s);
        return st;
    }
    *out = ae_sbuf_take(&b);
    return *out ? AE_OK : AE_ERR_NOMEM;
}

ae_status ae_pyjson_span(const char *text, size_t n, size_t *used) {
    return read_one(text, n, NULL, used);
}

int ae_pyjson_member(const char *text, size_t n, const char *key, int last, const char **val,
                     size_t *val_n) {
    reader r = {text, n, 0, 0, NULL};
    ws(&r);
    if (peek(&r) != '{') return -1;
    r.i++;
    r.depth = 1;
    ws(&r);
    if (peek(&r) == '}') return 0;
    int found = 0;
    size_t klen = strlen(key);
    for (;;) {
        ws(&r);
        if (peek(&r) != '"') return -1;
        ae_sbuf k = {0};
        if (read_string(&r, &k)) {
            free(k.s);
            return -1;
        }
        int match = !k.failed && k.len == klen && !memcmp(k.s ? k.s : "", key, klen);
        free(k.s);
        ws(&r);
        if (peek(&r) != ':') return -1;
        r.i++;
        ws(&r);
        size_t a = r.i;
        if (read_value(&r, NULL)) return -1;
        if (match) {
            *val = text + a;
            *val_n = r.i - a;
            found = 1;
            if (!last) return 1;
        }
        ws(&r);
        int c = peek(&r);
        r.i++;
        if (c == '}') return found;
        if (c != ',') return -1;
    }
}
