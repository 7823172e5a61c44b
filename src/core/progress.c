// Progress lines on stderr (core/progress.h).
#include "core/progress.h"

#include <stdarg.h>
#include <unistd.h>

#include "core/log.h"

enum { TTY_INTERVAL_MS = 500, LOG_INTERVAL_MS = 10000 };

void ae_progress_start(ae_progress *p, int end_always) {
    p->out = stderr;
    p->end_always = end_always;
    p->tty = isatty(fileno(stderr));
    p->t0 = p->last = ae_time_now();
    p->shown = 0;
}

int ae_progress_due(const ae_progress *p, int final) {
    if (final) return p->shown || p->end_always;
    double interval = (p->tty ? TTY_INTERVAL_MS : LOG_INTERVAL_MS) / 1000.0;
    return ae_time_now() - p->last >= interval;
}

void ae_progress_line(ae_progress *p, int final, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (p->tty) fputc('\r', p->out);
    vfprintf(p->out, fmt, ap);
    va_end(ap);
    if (p->tty) fputs("\033[K", p->out); // the rest of a longer earlier line cleared
    if (!p->tty || final) fputc('\n', p->out);
    fflush(p->out);
    p->last = ae_time_now();
    p->shown = 1;
}

double ae_progress_elapsed(const ae_progress *p) { return ae_time_now() - p->t0; }
