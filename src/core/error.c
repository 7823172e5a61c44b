#include "core/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define AE_ERR_CAP 1024
static _Thread_local char g_msg[AE_ERR_CAP];

ae_status ae_errorf(ae_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_msg, sizeof g_msg, fmt, ap);
    va_end(ap);
    return st;
}

ae_status ae_error_wrap(ae_status st, const char *fmt, ...) {
    char prefix[512];
    char old[AE_ERR_CAP];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, g_msg, sizeof old);
    snprintf(g_msg, sizeof g_msg, "%.500s: %.500s", prefix, old);
    return st;
}

const char *ae_last_error(void) { return g_msg[0] ? g_msg : "unknown error"; }

void ae_error_clear(void) { g_msg[0] = '\0'; }

const char *ae_status_name(ae_status st) {
    switch (st) {
    case AE_OK: return "ok";
    case AE_ERR_IO: return "i/o error";
    case AE_ERR_FORMAT: return "format error";
    case AE_ERR_UNSUPPORTED: return "unsupported";
    case AE_ERR_ARG: return "invalid argument";
    case AE_ERR_NOMEM: return "out of memory";
    case AE_ERR_DEVICE: return "device error";
    case AE_ERR_NONFINITE: return "non-finite value";
    }
    return "error";
}
