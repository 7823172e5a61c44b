// Normalizer: NFC (utf8proc) or none. utf8proc runs only on the regions that might change:
// a character below U+0300 (lead byte < 0xCC) never decomposes or combines with what precedes
// it, and an ASCII character is a starter nothing before it can combine with, so NFC(A B) =
// NFC(A) NFC(B) whenever B starts with ASCII. Each region is therefore "the ASCII character
// before a byte >= 0xCC, up to the next ASCII character". Code points that HF's (older) Unicode
// tables do not know are kept as they are (tok/unicode_compat.c).
#include <stdlib.h>
#include <string.h>

#include <utf8proc.h>

#include "core/mem.h"
#include "tok/tok_internal.h"

static ae_status nfc_run(const char *s, size_t n, ae_tok_buf *out) {
    if (n == 0) return AE_OK;
    utf8proc_uint8_t *dst = NULL;
    utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &dst,
                                      UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    if (r < 0) {
        free(dst);
        if (r == UTF8PROC_ERROR_NOMEM) return ae_errorf(AE_ERR_NOMEM, "NFC: out of memory");
        return ae_errorf(AE_ERR_ARG, "NFC normalization failed: %s", utf8proc_errmsg(r));
    }
    ae_status st = ae_tok_buf_put(out, dst, (size_t)r);
    free(dst);
    return st;
}

// NFC of one region, leaving the code points HF's older tables do not know as they are (they
// are starters that compose with nothing there, so NFC works on each side separately).
static ae_status nfc_region(const char *s, size_t n, ae_tok_buf *out) {
    size_t run = 0, i = 0;
    while (i < n) {
        uint32_t cp;
        int k = ae_tok_utf8_next((const unsigned char *)s + i, n - i, &cp);
        if (cp >= 0x7FD && ae_tok_nfc_opaque(cp)) {
            AE_TRY(nfc_run(s + run, i - run, out));
            AE_TRY(ae_tok_buf_put(out, s + i, (size_t)k));
            run = i + (size_t)k;
        }
        i += (size_t)k;
    }
    return nfc_run(s + run, n - run, out);
}

ae_status ae_tok_normalize(const ae_tokenizer *t, const char *s, size_t n, char **out,
                           size_t *out_len) {
    *out = (char *)s;
    *out_len = n;
    if (!t->nfc || n == 0) return AE_OK;
    if (n > (size_t)PTRDIFF_MAX / 8) return ae_errorf(AE_ERR_ARG, "text too long to normalize");
    const unsigned char *u = (const unsigned char *)s;
    ae_tok_buf b = {0};
    ae_status st = AE_OK;
    size_t copied = 0, i = 0;
    for (;;) {
        while (i < n && u[i] < 0xCC) i++;
        if (i == n) break;
        size_t start = i, end = i;
        while (start > copied && u[start - 1] >= 0x80) start--;
        if (start > copied) start--; // the ASCII character that may be the base
        while (end < n && u[end] >= 0x80) end++;
        if ((st = ae_tok_buf_put(&b, s + copied, start - copied)) != AE_OK ||
            (st = nfc_region(s + start, end - start, &b)) != AE_OK) {
            free(b.p);
            return st;
        }
        copied = i = end;
    }
    if (!b.p) return AE_OK; // nothing could change
    if ((st = ae_tok_buf_put(&b, s + copied, n - copied)) != AE_OK) {
        free(b.p);
        return st;
    }
    if (b.n == n && memcmp(b.p, s, n) == 0) {
        free(b.p);
        return AE_OK;
    }
    *out = b.p;
    *out_len = b.n;
    return AE_OK;
}
