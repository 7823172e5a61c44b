#define _POSIX_C_SOURCE 200809L
#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>

static ae_log_level g_level = AE_LOG_INFO;

void ae_log_set_level(ae_log_level lvl) { g_level = lvl; }
ae_log_level ae_log_get_level(void) { return g_level; }

static void vlog(ae_log_level lvl, const char *fmt, va_list ap) {
    if (g_level < lvl) return;
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

void ae_log_info(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vlog(AE_LOG_INFO, fmt, ap);
    va_end(ap);
}

void ae_log_debug(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vlog(AE_LOG_DEBUG, fmt, ap);
    va_end(ap);
}

double ae_time_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
