// A progress line on stderr for long work (data preparation, evaluation). On a terminal one
// line, rewritten in place at most every 0.5 s; elsewhere (a log file, a pipe) a whole line at
// most every 10 s, so a log stays one readable line per report. The end's line is written when
// an earlier line was, or always when the caller asks for it (a summary: items/s of a task);
// otherwise work done within the first interval shows nothing.
//   ae_progress p;
//   ae_progress_start(&p, 1);
//   ... if (ae_progress_due(&p, 0)) ae_progress_line(&p, 0, "x: %d done", n);
//   ... if (ae_progress_due(&p, 1)) ae_progress_line(&p, 1, "x: %d done", n);   // the end
#ifndef AE_CORE_PROGRESS_H
#define AE_CORE_PROGRESS_H

#include <stdio.h>

typedef struct {
    FILE *out;       // stderr (tests may point it elsewhere)
    int tty;         // out is a terminal: lines rewritten in place
    double t0, last; // the start; the last line written (t0 before any)
    int shown;       // a line was written
    int end_always;  // the final line is written even when none was before
} ae_progress;

// Starts the clock, writing to stderr; end_always: as above.
void ae_progress_start(ae_progress *p, int end_always);
// Whether a line is due now: final, when an earlier line was written (its end closes it) or
// end_always; otherwise when the interval (0.5 s on a terminal, else 10 s) has passed since the
// last line.
int ae_progress_due(const ae_progress *p, int final);
// Writes the line (printf format, no newline of its own): "\r" + line + erase-to-end-of-line on a
// terminal (a newline after the final one), line + newline elsewhere.
void ae_progress_line(ae_progress *p, int final, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
// Seconds since ae_progress_start.
double ae_progress_elapsed(const ae_progress *p);

#endif
