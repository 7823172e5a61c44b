// ATTNEDIT_MEM_LIMIT: parsing and the refusal message (backend/mem_limit.h).
#include "backend/mem_limit.h"

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Thread_local char g_refusal[512];

// The multiplier of a size suffix ("", K, M, G, each optionally followed by B or iB), 0 if
// unknown.
static double suffix_scale(const char *s) {
    double scale = 1.0;
    switch (toupper((unsigned char)*s)) {
    case 'K': scale = 1024.0, s++; break;
    case 'M': scale = 1048576.0, s++; break;
    case 'G': scale = 1073741824.0, s++; break;
    default: break;
    }
    if (scale > 1.0 && (*s == 'i' || *s == 'I') && toupper((unsigned char)s[1]) == 'B') s += 2;
    else if (toupper((unsigned char)*s) == 'B') s++;
    return *s == '\0' ? scale : 0.0;
}

ae_status ae_mem_limit_parse(const char *what, const char *text, size_t *bytes) {
    const char *p = text;
    int digits = 0;
    while (isdigit((unsigned char)*p)) p++, digits++;
    if (*p == '.')
        for (p++; isdigit((unsigned char)*p); p++) digits++;
    double scale = digits ? suffix_scale(p) : 0.0;
    double v = scale > 0.0 ? strtod(text, NULL) * scale : 0.0; // the digits parsed above
    if (!(scale > 0.0))
        return ae_errorf(AE_ERR_ARG, "%s '%.40s' is not a memory size: give bytes, or a number "
                         "with K, M or G (powers of 1024), e.g. %s=512M", what, text, what);
    if (!(v >= 1.0) || v >= (double)SIZE_MAX)
        return ae_errorf(AE_ERR_ARG, "%s '%.40s' is %s; the limit must be at least 1 byte and "
                         "below 2^64 (unset the variable for no limit)", what, text,
                         v < 1.0 ? "less than one byte" : "too large");
    *bytes = (size_t)v;
    return AE_OK;
}

ae_status ae_mem_limit_from_env(size_t *bytes) {
    const char *v = getenv(AE_MEM_LIMIT_ENV);
    *bytes = 0;
    if (!v || !*v) return AE_OK;
    return ae_mem_limit_parse(AE_MEM_LIMIT_ENV, v, bytes);
}

ae_status ae_mem_limit_refuse(const char *backend, size_t bytes, size_t in_use, size_t limit) {
    ae_errorf(AE_ERR_NOMEM, "%s: out of memory allocating %.2f MiB: %.2f MiB of the "
              AE_MEM_LIMIT_ENV " of %.2f MiB (%zu bytes) in use", backend, bytes / 1048576.0,
              in_use / 1048576.0, limit / 1048576.0, limit);
    ae_mem_note_refusal();
    return AE_ERR_NOMEM;
}

void ae_mem_note_refusal(void) { snprintf(g_refusal, sizeof g_refusal, "%s", ae_last_error()); }

const char *ae_mem_last_refusal(void) { return g_refusal; }

void ae_mem_clear_refusal(void) { g_refusal[0] = '\0'; }
