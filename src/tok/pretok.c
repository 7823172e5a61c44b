// Pre-tokenizer: the Split regex (Isolated) and ByteLevel steps, compiled with PCRE2
// (PCRE2_UTF | PCRE2_UCP). HF runs these patterns with Oniguruma, whose \s is the Unicode
// White_Space property; PCRE2's UCP \s is instead "separator (Z) or \t\n\v\f\r" (it misses
// U+0085 and, in 10.42, takes U+180E). The pattern is therefore rewritten with \s / \S spelled
// out as explicit classes, and \p{L} / \p{N} extended to Oniguruma's newer Unicode version
// (tok/unicode_compat.c).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "core/mem.h"
#include "tok/tok_internal.h"

// Unicode White_Space, as Oniguruma's \s.
#define WS_CLASS                                                                                   \
    "\\t\\n\\x0B\\f\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}"               \
    "\\x{202F}\\x{205F}\\x{3000}"

static ae_status rewrite_pattern(const char *pat, ae_tok_buf *out, const char *path,
                                 const char *field) {
    int in_class = 0;
    size_t n = strlen(pat);
    for (size_t i = 0; i < n; i++) {
        char c = pat[i];
        if (c == '\\' && i + 1 < n) {
            char e = pat[i + 1];
            if (e == 's' || e == 'S') {
                if (in_class && e == 'S')
                    return ae_errorf(
                        AE_ERR_UNSUPPORTED,
                        "%s: field '%s': \\S inside a character class is not supported", path,
                        field);
                const char *rep = in_class   ? WS_CLASS
                                  : e == 's' ? "[" WS_CLASS "]"
                                             : "[^" WS_CLASS "]";
                AE_TRY(ae_tok_buf_put(out, rep, strlen(rep)));
            } else if ((e == 'p' || e == 'P') && i + 2 < n &&
                       (pat[i + 2] == 'L' || pat[i + 2] == 'N' ||
                        (pat[i + 2] == '{' && i + 4 < n &&
                         (pat[i + 3] == 'L' || pat[i + 3] == 'N') && pat[i + 4] == '}'))) {
                int braced = pat[i + 2] == '{';
                char cls = braced ? pat[i + 3] : pat[i + 2];
                if (in_class && e == 'P')
                    return ae_errorf(AE_ERR_UNSUPPORTED,
                                     "%s: field '%s': \\P{%c} inside a character class is not "
                                     "supported",
                                     path, field, cls);
                char base[8];
                snprintf(base, sizeof base, "\\p{%c}", cls);
                const char *extra = ae_tok_class_extra(cls);
                if (!in_class) AE_TRY(ae_tok_buf_put(out, e == 'P' ? "[^" : "[", e == 'P' ? 2 : 1));
                AE_TRY(ae_tok_buf_put(out, base, strlen(base)));
                AE_TRY(ae_tok_buf_put(out, extra, strlen(extra)));
                if (!in_class) AE_TRY(ae_tok_buf_put(out, "]", 1));
                i += braced ? 3 : 1;
            } else if (e == 'Q') {
                return ae_errorf(AE_ERR_UNSUPPORTED, "%s: field '%s': \\Q...\\E is not supported",
                                 path, field);
            } else {
                AE_TRY(ae_tok_buf_put(out, pat + i, 2));
            }
            i++;
            continue;
        }
        if (!in_class && c == '[') {
            in_class = 1;
            AE_TRY(ae_tok_buf_put(out, "[", 1));
            if (i + 1 < n && pat[i + 1] == '^') AE_TRY(ae_tok_buf_put(out, pat + ++i, 1));
            if (i + 1 < n && pat[i + 1] == ']') AE_TRY(ae_tok_buf_put(out, pat + ++i, 1));
            continue;
        }
        if (in_class && c == '[' && i + 1 < n && pat[i + 1] == ':')
            return ae_errorf(AE_ERR_UNSUPPORTED,
                             "%s: field '%s': POSIX classes ([:name:]) are not supported", path,
                             field);
        if (in_class && c == ']') in_class = 0;
        AE_TRY(ae_tok_buf_put(out, &c, 1));
    }
    if (in_class)
        return ae_errorf(AE_ERR_FORMAT, "%s: field '%s': unterminated character class", path,
                         field);
    return AE_OK;
}

