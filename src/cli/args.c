#include "cli/args.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"

int ae_args_flag(ae_args *a, const char *name) {
    if (a->i < a->argc && strcmp(a->argv[a->i], name) == 0) {
        a->i++;
        return 1;
    }
    return 0;
}

int ae_args_value(ae_args *a, const char *name, const char **val) {
    if (a->i >= a->argc || strcmp(a->argv[a->i], name) != 0) return 0;
    if (a->i + 1 >= a->argc) {
        ae_errorf(AE_ERR_ARG, "option %s needs a value", name);
        return -1;
    }
    *val = a->argv[a->i + 1];
    a->i += 2;
    return 1;
}

ae_status ae_parse_int(const char *s, const char *opt, long lo, long hi, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || errno == ERANGE || isspace((unsigned char)*s))
        return ae_errorf(AE_ERR_ARG, "%s: '%s' is not an integer", opt, s);
    if (v < lo || v > hi)
        return ae_errorf(AE_ERR_ARG, "%s: %ld is out of range [%ld, %ld]", opt, v, lo, hi);
    *out = (int)v;
    return AE_OK;
}

ae_status ae_parse_u64(const char *s, const char *opt, uint64_t *out) {
    char *end;
    errno = 0;
    if (*s == '-' || *s == '\0') return ae_errorf(AE_ERR_ARG, "%s: '%s' is not a non-negative integer", opt, s);
    unsigned long long v = strtoull(s, &end, 10);
    if (*end != '\0' || errno == ERANGE)
        return ae_errorf(AE_ERR_ARG, "%s: '%s' is not a non-negative integer", opt, s);
    *out = v;
    return AE_OK;
}

ae_status ae_parse_float(const char *s, const char *opt, float *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (*s == '\0' || *end != '\0' || errno == ERANGE || !isfinite(v))
        return ae_errorf(AE_ERR_ARG, "%s: '%s' is not a finite number", opt, s);
    *out = (float)v;
    return AE_OK;
}

ae_status ae_parse_ids(const char *s, const char *what, int vocab, int32_t **ids, int *n) {
    size_t cap = 16;
    int cnt = 0;
    int32_t *v = ae_malloc(cap * sizeof *v);
    if (!v) return AE_ERR_NOMEM;
    const char *p = s;
    for (;;) {
        while (*p == ' ' || *p == ',' || *p == '\t' || *p == '\n' || *p == '\r') p++;
        if (*p == '\0') break;
        char *end;
        errno = 0;
        long x = strtol(p, &end, 10);
        if (end == p || errno == ERANGE || (*end && !strchr(" ,\t\r\n", *end))) {
            free(v);
            return ae_errorf(AE_ERR_ARG, "%s: '%.20s' is not a token id", what, p);
        }
        if (x < 0 || x >= vocab) {
            free(v);
            return ae_errorf(AE_ERR_ARG, "%s: token id %ld is out of range [0, %d)", what, x,
                             vocab);
        }
        if ((size_t)cnt == cap) {
            int32_t *nv = ae_realloc(v, (cap *= 2) * sizeof *v);
            if (!nv) {
                free(v);
                return AE_ERR_NOMEM;
            }
            v = nv;
        }
        v[cnt++] = (int32_t)x;
        p = end;
    }
    *ids = v;
    *n = cnt;
    return AE_OK;
}

ae_status ae_args_unknown(const ae_args *a) {
    return ae_errorf(AE_ERR_ARG, "unknown or misplaced argument '%s' (see attnedit %s --help)",
                     a->argv[a->i], a->cmd);
}

ae_status ae_check_utf8(const char *s, size_t len, const char *origin) {
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        unsigned c = p[i];
        size_t n;
        unsigned lo = 0x80, hi = 0xbf; // allowed range of the second byte
        if (c < 0x80) n = 1;
        else if (c >= 0xc2 && c <= 0xdf) n = 2;
        else if (c >= 0xe0 && c <= 0xef) {
            n = 3;
            if (c == 0xe0) lo = 0xa0;      // no overlongs
            else if (c == 0xed) hi = 0x9f; // no surrogates
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 4;
            if (c == 0xf0) lo = 0x90;
            else if (c == 0xf4) hi = 0x8f; // <= U+10FFFF
        } else n = 0;
        int ok = n > 0 && i + n <= len;
        for (size_t k = 1; ok && k < n; k++) {
            unsigned b = p[i + k];
            ok = k == 1 ? (b >= lo && b <= hi) : (b >= 0x80 && b <= 0xbf);
        }
        if (!ok)
            return ae_errorf(AE_ERR_ARG, "%s: not valid UTF-8 (byte offset %zu, byte 0x%02X)",
                             origin, i, c);
        i += n;
    }
    return AE_OK;
}

ae_status ae_parse_int_list(const char *s, const char *opt, int lo, int hi, int **vals, int *n) {
    int cap = 8, cnt = 0;
    int *v = ae_malloc(sizeof(int) * (size_t)cap);
    if (!v) return AE_ERR_NOMEM;
    const char *p = s;
    while (*p) {
        char *end;
        errno = 0;
        long x = strtol(p, &end, 10);
        if (end == p || errno == ERANGE || (*end && *end != ',')) {
            free(v);
            return ae_errorf(AE_ERR_ARG, "%s: '%s' is not a comma-separated list of integers", opt, s);
        }
        if (x < lo || x > hi) {
            free(v);
            return ae_errorf(AE_ERR_ARG, "%s: %ld is out of range [%d, %d]", opt, x, lo, hi);
        }
        if (cnt == cap) {
            int *nv = ae_realloc(v, sizeof(int) * (size_t)(cap *= 2));
            if (!nv) {
                free(v);
                return AE_ERR_NOMEM;
            }
            v = nv;
        }
        v[cnt++] = (int)x;
        p = *end ? end + 1 : end;
    }
    if (cnt == 0) {
        free(v);
        return ae_errorf(AE_ERR_ARG, "%s: empty list", opt);
    }
    *vals = v;
    *n = cnt;
    return AE_OK;
}
