// UTF-8 helpers: validation with the offending offset, code point iteration, lossy decoding
// with Rust's from_utf8_lossy semantics, and the character classes HF's added-token matching
// uses (Rust regex \s and \w).
#include <stdint.h>
#include <string.h>

#include <utf8proc.h>

#include "core/mem.h"
#include "tok/tok_internal.h"

ae_status ae_tok_buf_put(ae_tok_buf *b, const void *data, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = ae_realloc(b->p, cap);
        if (!p) return AE_ERR_NOMEM;
        b->p = p;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, data, n);
    b->n += n;
    b->p[b->n] = '\0';
    return AE_OK;
}

ae_status ae_tok_ids_push(ae_tok_ids *v, int32_t id) {
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 64;
        int32_t *p = ae_realloc(v->p, cap * sizeof *p);
        if (!p) return AE_ERR_NOMEM;
        v->p = p;
        v->cap = cap;
    }
    v->p[v->n++] = id;
    return AE_OK;
}

// Length of the sequence led by b (0 when b cannot start one) and the allowed range of the
// second byte (excludes overlongs, surrogates and code points above U+10FFFF).
static int lead_info(unsigned char b, unsigned char *lo, unsigned char *hi) {
    *lo = 0x80;
    *hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF) return 2;
    if (b >= 0xE0 && b <= 0xEF) {
        if (b == 0xE0) *lo = 0xA0;
        if (b == 0xED) *hi = 0x9F;
        return 3;
    }
    if (b >= 0xF0 && b <= 0xF4) {
        if (b == 0xF0) *lo = 0x90;
        if (b == 0xF4) *hi = 0x8F;
        return 4;
    }
    return 0;
}

// Examines the sequence at s: returns its length when valid (> 0); otherwise -(length of the
// maximal invalid subpart), or 0 when the bytes are a valid but truncated prefix at the end.
static int seq_check(const unsigned char *s, size_t n) {
    if (s[0] < 0x80) return 1;
    unsigned char lo, hi;
    int w = lead_info(s[0], &lo, &hi);
    if (w == 0) return -1;
    for (int k = 1; k < w; k++) {
        if ((size_t)k >= n) return 0;
        unsigned char l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
        if (s[k] < l || s[k] > h) return -k;
    }
    return w;
}

size_t ae_tok_utf8_invalid_at(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        int r = seq_check(s + i, n - i);
        if (r <= 0) return i;
        i += (size_t)r;
    }
    return (size_t)-1;
}

int ae_tok_utf8_next(const unsigned char *s, size_t n, uint32_t *cp) {
    int r = seq_check(s, n);
    if (r <= 0) { // not reached for validated input; consume one byte as a non-character
        *cp = 0xFFFFFFFFu;
        return 1;
    }
    uint32_t c = r == 1 ? s[0] : r == 2 ? s[0] & 0x1Fu : r == 3 ? s[0] & 0x0Fu : s[0] & 0x07u;
    for (int k = 1; k < r; k++) c = (c << 6) | (s[k] & 0x3Fu);
    *cp = c;
    return r;
}

int ae_tok_utf8_prev(const unsigned char *s, size_t n, uint32_t *cp) {
    size_t k = 1;
    while (k < n && k < 4 && (s[n - k] & 0xC0) == 0x80) k++;
    return ae_tok_utf8_next(s + n - k, k, cp) == (int)k ? (int)k : (*cp = 0xFFFFFFFFu, 1);
}

size_t ae_tok_utf8_lossy(const unsigned char *s, size_t n, int final, ae_tok_buf *out,
                         ae_status *st) {
    static const char repl[3] = {(char)0xEF, (char)0xBF, (char)0xBD};
    size_t i = 0, run = 0; // s[run..i) is valid and not yet copied
    *st = AE_OK;
    while (i < n) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        int r = seq_check(s + i, n - i);
        if (r > 0) {
            i += (size_t)r;
            continue;
        }
        if ((*st = ae_tok_buf_put(out, s + run, i - run)) != AE_OK) return run;
        if (r == 0 && !final) return i; // keep the truncated prefix for later
        if ((*st = ae_tok_buf_put(out, repl, 3)) != AE_OK) return i;
        i = r == 0 ? n : i + (size_t)(-r);
        run = i;
    }
    *st = ae_tok_buf_put(out, s + run, i - run);
    return i;
}

int ae_tok_is_white_space(uint32_t c) {
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}

// Rust regex's Unicode \w is Alphabetic | M | Nd | Pc | Join_Control. Alphabetic is taken as the
// letters, Nl, and the circled letters (Other_Alphabetic outside the marks); the remaining
// Other_Alphabetic code points are combining marks (M) already.
int ae_tok_is_word(uint32_t c) {
    if (c < 0x80)
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
               c == '_';
    if (c == 0x200C || c == 0x200D || (c >= 0x24B6 && c <= 0x24E9)) return 1;
    if (c > 0x10FFFF) return 0;
    switch (utf8proc_category((utf8proc_int32_t)c)) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
    case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC:
    case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_PC:
        return 1;
    default:
        return 0;
    }
}