ae_status ae_tok_regex_compile(const char *pattern, int literal, pcre2_code **out, const char *path,
                               const char *field) {
    ae_tok_buf b = {0};
    ae_status st = literal ? ae_tok_buf_put(&b, pattern, strlen(pattern))
                           : rewrite_pattern(pattern, &b, path, field);
    if (st != AE_OK) {
        free(b.p);
        return st;
    }
    int err;
    PCRE2_SIZE off;
    // PCRE2 refuses UCP with LITERAL (it only changes what \d, \w and classes match anyway)
    uint32_t opts = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP);
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)b.p, b.n, opts, &err, &off, NULL);
    free(b.p);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        return ae_errorf(AE_ERR_UNSUPPORTED, "%s: field '%s': cannot compile regex /%s/: %s", path,
                         field, pattern, (const char *)msg);
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); // optional speed-up; the interpreter is the fallback
    *out = re;
    return AE_OK;
}

void ae_tok_regex_free(pcre2_code *re) {
    pcre2_code_free(re);
}

typedef struct {
    const ae_tokenizer *t;
    pcre2_match_data *md;
    ae_tok_bpe_cache *cache;
    ae_tok_ids *ids;
} pretok_ctx;

static ae_status run_step(pretok_ctx *c, int step, const char *s, size_t n);

// Calls run_step(step + 1) on every match of re in s and on every gap between matches
// (SplitDelimiterBehavior::Isolated). Empty pieces are dropped, as HF does.
static ae_status split_isolated(pretok_ctx *c, pcre2_code *re, int step, const char *s, size_t n) {
    size_t prev = 0, pos = 0;
    while (pos <= n) {
        int rc = pcre2_match(re, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK, c->md, NULL);
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
            rc = pcre2_match(re, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, c->md,
                             NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return ae_errorf(AE_ERR_UNSUPPORTED, "pre-tokenizer regex failed at byte %zu: %s", pos,
                             (const char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(c->md);
        size_t ms = ov[0], me = ov[1];
        if (me == ms) { // empty match: skip one character, like Oniguruma's find_iter
            if (ms >= n) break;
            uint32_t cp;
            pos = ms + (size_t)ae_tok_utf8_next((const unsigned char *)s + ms, n - ms, &cp);
            continue;
        }
        if (ms > prev) AE_TRY(run_step(c, step + 1, s + prev, ms - prev));
        AE_TRY(run_step(c, step + 1, s + ms, me - ms));
        prev = pos = me;
    }
    if (prev < n) AE_TRY(run_step(c, step + 1, s + prev, n - prev));
    return AE_OK;
}

static ae_status run_step(pretok_ctx *c, int step, const char *s, size_t n) {
    if (n == 0) return AE_OK;
    if (step == c->t->n_pretok) // all steps done: the piece's bytes go to BPE
        return ae_tok_bpe_word(c->t, (const unsigned char *)s, n, c->cache, c->ids);
    const ae_tok_pretok *p = &c->t->pretok[step];
    if (p->kind == AE_PRETOK_BYTELEVEL && p->add_prefix_space && s[0] != ' ') {
        char *tmp = ae_malloc(n + 1);
        if (!tmp) return AE_ERR_NOMEM;
        tmp[0] = ' ';
        memcpy(tmp + 1, s, n);
        ae_status st =
            p->re ? split_isolated(c, p->re, step, tmp, n + 1) : run_step(c, step + 1, tmp, n + 1);
        free(tmp);
        return st;
    }
    if (p->re) return split_isolated(c, p->re, step, s, n);
    return run_step(c, step + 1, s, n);
}

ae_status ae_tok_pretok_encode(const ae_tokenizer *t, const char *s, size_t n,
                               ae_tok_bpe_cache *cache, ae_tok_ids *ids) {
    pretok_ctx c = {t, NULL, cache, ids};
    for (int i = 0; i < t->n_pretok && !c.md; i++)
        if (t->pretok[i].re) {
            c.md = pcre2_match_data_create(4, NULL);
            if (!c.md) return ae_errorf(AE_ERR_NOMEM, "out of memory (regex match data)");
        }
    ae_status st = run_step(&c, 0, s, n);
    pcre2_match_data_free(c.md);
    return st;
}
